"""README.md: generated blocks are current, badges derive from pyproject, CI runs the README's commands."""

import json
import re
import sys
from pathlib import Path

import pytest

from tools import update_readme as readme
from unsloth_course.recipes import get_recipe

ROOT = Path(__file__).resolve().parent.parent


def _first_bash_block() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_ci_runs_exactly_the_readme_commands():
    commands = _first_bash_block()
    assert commands[0] == "bash setup_venv.sh" and len(commands) == 3
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci_lines, f"README command {command!r} is not run by .ci/run"


def test_badges_derive_from_the_configured_repository(monkeypatch):
    url, branch = readme.repository()
    table = readme.notebooks_table()
    assert table.count("colab.research.google.com/github/") == len(readme.NOTEBOOKS)
    assert f"/{url.removeprefix('https://github.com/')}/blob/{branch}/notebooks/" in table
    monkeypatch.setattr(readme, "repository", lambda: ("https://github.com/someone/fork", "dev"))
    assert "github/someone/fork/blob/dev/notebooks/colab1_full_finetuning_smollm2.ipynb" in readme.notebooks_table()


def test_every_notebook_in_the_table_exists():
    for name, *_ in readme.NOTEBOOKS:
        assert (ROOT / "notebooks" / f"{name}.py").is_file(), name


@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="the CPT example row comes from this Python's standard library (README built on 3.11)")
def test_readme_generated_blocks_are_current():
    current = (ROOT / "README.md").read_text()
    assert readme.render(current) == current, "run `python -m tools.update_readme`"


def test_render_rejects_a_readme_without_blocks():
    with pytest.raises(ValueError, match="notebooks:start"):
        readme.render("# no blocks here\n")


def test_results_matrix_reads_run_records(tmp_path):
    (tmp_path / "lora.json").write_text(
        '{"profile": "full", "backend": {"device_name": "NVIDIA H100"}, "trainable_params": 4884480, '
        '"trainable_pct": 3.5, "memory_peak_gb": 1.5, "memory_device": "cuda", "runtime_s": 42.0, '
        '"tokens_per_s": 12345.6, "first_loss": 2.0, "last_loss": 1.2}')
    table = readme.results_matrix(tmp_path)
    assert "| LoRA | full | NVIDIA H100 | 4,884,480 (3.5%) | 1.50 GB (cuda) | 42 s | 12,346 | 2.000 → 1.200 |" in table
    assert "| full fine-tuning | no run record yet" in table
    assert readme.results_matrix(tmp_path / "missing").startswith("_No run records")
    (tmp_path / "cpu").mkdir()  # CPU quick-mode records fill the gaps, and GPU records win
    cpu = ('{"profile": "quick", "backend": {"device_name": "x86_64, 2 cores"}, "trainable_params": 1, '
           '"trainable_pct": 0.1, "memory_peak_gb": 2.0, "memory_device": "cpu", "runtime_s": 9.0, '
           '"tokens_per_s": 50.0, "first_loss": 1.0, "last_loss": 0.9}')
    (tmp_path / "cpu" / "full.json").write_text(cpu)
    (tmp_path / "cpu" / "lora.json").write_text(cpu)
    table = readme.results_matrix(tmp_path)
    assert "| full fine-tuning | quick | x86_64, 2 cores |" in table and "| LoRA | full | NVIDIA H100 |" in table


def test_bench_matrix_shows_measured_rows_only(tmp_path):
    assert readme.bench_matrix(tmp_path) == "No bench record yet."
    (tmp_path / "bench-dpo.json").write_text(json.dumps({"technique": "dpo", "gpu": "H100", "profile": "throughput",
                                                         "overrides": ["per_device_train_batch_size=64"], "results": {
        "unsloth": {"tokens_per_s": 90000.0}, "plain": {"error": "CUDA out of memory"}}}))
    (tmp_path / "bench-grpo.json").write_text(json.dumps({"technique": "grpo", "gpu": "H100", "profile": "throughput",
                                                          "results": {
        "unsloth": {"tokens_per_s": 3000.0, "generated_tokens_per_step_s": 200.0},
        "plain": {"tokens_per_s": 1500.0, "generated_tokens_per_step_s": 400.0}}}))
    table = readme.bench_matrix(tmp_path)
    assert "| dpo | 64 | H100 | 90,000 | CUDA out of memory | - | met |" in table  # the changed micro-batch
    grpo_batch = get_recipe("grpo", "throughput").per_device_train_batch_size  # the profile's
    assert f"| grpo generated | {grpo_batch} | H100 | 200 | 400 | 0.50x | missed (2% of 10,000) |" in table
    assert "| full |" not in table  # no record, no row
