"""Training: `train()` runs a trainer with time, tokens and memory measured around it, and turns a CUDA
out-of-memory error into remedies with values; `resolve_optim` picks an optimizer this machine has."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from unsloth_course.hardware import report_once
from unsloth_course.measurement import (
    StepClock,
    format_summary,
    memory_snapshot,
    reset_peak_memory,
    training_summary,
)
from unsloth_course.recipes import Recipe
from unsloth_course.settings import is_main_process


def resolve_optim(name: str) -> str:
    """8-bit AdamW needs bitsandbytes on CUDA; elsewhere fall back to AdamW (said once)."""
    if "8bit" in name and not (torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes")):
        report_once("optim", f"optim={name!r} needs bitsandbytes on a CUDA GPU: using 'adamw_torch' here")
        return "adamw_torch"
    return name


def oom_advice(recipe: Recipe) -> str:
    """Concrete remedies for a CUDA out-of-memory error with this recipe's values."""
    b, ga, seq = recipe.per_device_train_batch_size, recipe.gradient_accumulation_steps, recipe.max_seq_length
    tips = [
        f"per_device_train_batch_size={max(1, b // 2)} with gradient_accumulation_steps={ga * 2} "
        f"(same effective batch {b * ga})" if b > 1 else
        "per_device_train_batch_size is already 1: reduce the sequence length instead",
        f"max_seq_length={max(128, seq // 2)} (now {seq}); long rows dominate activation memory" if seq > 128 else
        f"max_seq_length is already short ({seq}): reduce the batch or use QLoRA instead",
        "gradient checkpointing on: use_gradient_checkpointing='unsloth' in get_peft_model"
        if not recipe.gradient_checkpointing else "gradient checkpointing is already on",
        "optim='adamw_8bit' (8-bit optimizer states, needs bitsandbytes)" if "8bit" not in recipe.optim
        else "optimizer is already 8-bit; for LoRA also try load_in_4bit=True (QLoRA)",
    ]
    return "CUDA out of memory. Try, in this order:\n" + "\n".join(f"  - {t}" for t in tips)


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def train(trainer, recipe: Recipe, technique: str | None = None, resume_from_checkpoint=None,
          verbose: bool = True, **extra: Any) -> dict:
    """trainer.train() with memory measured around it; returns the training summary.

    On CUDA out-of-memory it prints the remedies for this recipe, then re-raises.
    """
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    reset_peak_memory()
    start = memory_snapshot()
    clock = StepClock()
    trainer.add_callback(clock)
    try:
        output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
        if is_oom(error) and is_main_process():
            print(oom_advice(recipe))
        raise
    finally:  # a second train() on the same trainer gets its own clock, not this one's steps too
        trainer.remove_callback(clock)
    end = memory_snapshot()
    summary = training_summary(trainer, output, start, end, technique or recipe.technique,
                               profile=recipe.profile, **clock.summary(), **extra)
    if verbose and is_main_process():
        print(format_summary(summary))
    return summary
