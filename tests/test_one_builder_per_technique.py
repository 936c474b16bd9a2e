"""One implementation per technique: the notebooks and the command line build their trainer arguments and
trainers through unsloth_course.trainers, never by hand."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILT_BY_HAND = {"SFTConfig", "DPOConfig", "GRPOConfig", "UnslothTrainingArguments", "TrainingArguments",
                 "SFTTrainer", "DPOTrainer", "GRPOTrainer", "UnslothTrainer", "Trainer"}
USERS = sorted(ROOT.glob("notebooks/colab*.py")) + sorted((ROOT / "unsloth_course" / "cli").glob("*.py"))


def called_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


@pytest.mark.parametrize("path", USERS, ids=lambda p: p.name)
def test_no_trainer_or_config_is_built_outside_the_builders(path):
    by_hand = called_names(path) & BUILT_BY_HAND
    assert not by_hand, f"{path.relative_to(ROOT)} builds {sorted(by_hand)} itself: use unsloth_course.trainers"


def test_the_check_sees_a_hand_built_config(tmp_path):
    source = tmp_path / "nb.py"
    source.write_text("from trl import SFTConfig\nconfig = SFTConfig(output_dir='x')\n")
    assert called_names(source) & BUILT_BY_HAND == {"SFTConfig"}


@pytest.mark.parametrize("technique, builder", [("full", "sft_trainer"), ("lora", "sft_trainer"),
                                                ("dpo", "dpo_trainer"), ("grpo", "grpo_trainer"),
                                                ("cpt", "cpt_trainer")])
def test_each_notebook_calls_its_technique_builder(technique, builder):
    number = {"full": 1, "lora": 2, "dpo": 3, "grpo": 4, "cpt": 5}[technique]
    notebook = next(ROOT.glob(f"notebooks/colab{number}_*.py"))
    assert builder in called_names(notebook)
