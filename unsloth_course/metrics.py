"""Measurements: memory, parameters, training summaries, loss curves, perplexity and run records."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

RUNS_DIR = Path(os.environ.get("UNSLOTH_COURSE_RUNS", "runs"))


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
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9  # macOS: bytes, Linux: KiB
    except ImportError:  # Windows
        import psutil

        return getattr(psutil.Process().memory_info(), "peak_wset", 0) / 1e9


def reset_peak_memory() -> None:
    """Start a fresh peak measurement (GPU only: a process's peak RSS cannot be reset)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def memory_snapshot() -> MemorySnapshot:
    if torch.cuda.is_available():
        return MemorySnapshot("cuda", torch.cuda.memory_reserved() / 1e9,
                              torch.cuda.max_memory_reserved() / 1e9,
                              torch.cuda.get_device_properties(0).total_memory / 1e9)
    import psutil

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


# ---------------------------------------------------------------- training summary
def losses(log_history: Sequence[dict], key: str = "loss") -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e[key])) for e in log_history if key in e and "step" in e]


def loss_trend_check(values: Sequence[float]) -> str | None:
    """A warning when the loss did not fall: flat or rising, with the likely causes; None when it fell."""
    if len(values) < 4:
        return None
    k = max(1, len(values) // 4)
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    if not math.isfinite(last):
        return "loss is NaN/inf: lower the learning rate, or use fp32/bf16 instead of fp16 for this model"
    if last > first * 1.02:
        return (f"loss rose ({first:.3f} -> {last:.3f}): the learning rate is likely too high, or the labels/"
                "chat template do not match the data; try a 2-10x lower learning_rate")
    if last > first * 0.98:
        return (f"loss is flat ({first:.3f} -> {last:.3f}): check that parameters are trainable, that the "
                "learning rate is not too low, and that the data is not already predicted perfectly")
    return None


def reward_trend(log_history: Sequence[dict], key: str = "reward") -> tuple[int, float, float] | None:
    """(k, mean of the first k logged values, mean of the last k), k = a quarter of the run (at least 1): one
    step's group reward is noisy, so GRPO's start and end are judged on these windows. None if nothing logged."""
    curve = [float(e[key]) for e in log_history if key in e]
    if not curve:
        return None
    k = max(1, len(curve) // 4)
    return k, sum(curve[:k]) / k, sum(curve[-k:]) / k


def _num_tokens(trainer) -> int | None:
    seen = getattr(trainer.state, "num_input_tokens_seen", 0) or 0
    if seen:
        return int(seen)
    logged = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    return int(logged[-1]) if logged else None


def training_summary(trainer, train_output, start: MemorySnapshot, end: MemorySnapshot,
                     technique: str, **extra: Any) -> dict:
    """Runtime, steps, samples/s, tokens/s, first/last loss, trainable parameters and memory."""
    metrics = dict(train_output.metrics)
    runtime = float(metrics.get("train_runtime", 0.0))
    curve = [v for _, v in losses(trainer.state.log_history)]
    trainable, total = count_parameters(trainer.model)
    tokens = _num_tokens(trainer)
    summary = {
        "technique": technique,
        "runtime_s": round(runtime, 2),
        "steps": int(trainer.state.global_step),
        "samples_per_s": round(float(metrics.get("train_samples_per_second", 0.0)), 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / runtime, 1) if tokens and runtime else None,
        "first_loss": round(curve[0], 4) if curve else None,
        "last_loss": round(curve[-1], 4) if curve else None,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100 * trainable / total, 3),
        "memory_device": end.device,
        "memory_start_gb": round(start.current_gb, 3),
        "memory_peak_gb": round(end.peak_gb, 3),
        # GRPO's loss is not a progress measure (it hovers near zero and may rise as the KL term grows while the
        # reward improves): the notebook and the run record judge GRPO by its reward instead
        "loss_check": None if technique == "grpo" else loss_trend_check(curve),
        "loss_curve": [[step, round(value, 5)] for step, value in losses(trainer.state.log_history)],
    }
    summary.update(extra)
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        f"time        : {summary['runtime_s']:.1f} s for {summary['steps']} steps",
        f"throughput  : {summary['samples_per_s']} samples/s"
        + (f", {summary['tokens_per_s']:,.0f} tokens/s (non-padding)" if summary.get("tokens_per_s") else "")
        + (f"; steady state {summary['steady_tokens_per_s']:,.0f} tokens/s, median step "
           f"{summary['step_time_median_s']:.3f} s" if summary.get("steady_tokens_per_s") else ""),
        f"loss        : {summary['first_loss']} -> {summary['last_loss']}",
        f"parameters  : {summary['trainable_params']:,} trainable of {summary['total_params']:,} "
        f"({summary['trainable_pct']}%)",
        f"memory      : {summary['memory_device']} start {summary['memory_start_gb']:.2f} GB, "
        f"peak {summary['memory_peak_gb']:.2f} GB",
    ]
    if summary.get("loss_check"):
        lines.append(f"CHECK       : {summary['loss_check']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots
def plot_metrics(log_history: Sequence[dict], keys: Sequence[str] = ("loss",), title: str = "Training",
                 ax=None):
    """One line per logged key over steps (from trainer.state.log_history); returns the figure."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    for key in keys:
        points = losses(log_history, key)
        if points:
            ax.plot(*zip(*points), marker=".", label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(keys) > 1:
        ax.legend()
    return fig or ax.figure


def plot_loss(log_history: Sequence[dict], title: str = "Training loss"):
    return plot_metrics(log_history, ("loss",), title)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and shell.__class__.__name__ in ("ZMQInteractiveShell", "Shell")
    except ImportError:
        return False


def live_loss_callback(keys: Sequence[str] = ("loss",), min_interval_s: float = 3.0):
    """A TrainerCallback that redraws the loss curve while training (in notebooks; a no-op in terminals).

    It redraws at most every `min_interval_s` seconds, and at the end: drawing costs time that would
    otherwise show up as lower tokens/s.
    """
    from transformers import TrainerCallback

    class LiveLossPlot(TrainerCallback):
        def __init__(self) -> None:
            self.handle = None
            self.last_draw = 0.0

        def _draw(self, state) -> None:
            import matplotlib.pyplot as plt
            from IPython.display import display

            fig = plot_metrics(state.log_history, keys, f"live: step {state.global_step}/{state.max_steps}")
            if self.handle is None:
                self.handle = display(fig, display_id=True)
            else:
                self.handle.update(fig)
            plt.close(fig)
            self.last_draw = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if _in_notebook() and time.monotonic() - self.last_draw >= min_interval_s:
                self._draw(state)

        def on_train_end(self, args, state, control, **kwargs):
            if _in_notebook():
                self._draw(state)

    return LiveLossPlot()


# ---------------------------------------------------------------- run records
def write_run_record(technique: str, record: dict, runs_dir: Path | str | None = None) -> Path:
    """Save runs/<technique>.json so later notebooks and the README compare measured numbers."""
    from .backend import backend_info
    from .distributed import is_main_process

    folder = Path(runs_dir or RUNS_DIR)
    if not is_main_process():  # under torchrun/accelerate only rank 0 writes
        return folder / f"{technique}.json"
    folder.mkdir(parents=True, exist_ok=True)
    info = backend_info()
    payload = {"technique": technique, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
               "backend": asdict(info), **record}
    path = folder / f"{technique}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def read_run_records(runs_dir: Path | str | None = None) -> dict[str, dict]:
    folder = Path(runs_dir or RUNS_DIR)
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def folder_size_mb(path: Path | str) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 1e6


def lora_parameter_count(model, r: int, target_modules) -> int:
    """Parameters LoRA adds for rank r on the named Linear modules: r x (in + out) each (before wrapping)."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in target_modules:
            total += r * (module.in_features + module.out_features)
    return total
