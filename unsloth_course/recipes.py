"""One source of truth for each technique's hyperparameters, read by the notebooks and the CLI.

Each recipe has a `full` profile (the notebook defaults, sized for a free Colab T4), a `quick`
profile (CPU and CI: a minute or two) and a `throughput` profile (a big GPU: packed 2048-token rows,
large micro-batches, no gradient checkpointing, fused AdamW; for `unsloth-course bench`).
UNSLOTH_COURSE_QUICK=1 selects quick. Only sizes and speed settings differ between profiles; the code
path is the same.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .models import DEFAULT_MODEL
from .settings import env_flag

TECHNIQUES = ("full", "lora", "dpo", "grpo", "cpt")
PROFILES = ("full", "quick", "throughput")
ATTENTION_KERNELS = (None, "sdpa", "eager", "flex_attention", "flash_attention_2")
PACKING_STRATEGIES = ("bfd", "wrapped")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _positive_int(value) -> bool:
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

    def __post_init__(self) -> None:
        t = self.technique
        if t not in TECHNIQUES:
            raise ValueError(f"unknown technique {t!r}; allowed: {', '.join(TECHNIQUES)}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}")
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "max_seq_length", "n_train_rows", "n_eval_rows", "logging_steps", "max_new_tokens"):
            value = getattr(self, name)
            if not _positive_int(value):
                raise ValueError(f"{t} recipe: {name}={value!r} must be a positive integer")
        if t != "full" and not _positive_int(self.lora_r):
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
        if self.pad_to_multiple_of is not None and not _positive_int(self.pad_to_multiple_of):
            raise ValueError(f"{t} recipe: pad_to_multiple_of={self.pad_to_multiple_of!r} must be a positive "
                             "integer or None")

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def replace(self, **changes) -> Recipe:
        """A copy with some values changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
            if not _positive_int(getattr(self, name)):
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
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"grpo recipe: {name}={getattr(self, name)!r} must be a positive integer")
        _check_range("warmup_learning_rate", self.warmup_learning_rate, 1e-7, 1e-2, self.technique)
        _check_range("temperature", self.temperature, 0.05, 2.0, self.technique)
        _check_range("beta", self.beta, 0.0, 1.0, self.technique)
        if self.warmup_sft_steps < 0:
            raise ValueError(f"grpo recipe: warmup_sft_steps={self.warmup_sft_steps} must be >= 0")


@dataclass(frozen=True)
class CPTRecipe(Recipe):
    embedding_learning_rate: float = 2e-5
    packing: bool = True
    packing_strategy: str = "bfd"
    train_embeddings: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_packing(self)
        _check_range("embedding_learning_rate", self.embedding_learning_rate, 1e-7, 1e-2, self.technique)
        if not self.train_embeddings and {"embed_tokens", "lm_head"} & set(self.target_modules):
            raise ValueError("cpt recipe: train_embeddings=False but target_modules lists embed_tokens/lm_head")
        if self.embedding_learning_rate > self.learning_rate:
            raise ValueError(f"cpt recipe: embedding_learning_rate={self.embedding_learning_rate} should "
                             f"not exceed learning_rate={self.learning_rate} (embeddings move slowly)")


_QUICK = dict(max_seq_length=256, n_train_rows=64, n_eval_rows=8, per_device_train_batch_size=2,
              gradient_accumulation_steps=1, warmup_steps=1, max_new_tokens=48)

# Big-GPU speed settings (H100 class; not for a T4): packing fills every row with 2048 real tokens, so no
# compute is spent on padding; without gradient checkpointing nothing is recomputed in the backward pass;
# the fused AdamW updates all parameters in a few kernels. Micro-batches were chosen to fit 80 GB with Unsloth;
# the plain backend needs more for DPO's 256 pairs and GRPO's 512 completions (it materializes the full fp32
# logits, Unsloth chunks them): 67 GB at 128 pairs, 97 GB at 512 completions on the H200.
_THROUGHPUT = dict(max_seq_length=2048, per_device_train_batch_size=16, gradient_accumulation_steps=1,
                   gradient_checkpointing=False, optim="adamw_torch_fused", max_steps=20, warmup_steps=2,
                   logging_steps=1, n_eval_rows=16, max_new_tokens=32)
# The plain backend needs an attention kernel that keeps packed examples apart without a dense mask: with SDPA,
# transformers builds a (16 x 2048)^2 mask for the flattened batch and ran out of memory on the H100; flex
# attention (CUDA only) builds a block mask instead. Unsloth uses its own kernels. (Padding the flattened batch
# to one fixed shape, pad_to_multiple_of=16 x 2048, made Unsloth's full fine-tuning run out of memory on the
# H100 and torch's recompile log showed no recompilation without it, so packed rows are not padded.)
_PACKED_THROUGHPUT = dict(_THROUGHPUT, packing=True, attn_implementation="flex_attention")

_PROFILES: dict[str, dict[str, dict]] = {
    "full": {
        "full": dict(learning_rate=2e-5, max_steps=60),
        "quick": dict(_QUICK, learning_rate=2e-5, max_steps=8),
        "throughput": dict(_PACKED_THROUGHPUT, learning_rate=2e-5, n_train_rows=10000),
    },
    "lora": {
        "full": dict(learning_rate=2e-4, max_steps=60),
        "quick": dict(_QUICK, learning_rate=2e-4, max_steps=8),
        # bfd padding-free rows: on the H100 with torch 2.11, Unsloth's LoRA step took 2.8-5.4 s there until
        # unsloth_course.kernels gave Unsloth torch's flash-varlen kernel (0.24-0.34 s at 16 rows). Still
        # launch-bound (GPU kernels busy 17% of a profiled step), so 32 rows a step: 176-203k tokens/s, 28 GB
        # (16 rows: 86-121k; 48 rows: 198k, 42 GB)
        "throughput": dict(_PACKED_THROUGHPUT, learning_rate=2e-4, n_train_rows=10000,
                           per_device_train_batch_size=32),
    },
    "dpo": {
        # 8 pairs in one forward pass, not 2 x 4 accumulated: the same effective batch, and the small model
        # leaves room on a T4; on the H100, 2 x 4 took 2.9 s a step, mostly per-micro-step overhead
        "full": dict(learning_rate=5e-5, max_steps=80, n_train_rows=400, n_eval_rows=64, warmup_steps=8,
                     max_seq_length=384, max_prompt_length=192, beta_sweep_steps=15, weight_decay=0.0,
                     per_device_train_batch_size=8, gradient_accumulation_steps=1),
        "quick": dict(_QUICK, learning_rate=5e-5, max_steps=6, n_eval_rows=12, max_prompt_length=128,
                      beta_sweep=(0.05, 0.5), beta_sweep_steps=2, weight_decay=0.0),
        # DPO pairs are short and cannot be packed here: a large micro-batch of pairs instead (on the H100, 32 pairs
        # took a 0.29 s step for 5,200 tokens: launch-bound, so more pairs per step). On the H200 with Unsloth,
        # 128 pairs: 44.6k tokens/s, 34 GB; 256 pairs: 68.6k, 67.8 GB (the plain backend needed 67 GB for 128)
        "throughput": dict(_THROUGHPUT, learning_rate=5e-5, max_seq_length=1024, max_prompt_length=512,
                           per_device_train_batch_size=256, n_train_rows=4800, weight_decay=0.0,
                           pad_to_multiple_of=64),  # a few batch shapes instead of one per longest pair
    },
    "grpo": {
        # 2 prompts x 8 completions per step; a 30-step format warm-up leaves room for GRPO to raise both the
        # format rewards and correctness (measured on CPU: 15 warm-up steps gave almost no reward, 40 gave
        # 88% strict format before any RL).
        "full": dict(learning_rate=2e-5, max_steps=50, per_device_train_batch_size=16,
                     gradient_accumulation_steps=1, num_generations=8, n_train_rows=512, n_eval_rows=64,
                     max_completion_length=96, warmup_sft_steps=30, max_new_tokens=96, weight_decay=0.0,
                     optim="adamw_8bit"),
        "quick": dict(_QUICK, learning_rate=2e-5, max_steps=3, per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=48, warmup_sft_steps=4, n_eval_rows=6,
                      weight_decay=0.0),

        # 64 prompts x 8 completions decoded together per step: decoding is launch-bound, so on the H200 4x the
        # completions of 128 (3,550 generated tokens/s on the H100) gave 7,334 in 1.9x the step time (50.6 GB);
        # 1024 gave 8,245 but needs 100 GB. Unsloth's sequence packing off: on the H100 its per-completion checks
        # made steps 18-51 s while the packed length grew, and its packed steps without a check (3.1-3.7 s) were
        # still slower than padded ones (2.7 s)
        "throughput": dict(_THROUGHPUT, learning_rate=2e-5, max_seq_length=512, per_device_train_batch_size=512,
                           num_generations=8, max_completion_length=128, warmup_sft_steps=30,
                           warmup_batch_size=16, max_steps=10, n_train_rows=1024, weight_decay=0.0,
                           max_new_tokens=96, unsloth_sequence_packing=False),
    },
    "cpt": {
        # 8 packed 1024-token rows in one pass: on the H100 80 steps took 214.7 s against 217.9 s for 4 x 2, so
        # CPT's step time is not accumulation overhead (Unsloth reports offloading the trained embeddings)
        "full": dict(learning_rate=5e-5, embedding_learning_rate=5e-6, max_steps=80, n_train_rows=2000,
                     n_eval_rows=64, per_device_train_batch_size=8, gradient_accumulation_steps=1,
                     max_seq_length=1024, lora_r=64, lora_alpha=32),
        "quick": dict(_QUICK, learning_rate=5e-5, embedding_learning_rate=5e-6, max_steps=6, n_train_rows=48,
                      lora_r=16, lora_alpha=16),
        # 32 rows a step: on the H100 16 rows were launch-bound (GPU kernels busy 32% of a profiled step); 32 rows
        # gave 143.6k tokens/s against 108-130k
        "throughput": dict(_PACKED_THROUGHPUT, learning_rate=5e-5, embedding_learning_rate=5e-6, n_train_rows=3000,
                           lora_r=64, lora_alpha=32, per_device_train_batch_size=32),
    },
}
_CLASSES = {"full": SFTRecipe, "lora": SFTRecipe, "dpo": DPORecipe, "grpo": GRPORecipe, "cpt": CPTRecipe}


def quick_mode() -> bool:
    """UNSLOTH_COURSE_QUICK=1 selects the quick profile."""
    return env_flag("UNSLOTH_COURSE_QUICK")


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
    values = dict(_PROFILES[technique][profile])
    values.update(overrides)
    if technique == "cpt" and "target_modules" not in values:
        embeddings = ("embed_tokens", "lm_head") if values.get("train_embeddings", True) else ()
        values["target_modules"] = LORA_TARGETS + embeddings
    return _CLASSES[technique](technique=technique, profile=profile, **values)


__all__ = ["ATTENTION_KERNELS", "CPTRecipe", "DPORecipe", "GRPORecipe", "PACKING_STRATEGIES", "PROFILES", "Recipe",
           "SFTRecipe", "TECHNIQUES", "get_recipe", "parse_overrides", "quick_mode"]
