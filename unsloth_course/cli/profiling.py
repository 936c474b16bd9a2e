"""Where training time goes: generation vs training in GRPO, and a torch-profiler window over a few steps.

Both are opt-in measurements around an unmodified TRL trainer: `GenerationTimer` wraps the trainer's own
`_generate` method on one instance (TRL 1.15 and 1.16 have it; Unsloth's compiled GRPOTrainer keeps it), and
`TorchProfileCallback` records steps N..N+k with torch.profiler and prints the top operators.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.autograd import DeviceType
from transformers import TrainerCallback

from unsloth_course import settings


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _count_tokens(completion_ids: Any) -> int:
    if isinstance(completion_ids, torch.Tensor):
        return int(completion_ids.numel())
    return sum(len(ids) for ids in completion_ids)


class GenerationTimer:
    """Seconds spent in a GRPO trainer's generation and the number of completion tokens it produced."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = 0
        self.calls = 0
        self.attached = False

    def attach(self, trainer) -> bool:
        """Wrap trainer._generate (returns False, measuring nothing, where the trainer has none)."""
        original = getattr(trainer, "_generate", None)
        if original is None:
            return False

        def timed(*args: Any, **kwargs: Any):
            _sync()
            start = time.perf_counter()
            output = original(*args, **kwargs)
            _sync()
            self.seconds += time.perf_counter() - start
            self.calls += 1
            if isinstance(output, tuple) and len(output) > 1:
                self.tokens += _count_tokens(output[1])  # (prompt_ids, completion_ids, ...)
            return output

        trainer._generate = timed
        self.attached = True
        return True

    def summary(self, train_runtime_s: float | None) -> dict[str, Any]:
        """generation_s, generated_tokens, generated_tokens_per_s and the generation share of the run."""
        if not self.attached or not self.calls:
            return {}
        result = {"generation_s": round(self.seconds, 2), "generated_tokens": self.tokens,
                  "generated_tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds else None}
        if train_runtime_s:
            result["generation_share"] = round(min(1.0, self.seconds / train_runtime_s), 3)
            result["training_s"] = round(max(0.0, train_runtime_s - self.seconds), 2)
        return result


def format_generation_split(summary: dict[str, Any]) -> str:
    if "generation_s" not in summary:
        return "generation time: not measured (this trainer has no _generate method)"
    share = summary.get("generation_share")
    return (f"generation: {summary['generation_s']:.1f} s for {summary['generated_tokens']:,} completion tokens "
            f"({summary['generated_tokens_per_s']:,.0f} tokens/s)"
            + (f", {share:.0%} of training time; the optimization steps took {summary['training_s']:.1f} s"
               if share is not None else ""))


class TorchProfileCallback(TrainerCallback):
    """Profile `steps` optimizer steps starting at `start_step`; print the top operators by device time.

    UNSLOTH_COURSE_TORCH_PROFILE=N turns it on in `unsloth-course run` (and so in `bench`): N steps from step 3, or
    the last N steps of a shorter run (a 3-step GRPO bench profiles its third step).
    """

    def __init__(self, start_step: int = 3, steps: int = 2, top: int = 15) -> None:
        self.start_step, self.steps, self.top = start_step, steps, top
        self.profiler: torch.profiler.profile | None = None
        self.wall_start = 0.0
        self.table = ""
        self.busy_fraction: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        max_steps = getattr(state, "max_steps", 0) or 0
        if 0 < max_steps < self.start_step + self.steps:
            self.start_step = max(0, max_steps - self.steps)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.start_step and self.profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            _sync()
            self.wall_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.profiler is None or self.table or state.global_step < self.start_step + self.steps:
            return
        _sync()
        wall = time.perf_counter() - self.wall_start
        self.profiler.__exit__(None, None, None)
        events = self.profiler.key_averages()
        cuda = torch.cuda.is_available()
        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        self.table = events.table(sort_by=sort, row_limit=self.top)
        if cuda:
            # kernels only: an operator's self device time is its kernels' time again (counting both gave 144%)
            kernel_us = sum(e.self_device_time_total or 0 for e in events if e.device_type == DeviceType.CUDA)
            self.busy_fraction = kernel_us / 1e6 / wall if wall else None
        if state.is_world_process_zero:
            print(f"\ntorch.profiler: steps {self.start_step + 1}-{self.start_step + self.steps}, "
                  f"{wall:.2f} s wall" + (f", GPU kernels busy {self.busy_fraction:.0%} of it"
                                          if self.busy_fraction is not None else ""))
            print(self.table)


def profile_callback_from_env() -> TorchProfileCallback | None:
    """A TorchProfileCallback when UNSLOTH_COURSE_TORCH_PROFILE=N is set, else None."""
    steps = settings.torch_profile_steps()
    return TorchProfileCallback(steps=steps) if steps else None


__all__ = ["GenerationTimer", "TorchProfileCallback", "format_generation_split", "profile_callback_from_env"]
