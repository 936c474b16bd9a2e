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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import tomllib

from unsloth_course.models import DEFAULT_MODEL
from unsloth_course.settings import quick_mode

TECHNIQUES = ("full", "lora", "dpo", "grpo", "cpt")
PROFILES = ("full", "quick", "throughput")
ATTENTION_KERNELS = (None, "sdpa", "eager", "flex_attention", "flash_attention_2")
PACKING_STRATEGIES = ("bfd", "bfd_split", "wrapped")  # TRL packing strategies
# LoRA on every attention and MLP projection of a Llama-style block (Unsloth's default target list too)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDING_TARGETS = ("embed_tokens", "lm_head")
GRPO_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")  # TRL 1.15's, those that need no extra settings
GRPO_REWARD_SCALING = ("group", "batch", "none")
RECIPE_DIR = Path(__file__).resolve().parent


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
    target_modules: tuple[str, ...] = LORA_TARGETS
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
        if not self.train_embeddings and set(EMBEDDING_TARGETS) & set(self.target_modules):
            raise ValueError("cpt recipe: train_embeddings=False but target_modules lists embed_tokens/lm_head")
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


__all__ = ["ATTENTION_KERNELS", "CPTRecipe", "DPORecipe", "EMBEDDING_TARGETS", "GRPORecipe", "LORA_TARGETS",
           "PACKING_STRATEGIES", "PROFILES", "Recipe", "SFTRecipe", "TECHNIQUES", "get_recipe", "parse_overrides",
           "positive_int", "profiles"]
