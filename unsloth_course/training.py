"""Training: `train()` runs a trainer with time, tokens and memory measured around it, stops it at the first
non-finite loss or gradient norm (`NonFiniteTrainingError`, with the likely cause for the precision in use), and
turns a CUDA out-of-memory error into remedies with values; `resolve_optim` picks an optimizer this machine has."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import unsloth_course.backend  # noqa: F401  (Unsloth before transformers: see backend)

import torch
from transformers import TrainerCallback

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


class NonFiniteTrainingError(RuntimeError):
    """The loss or the gradient norm became NaN/inf: training stopped at that step, before the optimizer applied
    it (so no weight and no checkpoint holds it). The message says the step, the value, the likely cause for the
    precision in use and what to change; the CLI prints it as a one-line error."""

    def __init__(self, step: int, what: str, value: float | str, precision: str, learning_rate: float,
                 detail: str = "") -> None:
        self.step, self.what, self.value, self.precision = step, what, value, precision
        super().__init__(f"training stopped at step {step}: the {what} is {value}{detail} ({precision}); "
                         + non_finite_advice(precision, learning_rate))


def precision_of(args) -> str:
    """"fp16", "bf16" or "fp32": the mixed precision a trainer's arguments train with."""
    if getattr(args, "fp16", False):
        return "fp16"
    return "bf16" if getattr(args, "bf16", False) else "fp32"


def non_finite_advice(precision: str, learning_rate: float) -> str:
    """The likely cause of a NaN/inf loss for `precision`, and what to change (with values)."""
    lower = f"learning_rate={learning_rate / 4:.2g} (now {learning_rate:.2g})"
    if precision == "fp16":
        return ("likely an fp16 overflow (fp16 holds at most 65504; a T4 has no bf16). Lower the learning rate, "
                f"e.g. {lower}; keep fp32 master weights (train fp32 weights with fp16 autocast: do not load or "
                "cast the trainable weights to float16); or train on a bf16 GPU (Ampere or newer: A100, L4, H100)")
    if precision == "bf16":
        return (f"bf16 has fp32's range, so not an overflow: likely a too-high learning rate. Lower it, e.g. "
                f"{lower}")
    return (f"likely a too-high learning rate, or the data: lower it, e.g. {lower}, and check this step's rows "
            "(a batch whose labels are all masked, e.g. answers cut away by max_length, has no token to average)")


def _to_float(value) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def _grad_norm(model) -> torch.Tensor | None:
    """The L2 norm of every gradient (one reduction, no clipping), or None when no parameter has one."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False)


class NonFiniteGuard(TrainerCallback):
    """Stops training at the first non-finite loss or gradient norm, before the optimizer applies it.

    Checked at every optimizer step (in on_pre_optimizer_step, after clipping, before optimizer.step), whatever
    logging_steps and gradient accumulation are: the loss accumulated since the last log (transformers'
    `_tr_loss`; one NaN micro-batch makes it NaN, with logging_nan_inf_filter off) and the norm of the
    gradients. So no weight takes a NaN update and no checkpoint holds one. The logged loss and grad_norm
    (every technique, GRPO and DPO included) are checked too, in case a trainer computes its loss elsewhere.
    fp16 with a loss scaler: an infinite gradient with a finite loss is the loss scale overflowing, which the
    scaler handles (it skips that step and halves the scale; common in the first steps). Only a scale that
    falls below `min_loss_scale` (gradients overflow fp16 even unscaled) stops training then.
    """

    def __init__(self, trainer, min_loss_scale: float = 1.0) -> None:
        self.trainer = trainer
        self.min_loss_scale = min_loss_scale
        self.skipped_steps = 0  # fp16 steps the loss scaler skipped

    def _stop(self, step: int, what: str, value: float | str, detail: str = "") -> None:
        args = self.trainer.args
        raise NonFiniteTrainingError(step, what, value, precision_of(args), float(args.learning_rate), detail)

    def _scaler(self):
        scaler = getattr(getattr(self.trainer, "accelerator", None), "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        step = state.global_step + 1
        loss = getattr(self.trainer, "_tr_loss", None)
        norm = _grad_norm(self.trainer.model)
        values = [v.detach().float().reshape(()) for v in (loss, norm) if isinstance(v, torch.Tensor)]
        if not values or bool(torch.isfinite(torch.stack([v.to(values[0].device) for v in values])).all()):
            return  # one device sync per optimizer step (transformers' own NaN filter syncs per micro-batch)
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            self._stop(step, "loss", _to_float(loss))
        if self._scaler() is None:
            self._stop(step, "gradient norm", _to_float(norm))
        self.skipped_steps += 1  # fp16 loss-scale overflow: the scaler skips this step

    def on_step_end(self, args, state, control, **kwargs):
        scaler = self._scaler()
        if scaler is not None and scaler.get_scale() < self.min_loss_scale:
            self._stop(state.global_step, "gradient norm", "inf",
                       f" even with the fp16 loss scale down to {scaler.get_scale():g} after "
                       f"{self.skipped_steps} skipped step(s)")

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, what in (("loss", "logged loss"), ("grad_norm", "logged gradient norm")):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                if key == "grad_norm" and self._scaler() is not None:
                    continue  # a step the fp16 loss scaler skipped (checked in on_step_end)
                self._stop(state.global_step, what, value)


def train(trainer, recipe: Recipe, technique: str | None = None, resume_from_checkpoint=None,
          verbose: bool = True, **extra: Any) -> dict:
    """trainer.train() with memory measured around it; returns the training summary.

    Stops with NonFiniteTrainingError at the first NaN/inf loss or gradient norm (NonFiniteGuard), with the
    likely cause for this precision. On CUDA out-of-memory it prints the remedies for this recipe, then re-raises.
    A resumed run's summary counts the steps and tokens this call trained (see training_summary).
    """
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    args = getattr(trainer, "args", None)
    if getattr(args, "logging_nan_inf_filter", False):  # a trainer built without common_args: log NaN as NaN
        args.logging_nan_inf_filter = False
    reset_peak_memory()
    start = memory_snapshot()
    clock, guard = StepClock(), NonFiniteGuard(trainer)
    trainer.add_callback(clock)
    trainer.add_callback(guard)
    try:
        output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
        if is_oom(error) and is_main_process():
            print(oom_advice(recipe))
        if "probability tensor contains either" in str(error):  # GRPO sampling from NaN/inf logits
            raise NonFiniteTrainingError(trainer.state.global_step + 1, "sampling distribution of a generation",
                                         "nan/inf", precision_of(args), float(getattr(args, "learning_rate", 0.0)),
                                         " (the logits overflowed or the weights hold NaN)") from error
        raise
    finally:  # a second train() on the same trainer gets its own clock, not this one's steps too
        trainer.remove_callback(clock)
        trainer.remove_callback(guard)
    end = memory_snapshot()
    summary = training_summary(trainer, output, start, end, technique or recipe.technique,
                               start_step=clock.start_step, start_tokens=clock.start_tokens,
                               profile=recipe.profile, **clock.summary(), **extra)
    if verbose and is_main_process():
        print(format_summary(summary))
    return summary
