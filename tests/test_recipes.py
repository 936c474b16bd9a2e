"""unsloth_course.recipes: every technique x profile builds, and invalid values are refused with the reason."""

import dataclasses

import pytest

from unsloth_course.recipes import (
    PROFILES,
    TECHNIQUES,
    CPTRecipe,
    DPORecipe,
    GRPORecipe,
    SFTRecipe,
    get_recipe,
    parse_overrides,
    quick_mode,
)

CLASSES = {"full": SFTRecipe, "lora": SFTRecipe, "dpo": DPORecipe, "grpo": GRPORecipe, "cpt": CPTRecipe}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_every_technique_and_profile_builds(technique, profile):
    recipe = get_recipe(technique, profile)
    assert type(recipe) is CLASSES[technique]
    assert (recipe.technique, recipe.profile) == (technique, profile)
    assert recipe.effective_batch_size == recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps
    assert dataclasses.replace(recipe) == recipe
    assert recipe.to_dict()["technique"] == technique
    if profile == "quick":
        assert recipe.max_steps <= 10 and recipe.max_seq_length <= 256 and recipe.n_train_rows <= 64
    if technique == "cpt":
        assert {"embed_tokens", "lm_head"} <= set(recipe.target_modules)
        assert recipe.embedding_learning_rate < recipe.learning_rate
    if technique == "grpo":
        assert recipe.effective_batch_size % recipe.num_generations == 0
    if profile == "throughput":  # the big-GPU speed settings the bench measures
        assert not recipe.gradient_checkpointing and recipe.optim == "adamw_torch_fused"
        assert recipe.gradient_accumulation_steps == 1
        if technique in ("full", "lora", "cpt"):
            assert recipe.packing and recipe.max_seq_length == 2048


@pytest.mark.parametrize(("value", "expected"), [("1", "quick"), ("true", "quick"), (" ON ", "quick"),
                                                   ("0", "full"), ("", "full"), (None, "full")])
def test_quick_mode_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("UNSLOTH_COURSE_QUICK", raising=False)
    else:
        monkeypatch.setenv("UNSLOTH_COURSE_QUICK", value)
    assert quick_mode() is (expected == "quick")
    assert get_recipe("lora").profile == expected
    assert get_recipe("lora", "full").profile == "full"  # an explicit profile wins


def test_overrides_apply():
    recipe = get_recipe("lora", "quick", max_steps=3, lora_r=8)
    assert (recipe.max_steps, recipe.lora_r) == (3, 8)
    assert get_recipe("full", "quick", lora_r=0).lora_r == 0  # full fine-tuning has no LoRA rank


@pytest.mark.parametrize(
    ("technique", "overrides", "message"),
    [
        ("lora", {"max_steps": 0}, "max_steps=0 must be a positive integer"),
        ("lora", {"max_steps": 2.0}, "max_steps=2.0 must be a positive integer"),
        ("lora", {"per_device_train_batch_size": -1}, "per_device_train_batch_size=-1"),
        ("lora", {"lora_r": 0}, "lora_r=0 must be a positive integer"),
        ("lora", {"learning_rate": 1.0}, "learning_rate=1.0 is out of range; allowed 1e-07 to 0.01"),
        ("lora", {"learning_rate": float("nan")}, "learning_rate=nan is out of range"),
        ("lora", {"lora_dropout": 1.0}, "lora_dropout=1.0 is out of range; allowed 0.0 to 0.9"),
        ("lora", {"warmup_steps": -1}, "warmup_steps=-1 must be >= 0"),
        ("grpo", {"num_generations": 3}, "num_generations=3 must divide the generation batch"),
        ("grpo", {"num_generations": 1}, "num_generations=1 must be >= 2"),
        ("grpo", {"temperature": 0.0}, "temperature=0.0 is out of range; allowed 0.05 to 2.0"),
        ("dpo", {"max_prompt_length": 256}, "max_prompt_length=256 must be below max_seq_length=256"),
        ("dpo", {"beta": 0.0}, "beta=0.0 is out of range"),
        ("cpt", {"embedding_learning_rate": 1e-4}, "embedding_learning_rate=0.0001 should not exceed"),
        ("lora", {"packing_strategy": "zip"},
         "lora recipe: packing_strategy='zip' is not supported; allowed: bfd, bfd_split, wrapped"),
        ("cpt", {"packing_strategy": "bfd-requeue"}, "packing_strategy='bfd-requeue' is not supported"),
        ("lora", {"attn_implementation": "flash3"}, "attn_implementation='flash3' is not supported; allowed: None, "
                                                    "sdpa, eager, flex_attention, flash_attention_2"),
    ],
)
def test_invalid_values_name_the_parameter_and_the_range(technique, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        get_recipe(technique, "quick", **overrides)


def test_unknown_technique_and_profile():
    with pytest.raises(ValueError, match="unknown technique 'sft'; allowed: full, lora, dpo, grpo, cpt"):
        get_recipe("sft")
    with pytest.raises(ValueError, match="unknown profile 'tiny'; allowed: full, quick"):
        get_recipe("lora", "tiny")
    with pytest.raises(ValueError, match="unknown technique"):
        SFTRecipe(technique="sft", profile="full")


def test_replace_validates_again():
    recipe = get_recipe("lora", "quick")
    changed = recipe.replace(max_steps=3)
    assert (changed.max_steps, recipe.max_steps) == (3, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.max_steps = 3
    with pytest.raises(ValueError, match="max_steps=0"):
        recipe.replace(max_steps=0)
    with pytest.raises(ValueError, match="num_generations=3"):
        get_recipe("grpo", "quick").replace(num_generations=3)


@pytest.mark.parametrize("overrides", [{"lora_r": True}, {"max_steps": True}])
def test_booleans_are_not_counts(overrides):
    with pytest.raises(ValueError):
        get_recipe("lora", "quick", **overrides)


@pytest.mark.parametrize(("technique", "overrides"), [("grpo", {"max_completion_length": 0}),
                                                      ("dpo", {"max_prompt_length": 0})])
def test_generation_lengths_must_be_positive(technique, overrides):
    with pytest.raises(ValueError):
        get_recipe(technique, "quick", **overrides)


def test_cpt_without_embeddings_targets_no_embeddings():
    recipe = get_recipe("cpt", "quick", train_embeddings=False)
    assert not {"embed_tokens", "lm_head"} & set(recipe.target_modules)


def test_set_overrides_are_typed_literals():
    overrides = parse_overrides("lora", ["per_device_train_batch_size=32", "learning_rate=1e-4", "packing=True",
                                         "pad_to_multiple_of=None", "packing_strategy=wrapped",
                                         "target_modules=['q_proj', 'v_proj']"])
    assert overrides == {"per_device_train_batch_size": 32, "learning_rate": 1e-4, "packing": True,
                         "pad_to_multiple_of": None, "packing_strategy": "wrapped",
                         "target_modules": ("q_proj", "v_proj")}
    recipe = get_recipe("lora", "quick", **overrides)
    assert recipe.per_device_train_batch_size == 32 and recipe.target_modules == ("q_proj", "v_proj")


@pytest.mark.parametrize(
    ("technique", "items", "message"),
    [
        ("lora", ["foo=1"], "--set foo: not a field of the lora recipe; allowed: model_name, "),
        ("lora", ["beta=0.1"], "--set beta: not a field of the lora recipe"),  # a DPO field
        ("lora", ["technique=dpo"], "--set technique: not a field"),  # fixed by the command, not a setting
        ("lora", ["max_steps"], "expected KEY=VALUE"),
        ("dpo", ["=3"], "expected KEY=VALUE"),
    ],
)
def test_set_overrides_name_what_is_wrong(technique, items, message):
    with pytest.raises(ValueError, match=message):
        parse_overrides(technique, items)


def test_optimizer_and_scheduler_names_match_transformers():
    """recipes keeps a copy (building a recipe must not import transformers before Unsloth): same names."""
    from unsloth_course.backend import FastLanguageModel  # noqa: F401  (Unsloth first)

    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from unsloth_course.recipes import LR_SCHEDULERS, LR_SCHEDULERS_NEEDING_SETTINGS, OPTIMIZER_NAMES

    assert OPTIMIZER_NAMES == tuple(o.value for o in OptimizerNames)
    assert set(LR_SCHEDULERS) | set(LR_SCHEDULERS_NEEDING_SETTINGS) == {s.value for s in SchedulerType}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optim": "adam"}, "optim='adam' is not an optimizer transformers knows (OptimizerNames); allowed: "
                            "adamw_torch, adamw_torch_fused"),
        ({"optim": "apollo_adamw"}, "optim='apollo_adamw' needs optim_target_modules"),
        ({"lr_scheduler_type": "reduce_lr_on_plateau"}, "steps on evaluation metrics"),
        ({"lr_scheduler_type": "cosine_warmup"}, "is not a learning-rate schedule transformers knows"),
        ({"target_modules": ()}, "target_modules is empty"),
        ({"target_modules": ("q_proj", "attn")}, "unknown module(s) 'attn'; expected a list of q_proj, k_proj"),
        ({"target_modules": "q_proj"}, "target_modules='q_proj' is not allowed"),
        ({"target_modules": ("q_proj", 3)}, "target_modules=('q_proj', 3) must be a list of strings or a string"),
        ({"learning_rate": "2e-4x"}, "learning_rate='2e-4x' must be a number"),
        ({"packing": "yes"}, "packing='yes' must be True or False"),
        ({"pad_to_multiple_of": "8"}, "pad_to_multiple_of='8' must be an integer or None"),
        ({"attn_implementation": 3}, "attn_implementation=3 must be a string or None"),
        ({"model_name": "./missing-model"}, "model_name='./missing-model': no such folder"),
        ({"model_name": "a/b/c"}, "model_name='a/b/c': no such folder"),
        ({"model_name": "bad id!"}, "is neither an existing folder nor a Hub repo id"),
        ({"model_name": " "}, "model_name=' ' is empty"),
    ],
)
def test_every_string_option_is_checked(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_recipe("lora", "quick", **overrides)


def test_model_name_is_a_model_folder_or_a_repo_id(tmp_path):
    assert get_recipe("lora", "quick", model_name="Qwen/Qwen2.5-1.5B-Instruct").model_name.startswith("Qwen/")
    assert get_recipe("lora", "quick", model_name="gpt2").model_name == "gpt2"
    with pytest.raises(ValueError, match="is a folder without config.json"):
        get_recipe("lora", "quick", model_name=str(tmp_path))
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ValueError, match="is a file; expected a model folder"):
        get_recipe("lora", "quick", model_name=str(tmp_path / "weights.bin"))
    (tmp_path / "config.json").write_text("{}")
    assert get_recipe("lora", "quick", model_name=str(tmp_path)).model_name == str(tmp_path)


def test_all_linear_and_cpt_embeddings():
    assert get_recipe("lora", "quick", target_modules="all-linear").target_modules == "all-linear"
    from unsloth_course.trainers import _targets

    assert _targets("all-linear") == "all-linear" and _targets(("q_proj",)) == ["q_proj"]
    with pytest.raises(ValueError, match="train_embeddings=True but target_modules=\\('q_proj',\\) has no"):
        get_recipe("cpt", "quick", target_modules=("q_proj",))
    assert get_recipe("cpt", "quick", target_modules=("q_proj",), train_embeddings=False).target_modules == (
        "q_proj",)
