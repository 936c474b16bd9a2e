"""What this machine can do: the training precision it supports, a T4 stand-in on big GPUs, and notices.

Precision follows the hardware: bf16 on Ampere or newer GPUs (A100, L4, H100), fp16 on a T4 (free Colab, no
bf16), fp32 on a CPU. Options that cannot apply on this machine are reported once, never silently ignored.
"""

from __future__ import annotations

import torch

from unsloth_course import settings

T4_MEMORY_GB = 15.0
_reported: set[str] = set()


def report_once(key: str, message: str) -> None:
    """Print a notice once per process (an option that cannot apply here is reported, never ignored)."""
    if key not in _reported:
        _reported.add(key)
        print(message)


def is_bfloat16_supported() -> bool:
    """bf16 needs an Ampere or newer GPU; a T4 (or UNSLOTH_COURSE_EMULATE_T4=1) has fp16 only."""
    if settings.emulate_t4():
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def default_dtype() -> torch.dtype:
    """bf16 where supported, fp16 on older GPUs (T4), fp32 on a CPU."""
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if is_bfloat16_supported() else torch.float16


def precision_args() -> dict[str, bool]:
    """TrainingArguments' mixed-precision flags for this machine: bf16 on Ampere+, fp16 on a T4, neither on CPU."""
    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    bf16 = is_bfloat16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def apply_t4_emulation() -> float | None:
    """With UNSLOTH_COURSE_EMULATE_T4=1 on a GPU, cap this process's CUDA memory at 15 GB; the cap in GB, or None.

    This is how the course shows that the `full` profiles fit a T4 without one: the same code with a T4's
    precision (fp16) and memory (allocations beyond the cap fail with an out-of-memory error).
    """
    if not (settings.emulate_t4() and torch.cuda.is_available()):
        return None
    total = torch.cuda.get_device_properties(0).total_memory
    cap = min(T4_MEMORY_GB * 1e9, total)
    torch.cuda.set_per_process_memory_fraction(cap / total)
    report_once("t4", f"UNSLOTH_COURSE_EMULATE_T4: fp16 only, CUDA memory capped at {cap / 1e9:.1f} GB "
                f"of {total / 1e9:.1f} GB")
    return cap / 1e9
