"""What a run measured: memory, parameter counts, step times, and the training summary."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import unsloth_course.backend  # noqa: F401  (Unsloth before transformers: see backend)

import psutil
import torch
from transformers import TrainerCallback

from unsloth_course.hardware import default_dtype


# ---------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemorySnapshot:
    """GPU memory (reserved by PyTorch) on CUDA, process resident memory on CPU; in GB."""

    device: str
    current_gb: float
    peak_gb: float
    total_gb: float | None


def _process_peak_rss_gb() -> float:
    try:
        import resource  # POSIX only: imported here so that Windows can use psutil instead
    except ImportError:
        return getattr(psutil.Process().memory_info(), "peak_wset", 0) / 1e9
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9  # macOS: bytes, Linux: KiB


def reset_peak_memory() -> None:
    """Start a fresh peak measurement (GPU only: a process's peak RSS cannot be reset)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def memory_snapshot() -> MemorySnapshot:
    if torch.cuda.is_available():
        return MemorySnapshot("cuda", torch.cuda.memory_reserved() / 1e9,
                              torch.cuda.max_memory_reserved() / 1e9,
                              torch.cuda.get_device_properties(0).total_memory / 1e9)
    return MemorySnapshot("cpu", psutil.Process().memory_info().rss / 1e9, _process_peak_rss_gb(),
                          psutil.virtual_memory().total / 1e9)


def memory_report(start: MemorySnapshot, end: MemorySnapshot) -> str:
    """Start, peak and the delta training added, in one line."""
    kind = "GPU memory reserved" if end.device == "cuda" else "process memory (RSS)"
    total = f" of {end.total_gb:.1f} GB" if end.total_gb else ""
    return (f"{kind}: start {start.current_gb:.2f} GB, peak {end.peak_gb:.2f} GB{total}, "
            f"training added {end.peak_gb - start.current_gb:+.2f} GB")



# ---------------------------------------------------------------- parameters
def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def parameter_line(model) -> str:
    trainable, total = count_parameters(model)
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"


def folder_size_mb(path: Path | str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def lora_parameter_count(model, r: int, target_modules) -> int:
    """Parameters LoRA adds for rank r on the named Linear modules: r x (in + out) each (before wrapping)."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in target_modules:
            total += r * (module.in_features + module.out_features)
    return total


# ---------------------------------------------------------------- step times
class StepClock(TrainerCallback):
    """Time and tokens at every optimizer step, for steady-state speed.

    A run's average (tokens / train_runtime) includes the first steps' one-off costs (compilation, autotuning,
    allocator warm-up), which dominate short runs on a fast GPU. The median over the later steps does not.
    """

    def __init__(self, skip_steps: int = 2) -> None:
        self.skip_steps = skip_steps
        self.marks: list[tuple[int, float, int]] = []  # (step, seconds, tokens seen)
        self.start_step = 0  # > 0 when the run resumed from a checkpoint: the steps and tokens before it are not
        self.start_tokens = 0  # this run's

    def on_train_begin(self, args, state, control, **kwargs):  # after a checkpoint's state was loaded
        self.start_step = int(state.global_step)
        self.start_tokens = int(state.num_input_tokens_seen or 0)

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((state.global_step, time.perf_counter(), int(state.num_input_tokens_seen or 0)))

    def summary(self) -> dict[str, Any]:
        """step_time_median_s and steady_tokens_per_s over the steps after the first `skip_steps`."""
        marks = self.marks[self.skip_steps:] if len(self.marks) > self.skip_steps + 1 else self.marks
        if len(marks) < 2:
            return {}
        times = sorted(b[1] - a[1] for a, b in zip(marks, marks[1:]))
        rates = sorted((b[2] - a[2]) / (b[1] - a[1]) for a, b in zip(marks, marks[1:]) if b[1] > a[1])
        result = {"step_time_median_s": round(times[len(times) // 2], 4), "steady_steps": len(times)}
        if rates and rates[len(rates) // 2] > 0:
            result["steady_tokens_per_s"] = round(rates[len(rates) // 2], 1)
        return result


# ---------------------------------------------------------------- training summary
def losses(log_history: Sequence[dict], key: str = "loss") -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e[key])) for e in log_history if key in e and "step" in e]


def non_finite_logs(log_history: Sequence[dict], keys: Sequence[str] = ("loss", "grad_norm")) -> list[list]:
    """[step, key, "nan"/"inf"/"-inf"] for every logged value of `keys` that is not a finite number."""
    found = []
    for entry in log_history:
        for key in keys:
            value = entry.get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                found.append([int(entry.get("step", -1)), key, str(float(value))])
    return found


def loss_trend_check(values: Sequence[float]) -> str | None:
    """A warning when the loss did not fall: flat or rising, with the likely causes; None when it fell."""
    if any(not math.isfinite(v) for v in values):
        return "loss is NaN/inf: lower the learning rate, or use fp32/bf16 instead of fp16 for this model"
    if len(values) < 4:
        return None
    k = max(1, len(values) // 4)
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    if last > first * 1.02:
        return (f"loss rose ({first:.3f} -> {last:.3f}): the learning rate is likely too high, or the labels/"
                "chat template do not match the data; try a 2-10x lower learning_rate")
    if last > first * 0.98:
        return (f"loss is flat ({first:.3f} -> {last:.3f}, mean of the first and last quarter of the steps): one "
                "batch's loss is noisy, so judge by the held-out loss; if that did not fall either, check that "
                "parameters are trainable, that the learning rate is not too low (in bf16, full fine-tuning needs "
                "fp32 master weights), and that the data is not already predicted perfectly")
    return None


def reward_trend(log_history: Sequence[dict], key: str = "reward") -> tuple[int, float, float] | None:
    """(k, mean of the first k logged values, mean of the last k), k = a quarter of the run (at least 1): one
    step's group reward is noisy, so GRPO's start and end are judged on these windows. None if nothing logged."""
    curve = [float(e[key]) for e in log_history if key in e]
    if not curve:
        return None
    k = max(1, len(curve) // 4)
    return k, sum(curve[:k]) / k, sum(curve[-k:]) / k


def _num_tokens(trainer, start_step: int, start_tokens: int) -> int | None:
    """Tokens this run trained on (a resumed run's checkpoint already counted the ones before it)."""
    seen = getattr(trainer.state, "num_input_tokens_seen", 0) or 0
    if seen:
        return int(seen) - start_tokens
    logged = [(int(e.get("step", 0)), e["num_tokens"]) for e in trainer.state.log_history if "num_tokens" in e]
    if not logged:
        return None
    before = [n for step, n in logged if step <= start_step]
    return int(logged[-1][1]) - (int(before[-1]) if before else 0)


def _finite_round(value: float, digits: int) -> float | None:
    """`value` rounded, or None when it is NaN/inf: a summary never shows a non-finite value as a number."""
    return round(value, digits) if math.isfinite(value) else None


def training_summary(trainer, train_output, start: MemorySnapshot, end: MemorySnapshot,
                     technique: str, start_step: int = 0, start_tokens: int = 0, **extra: Any) -> dict:
    """Runtime, steps, samples/s, tokens/s, first/last loss, trainable parameters and memory.

    Counts cover this run only: a run resumed from a checkpoint at `start_step` (with `start_tokens` already
    seen) reports the steps, samples and tokens it trained itself, and says where it resumed
    (`resumed_from_step`); `loss_curve` keeps the whole logged history. A non-finite logged loss or gradient
    norm is never a number here: it is listed in `non_finite`, and first/last loss are None where not finite.
    """
    metrics = dict(train_output.metrics)
    runtime = float(metrics.get("train_runtime", 0.0))
    history = trainer.state.log_history
    global_step = int(trainer.state.global_step)
    steps = global_step - start_step
    samples_per_s = float(metrics.get("train_samples_per_second", 0.0))
    max_steps = int(getattr(trainer.state, "max_steps", 0) or 0)
    if start_step and max_steps:  # transformers counts max_steps' samples, also those of the resumed-from steps
        samples_per_s *= steps / max_steps
    own = [(step, value) for step, value in losses(history) if step > start_step]
    curve = [value for _, value in own]
    trainable, total = count_parameters(trainer.model)
    tokens = _num_tokens(trainer, start_step, start_tokens)
    summary = {
        "technique": technique,
        "runtime_s": round(runtime, 2),
        "steps": steps,
        "samples_per_s": round(samples_per_s, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if tokens and runtime else None,
        "first_loss": _finite_round(curve[0], 4) if curve else None,
        "last_loss": _finite_round(curve[-1], 4) if curve else None,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100 * trainable / total, 3),
        "memory_device": end.device,
        "memory_start_gb": round(start.current_gb, 3),
        "memory_peak_gb": round(end.peak_gb, 3),
        # GRPO's loss is not a progress measure (it hovers near zero and may rise as the KL term grows while the
        # reward improves): the notebook and the run record judge GRPO by its reward instead
        "loss_check": None if technique == "grpo" else loss_trend_check(curve),
        "loss_curve": [[step, round(value, 5)] for step, value in losses(history) if math.isfinite(value)],
    }
    bad = non_finite_logs(history)
    if bad:
        summary["non_finite"] = bad
        summary["loss_check"] = (f"not finite: {', '.join(f'{key} {value} at step {step}' for step, key, value in bad)}"
                                 "; lower the learning rate (and on fp16, see the stop message's advice)")
    if start_step:
        summary["resumed_from_step"] = start_step
        summary["global_step"] = global_step
    summary.update(extra)
    return summary


def format_summary(summary: dict) -> str:
    resumed = (f" (resumed at step {summary['resumed_from_step']}, now at step {summary['global_step']})"
               if summary.get("resumed_from_step") else "")
    first, last = (summary[k] if summary[k] is not None else "n/a" for k in ("first_loss", "last_loss"))
    lines = [
        f"time        : {summary['runtime_s']:.1f} s for {summary['steps']} steps{resumed}",
        f"throughput  : {summary['samples_per_s']} samples/s"
        + (f", {summary['tokens_per_s']:,.0f} tokens/s (non-padding)" if summary.get("tokens_per_s") else "")
        + (f"; steady state {summary['steady_tokens_per_s']:,.0f} tokens/s, median step "
           f"{summary['step_time_median_s']:.3f} s" if summary.get("steady_tokens_per_s") else ""),
        f"loss        : {first} -> {last}",
        f"parameters  : {summary['trainable_params']:,} trainable of {summary['total_params']:,} "
        f"({summary['trainable_pct']}%)",
        f"memory      : {summary['memory_device']} start {summary['memory_start_gb']:.2f} GB, "
        f"peak {summary['memory_peak_gb']:.2f} GB",
    ]
    if summary.get("loss_check"):
        lines.append(f"CHECK       : {summary['loss_check']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- one training step
def training_step_cost(model, input_ids: torch.Tensor) -> dict[str, float | None]:
    """One forward and backward pass on `input_ids` (labels = inputs): wall time, the bytes autograd saved for the
    backward pass (activations: what gradient checkpointing trades for recomputation) and, on a GPU, the peak
    memory the step allocated. The gradients are discarded afterwards."""
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    was_training = model.training
    model.train()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    # as the trainer computes: in the GPU's 16-bit precision over whatever the weights are stored in
    autocast = torch.autocast("cuda", dtype=default_dtype()) if cuda else contextlib.nullcontext()
    started = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated() - base) / 1e6 if cuda else None
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {"seconds": round(seconds, 3), "saved_for_backward_mb": round(saved / 1e6, 1),
            "peak_step_memory_mb": round(peak, 1) if peak is not None else None}
