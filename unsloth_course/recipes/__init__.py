"""Recipes: every hyperparameter of each technique, one source of truth for the notebooks, the CLI and the bench.

Each technique has a TOML file beside this module (`full.toml`, `lora.toml`, `dpo.toml`, `grpo.toml`,
`cpt.toml`) with three profiles: `full` (what the notebooks run, sized for a free Colab T4), `quick` (CPU and
CI: a minute or two) and `throughput` (a big GPU, for `unsloth-course bench`). Only sizes and speed settings
differ between profiles, never the code path. UNSLOTH_COURSE_QUICK=1 selects `quick`. The dataclasses below
hold the defaults and check every value when a recipe is built.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from unsloth_course.hub import is_repo_id, looks_like_path
from unsloth_course.models import DEFAULT_MODEL
from unsloth_course.settings import quick_mode

TECHNIQUES = ("full", "lora", "dpo", "grpo", "cpt")
PROFILES = ("full", "quick", "throughput")
ATTENTION_KERNELS = (None, "sdpa", "eager", "flex_attention", "flash_attention_2")
PACKING_STRATEGIES = ("bfd", "bfd_split", "wrapped")  # TRL packing strategies
# LoRA on every attention and MLP projection of a Llama-style block (Unsloth's default target list too)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDING_TARGETS = ("embed_tokens", "lm_head")
# target_modules a recipe may name: the Llama-style projections, Phi-3's fused ones, the embeddings (trained whole),
# or PEFT's "all-linear" (every Linear layer except the output head)
FUSED_TARGETS = ("qkv_proj", "gate_up_proj")
KNOWN_TARGETS = LORA_TARGETS + FUSED_TARGETS + EMBEDDING_TARGETS
ALL_LINEAR = "all-linear"
# transformers 5.17's OptimizerNames (transformers.training_args), copied so that building a recipe imports no
# transformers (it must come after Unsloth: see backend); test_recipes checks the copy against the enum.
OPTIMIZER_NAMES = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor", "adamw_anyprecision",
    "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad", "adamw_bnb_8bit", "adamw_8bit",
    "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit",
    "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw",
    "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise",
    "stable_adamw",
)
# Optimizers that need a setting recipes do not have (optim_target_modules, or a LOMO trainer): refused, with why.
OPTIMIZERS_NEEDING_SETTINGS = {
    **{name: "needs optim_target_modules, which recipes do not set" for name in OPTIMIZER_NAMES
       if name.startswith(("galore_", "apollo_"))},
    "lomo": "needs transformers' LOMO trainer path and the lomo-optim package",
    "adalomo": "needs transformers' LOMO trainer path and the lomo-optim package",
}
# transformers 5.17's SchedulerType values (transformers.trainer_utils; checked by test_recipes) that train
# without extra settings. The others need what recipes do not set:
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")
LR_SCHEDULERS_NEEDING_SETTINGS = {
    "reduce_lr_on_plateau": "steps on evaluation metrics; the course trains without evaluation during training",
    "greedy": "steps on evaluation metrics; the course trains without evaluation during training",
    "cosine_with_min_lr": "needs min_lr in lr_scheduler_kwargs, which recipes do not set",
    "cosine_warmup_with_min_lr": "needs min_lr in lr_scheduler_kwargs, which recipes do not set",
    "warmup_stable_decay": "needs num_decay_steps in lr_scheduler_kwargs, which recipes do not set",
}
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")  # TRL 1.15's, those that need no extra settings
GRPO_REWARD_SCALING = ("group", "batch", "none")
RECIPE_DIR = Path(__file__).resolve().parent


def _type_name(hint: Any) -> str:
    """`hint` in words, for an error message."""
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(typing.get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "True or False", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _has_type(value: Any, hint: Any) -> bool:
    """Does `value` match the dataclass field type `hint` (int, float, bool, str, X | None, tuple[X, ...])?"""
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(_has_type(v, typing.get_args(hint)[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


@cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_types(recipe: Recipe) -> None:
    """Every field holds a value of its declared type (a --set value is a Python literal or a string)."""
    for name, hint in _field_types(type(recipe)).items():
        value = getattr(recipe, name)
        if not _has_type(value, hint):
            raise ValueError(f"{recipe.technique} recipe: {name}={value!r} must be {_type_name(hint)}")


def check_model_name(name: str, technique: str = "recipe") -> None:
    """A model a recipe can load: an existing folder with config.json (or a LoRA adapter's adapter_config.json),
    or a well-formed Hub repo id (`owner/name`). A path-like value that does not exist is refused here, before
    anything loads, instead of failing inside the Hub client."""
    where = f"{technique} recipe: model_name={name!r}"
    if not name.strip():
        raise ValueError(f"{where} is empty; expected a model folder (with config.json) or a Hub repo id")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{where} is a file; expected a model folder (with config.json) or a Hub repo id")
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise ValueError(f"{where} is a folder without config.json (or adapter_config.json): not a saved "
                             "model; expected a folder written by save_pretrained, or a Hub repo id")
        return
    if looks_like_path(name):
        raise ValueError(f"{where}: no such folder; expected an existing model folder (with config.json) or "
                         "a Hub repo id such as HuggingFaceTB/SmolLM2-135M-Instruct")
    if not is_repo_id(name) or "--" in name or len(name) > 96:
        raise ValueError(f"{where} is neither an existing folder nor a Hub repo id (owner/name: letters, digits, "
                         "'-', '_', '.'; at most 96 characters)")


def _check_choice(technique: str, name: str, value: str, allowed: Sequence[str],
                  refused: dict[str, str], source: str) -> None:
    if value in refused:
        raise ValueError(f"{technique} recipe: {name}={value!r} {refused[value]}; allowed: {', '.join(allowed)}")
    if value not in allowed:
        raise ValueError(f"{technique} recipe: {name}={value!r} is not {source}; allowed: {', '.join(allowed)}")


def _check_target_modules(recipe: Recipe) -> None:
    targets, t = recipe.target_modules, recipe.technique
    allowed = f"a list of {', '.join(KNOWN_TARGETS)}, or {ALL_LINEAR!r}"
    if isinstance(targets, str):
        if targets != ALL_LINEAR:
            raise ValueError(f"{t} recipe: target_modules={targets!r} is not allowed; expected {allowed}")
        return
    if not targets:
        raise ValueError(f"{t} recipe: target_modules is empty: LoRA needs at least one module; expected {allowed}")
    unknown = [name for name in targets if name not in KNOWN_TARGETS]
    if unknown:
        raise ValueError(f"{t} recipe: target_modules names unknown module(s) {', '.join(map(repr, unknown))}; "
                         f"expected {allowed}")


def positive_int(value: Any) -> bool:
    """An int > 0 (a bool is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_range(name: str, value: float, low: float, high: float, technique: str) -> None:
    if not (low <= value <= high):
        raise ValueError(f"{technique} recipe: {name}={value!r} is out of range; allowed {low} to {high}")


@dataclass(frozen=True)
class Recipe:
    """Settings every technique shares."""

    technique: str
    profile: str
    model_name: str = DEFAULT_MODEL
    max_seq_length: int = 512
    n_train_rows: int = 1000
    n_eval_rows: int = 50
    max_steps: int = 60
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 4
    learning_rate: float = 2e-4
    warmup_steps: int = 5
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.01
    logging_steps: int = 1
    optim: str = "adamw_8bit"
    gradient_checkpointing: bool = True
    seed: int = 3407
    max_new_tokens: int = 128
    load_in_4bit: bool = False  # QLoRA: 4-bit NF4 base weights (bitsandbytes on CUDA), for 1-8B models on small GPUs
    # pad every batch to a multiple of this many tokens (TRL's collator; padding is not trained on or counted):
    # fewer distinct shapes for compiled kernels. None: pad to the longest row only.
    pad_to_multiple_of: int | None = None
    # attention kernel for the plain backend (transformers' attn_implementation; None: its default, SDPA).
    # Unsloth picks its own kernels and ignores this.
    attn_implementation: str | None = None
    # LoRA (ignored by full fine-tuning)
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    # a list of module names (KNOWN_TARGETS), or "all-linear"
    target_modules: tuple[str, ...] | str = LORA_TARGETS
    use_rslora: bool = False
    # the training data: None for the technique's default (its Hub dataset; generated math problems for GRPO),
    # a Hub id, or your own .json/.jsonl/.parquet/.csv file in that dataset's schema (unsloth_course.data)
    dataset: str | None = None

    def __post_init__(self) -> None:
        t = self.technique
        if t not in TECHNIQUES:
            raise ValueError(f"unknown technique {t!r}; allowed: {', '.join(TECHNIQUES)}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}")
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "max_seq_length", "n_train_rows", "n_eval_rows", "logging_steps", "max_new_tokens"):
            value = getattr(self, name)
            if not positive_int(value):
                raise ValueError(f"{t} recipe: {name}={value!r} must be a positive integer")
        _check_types(self)
        check_model_name(self.model_name, t)
        _check_choice(t, "optim", self.optim, [o for o in OPTIMIZER_NAMES if o not in OPTIMIZERS_NEEDING_SETTINGS],
                      OPTIMIZERS_NEEDING_SETTINGS, "an optimizer transformers knows (OptimizerNames)")
        _check_choice(t, "lr_scheduler_type", self.lr_scheduler_type, LR_SCHEDULERS, LR_SCHEDULERS_NEEDING_SETTINGS,
                      "a learning-rate schedule transformers knows (SchedulerType)")
        _check_target_modules(self)
        if t != "full" and not positive_int(self.lora_r):
            raise ValueError(f"{t} recipe: lora_r={self.lora_r!r} must be a positive integer "
                             "(full fine-tuning uses full_finetuning=True, not r=0)")
        if self.load_in_4bit and t == "full":
            raise ValueError("full recipe: load_in_4bit=True cannot be fully fine-tuned (4-bit weights are frozen); "
                             "use technique lora (QLoRA) or load 16-bit weights")
        _check_range("learning_rate", self.learning_rate, 1e-7, 1e-2, t)
        _check_range("lora_dropout", self.lora_dropout, 0.0, 0.9, t)
        _check_range("weight_decay", self.weight_decay, 0.0, 1.0, t)
        if self.warmup_steps < 0:
            raise ValueError(f"{t} recipe: warmup_steps={self.warmup_steps} must be >= 0")
        if self.attn_implementation not in ATTENTION_KERNELS:
            raise ValueError(f"{t} recipe: attn_implementation={self.attn_implementation!r} is not supported; "
                             f"allowed: {', '.join(map(str, ATTENTION_KERNELS))}")
        if self.pad_to_multiple_of is not None and not positive_int(self.pad_to_multiple_of):
            raise ValueError(f"{t} recipe: pad_to_multiple_of={self.pad_to_multiple_of!r} must be a positive "
                             "integer or None")
        _check_source_field(self, "dataset")

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def replace(self, **changes) -> Recipe:
        """A copy with some values changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_source_field(recipe: Recipe, name: str) -> None:
    value = getattr(recipe, name)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{recipe.technique} recipe: {name}={value!r} must be None (the default data), "
                         "a Hub id or a data file path")


def _check_packing(recipe: Recipe) -> None:
    strategy = recipe.packing_strategy
    if strategy not in PACKING_STRATEGIES:
        raise ValueError(f"{recipe.technique} recipe: packing_strategy={strategy!r} is not supported; "
                         f"allowed: {', '.join(PACKING_STRATEGIES)}")


@dataclass(frozen=True)
class SFTRecipe(Recipe):
    """Full fine-tuning and LoRA on Alpaca-style instructions."""

    packing: bool = False
    # "bfd": whole examples fitted into rows, trained padding-free (each attends only to itself);
    # "wrapped": one stream cut into full rows (examples can see the end of the one before)
    packing_strategy: str = "bfd"
    # full fine-tuning on a bf16 GPU: fp32 master weights (Unsloth's float32_mixed_precision) instead of bf16
    # weights, whose small updates round away; fp16 GPUs (T4) and CPUs train fp32 weights anyway
    float32_mixed_precision: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_packing(self)


@dataclass(frozen=True)
class DPORecipe(Recipe):
    beta: float = 0.1
    max_prompt_length: int = 256
    beta_sweep: tuple[float, ...] = (0.05, 0.1, 0.5)
    beta_sweep_steps: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_range("beta", self.beta, 1e-3, 10.0, self.technique)
        for name in ("max_prompt_length", "beta_sweep_steps"):
            if not positive_int(getattr(self, name)):
                raise ValueError(f"dpo recipe: {name}={getattr(self, name)!r} must be a positive integer")
        if self.max_prompt_length >= self.max_seq_length:
            raise ValueError(f"dpo recipe: max_prompt_length={self.max_prompt_length} must be below "
                             f"max_seq_length={self.max_seq_length} (room is needed for the answer)")


@dataclass(frozen=True)
class GRPORecipe(Recipe):
    num_generations: int = 8
    max_completion_length: int = 160
    temperature: float = 1.0
    beta: float = 0.04
    warmup_sft_steps: int = 30
    warmup_batch_size: int = 4
    warmup_learning_rate: float = 2e-4
    levels: tuple[int, ...] = (1, 2)
    # TRL's use_transformers_continuous_batching: completions decoded by transformers' continuous batching
    # (paged KV cache, finished sequences replaced at once) instead of model.generate
    continuous_batching: bool = False
    # TRL's loss normalization ("dapo": token-level, TRL 1.15's default) and advantage scaling ("group": divide by
    # the group's standard deviation, TRL's default)
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    # Unsloth only: its GRPO sequence packing (None: Unsloth's default, on, or UNSLOTH_GRPO_SEQ_PACKING). When on, it
    # checks the packed forward against one forward per completion whenever the packed length grows.
    unsloth_sequence_packing: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations < 2:
            raise ValueError(f"grpo recipe: num_generations={self.num_generations} must be >= 2 "
                             "(advantages compare completions within a group)")
        generation_batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if generation_batch % self.num_generations:
            raise ValueError(
                f"grpo recipe: num_generations={self.num_generations} must divide the generation batch "
                f"per_device_train_batch_size x gradient_accumulation_steps = {generation_batch}"
            )
        for name in ("max_completion_length", "warmup_batch_size"):
            if not positive_int(getattr(self, name)):
                raise ValueError(f"grpo recipe: {name}={getattr(self, name)!r} must be a positive integer")
        _check_range("warmup_learning_rate", self.warmup_learning_rate, 1e-7, 1e-2, self.technique)
        _check_range("temperature", self.temperature, 0.05, 2.0, self.technique)
        _check_range("beta", self.beta, 0.0, 1.0, self.technique)
        if self.warmup_sft_steps < 0:
            raise ValueError(f"grpo recipe: warmup_sft_steps={self.warmup_sft_steps} must be >= 0")
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(f"grpo recipe: loss_type={self.loss_type!r}; allowed: {', '.join(GRPO_LOSS_TYPES)}")
        if self.scale_rewards not in GRPO_REWARD_SCALING:
            raise ValueError(f"grpo recipe: scale_rewards={self.scale_rewards!r}; allowed: "
                             f"{', '.join(GRPO_REWARD_SCALING)}")


@dataclass(frozen=True)
class CPTRecipe(Recipe):
    embedding_learning_rate: float = 2e-5
    packing: bool = True
    packing_strategy: str = "bfd"
    train_embeddings: bool = True
    # the general prose of the forgetting check: None for yahma/alpaca-cleaned's answers, a Hub id or a file
    # with an `output` column (data.load_general_prose)
    general_dataset: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_packing(self)
        _check_source_field(self, "general_dataset")
        _check_range("embedding_learning_rate", self.embedding_learning_rate, 1e-7, 1e-2, self.technique)
        targets = () if isinstance(self.target_modules, str) else self.target_modules
        if not self.train_embeddings and set(EMBEDDING_TARGETS) & set(targets):
            raise ValueError("cpt recipe: train_embeddings=False but target_modules lists embed_tokens/lm_head")
        if self.train_embeddings and not set(EMBEDDING_TARGETS) & set(targets):
            raise ValueError(f"cpt recipe: train_embeddings=True but target_modules={self.target_modules!r} has no "
                             "embed_tokens/lm_head (nothing would train at embedding_learning_rate); add them or "
                             "set train_embeddings=False")
        if self.embedding_learning_rate > self.learning_rate:
            raise ValueError(f"cpt recipe: embedding_learning_rate={self.embedding_learning_rate} should "
                             f"not exceed learning_rate={self.learning_rate} (embeddings move slowly)")


_CLASSES = {"full": SFTRecipe, "lora": SFTRecipe, "dpo": DPORecipe, "grpo": GRPORecipe, "cpt": CPTRecipe}


@cache
def profiles(technique: str) -> dict[str, dict[str, Any]]:
    """The profiles of `technique` as written in its TOML file (lists become tuples, as the recipes hold them)."""
    path = RECIPE_DIR / f"{technique}.toml"
    with path.open("rb") as file:
        table = tomllib.load(file)
    unknown = set(table) - set(PROFILES)
    if unknown:
        raise ValueError(f"{path}: unknown profile(s) {', '.join(sorted(unknown))}; allowed: {', '.join(PROFILES)}")
    return {name: {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            for name, values in table.items()}


def parse_overrides(technique: str, items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (the CLI's --set) as recipe overrides; unknown keys fail here, naming the allowed ones.

    Values are Python literals (16, 2e-4, True, None, "wrapped", [1, 2]); anything else is taken as a string.
    The recipe checks the values' ranges when it is built.
    """
    if technique not in _CLASSES:
        raise ValueError(f"unknown technique {technique!r}; allowed: {', '.join(TECHNIQUES)}")
    fields = {f.name: f for f in dataclasses.fields(_CLASSES[technique])}
    fields.pop("technique"), fields.pop("profile")
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. per_device_train_batch_size=32")
        if key not in fields:
            raise ValueError(f"--set {key}: not a field of the {technique} recipe; allowed: {', '.join(fields)}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        overrides[key] = tuple(value) if isinstance(value, list) else value
    return overrides


def get_recipe(technique: str, profile: str | None = None, **overrides) -> Recipe:
    """The recipe for `technique` in `profile` ("full"/"quick"; default from UNSLOTH_COURSE_QUICK)."""
    if technique not in _CLASSES:
        raise ValueError(f"unknown technique {technique!r}; allowed: {', '.join(TECHNIQUES)}")
    profile = profile or ("quick" if quick_mode() else "full")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    values = dict(profiles(technique)[profile])
    values.update(overrides)
    if technique == "cpt" and "target_modules" not in values:
        embeddings = EMBEDDING_TARGETS if values.get("train_embeddings", True) else ()
        values["target_modules"] = LORA_TARGETS + embeddings
    return _CLASSES[technique](technique=technique, profile=profile, **values)


__all__ = ["ALL_LINEAR", "ATTENTION_KERNELS", "CPTRecipe", "DPORecipe", "EMBEDDING_TARGETS", "GRPORecipe",
           "KNOWN_TARGETS", "LORA_TARGETS", "LR_SCHEDULERS", "OPTIMIZER_NAMES", "PACKING_STRATEGIES", "PROFILES",
           "Recipe", "SFTRecipe", "TECHNIQUES", "check_model_name", "get_recipe", "parse_overrides", "positive_int",
           "profiles"]
