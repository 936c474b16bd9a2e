"""Trainer settings shared by the notebooks and the CLI: optimizer and precision by hardware,
common TRL arguments from a recipe, and training with memory measurement and OOM advice."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from .backend import is_bfloat16_supported, report_once
from .distributed import is_main_process
from .metrics import format_summary, memory_snapshot, reset_peak_memory, training_summary
from .profiling import StepClock
from .recipes import Recipe


def resolve_optim(name: str) -> str:
    """8-bit AdamW needs bitsandbytes on CUDA; elsewhere fall back to AdamW (said once)."""
    if "8bit" in name and not (torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes")):
        report_once("optim", f"optim={name!r} needs bitsandbytes on a CUDA GPU: using 'adamw_torch' here")
        return "adamw_torch"
    return name


def precision_args() -> dict[str, bool]:
    """Mixed precision by hardware: bf16 on Ampere+, fp16 on a T4, neither (fp32) on CPU."""
    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    bf16 = is_bfloat16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def common_args(recipe: Recipe, output_dir: str, **overrides: Any) -> dict[str, Any]:
    """The TrainingArguments every technique shares, from one recipe (see the notebooks for why each)."""
    args = dict(
        output_dir=output_dir,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
        lr_scheduler_type=recipe.lr_scheduler_type,
        weight_decay=recipe.weight_decay,
        optim=resolve_optim(recipe.optim),
        logging_steps=recipe.logging_steps,
        seed=recipe.seed,
        report_to="none",
        save_strategy="no",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        **precision_args(),
    )
    from .distributed import trainer_ddp_args

    args.update(trainer_ddp_args(lora=recipe.technique != "full"))  # CPU data parallel needs use_cpu (gloo)
    args.update(overrides)
    return args


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
