"""Which backend trains here: real Unsloth on a CUDA GPU, or the CPU stand-in with the same API.

Importing this module imports Unsloth (where it can run) before anything imports TRL, transformers or PEFT:
Unsloth patches those libraries when it is imported, and warns when it comes second. So every course module
that uses TRL, transformers or PEFT imports this one first, and `unsloth_course` imports it on first use of a
training name (`from unsloth_course import FastLanguageModel`).

`FastLanguageModel` is Unsloth's class (subclassed only to resolve the offline SmolLM2 checkpoint) when Unsloth
imports on CUDA, else `standin.PlainFastLanguageModel`. UNSLOTH_COURSE_BACKEND=plain forces the stand-in on a
GPU (the bench compares both).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unsloth_course import settings
from unsloth_course.hardware import apply_t4_emulation, default_dtype, report_once


def _import_unsloth() -> tuple[Any | None, str]:
    """(the unsloth module, why) where Unsloth can run here; (None, why not) otherwise."""
    wanted = settings.backend_choice()
    if wanted == "plain":
        return None, "UNSLOTH_COURSE_BACKEND=plain"
    if not torch.cuda.is_available():
        return None, "no CUDA GPU (Unsloth needs one)"
    if importlib.util.find_spec("unsloth") is None:
        return None, "unsloth is not installed (pip install -e '.[gpu]')"
    try:
        module = importlib.import_module("unsloth")
    except Exception as error:  # a broken GPU stack must not stop the course: say so and go on
        if wanted == "unsloth":
            raise
        return None, f"unsloth failed to import ({type(error).__name__}: {error})"
    return module, "unsloth imported on CUDA"


_unsloth, _BACKEND_REASON = _import_unsloth()
BACKEND = "unsloth" if _unsloth is not None else "plain"

# Unsloth is in (or known absent): from here on, TRL, transformers and PEFT may be imported.
from unsloth_course import standin  # noqa: E402
from unsloth_course.models import (  # noqa: E402
    DEFAULT_MODEL,
    fix_special_tokens,
    resolve_model,
    save_adapters_with_hub_ids,
)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_max_length_warning() -> None:
    """Drop transformers' "Both `max_new_tokens` and `max_length` seem to have been set" warning.

    Unsloth sets generation_config.max_length to the context size (8192 here; unsloth_zoo's tokenizer_utils), so
    every generate(max_new_tokens=...) logs it: hundreds of lines in one GRPO run. As the warning itself says,
    max_new_tokens takes precedence, which is what the course asks for.
    """
    logger = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages("Both `max_new_tokens`"))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class BackendInfo:
    """What trains here: backend, device, precision and library versions."""

    backend: str
    reason: str
    device: str
    device_name: str
    dtype: str
    gpu_memory_gb: float | None
    versions: dict[str, str | None] = field(default_factory=dict)
    memory_cap_gb: float | None = None

    def __str__(self) -> str:
        lines = [
            f"backend : {self.backend} ({self.reason})",
            f"device  : {self.device} - {self.device_name}"
            + (f", {self.gpu_memory_gb:.1f} GB" if self.gpu_memory_gb else ""),
            f"dtype   : {self.dtype}"
            + (f" (emulating a T4: fp16, memory capped at {self.memory_cap_gb:.1f} GB)" if self.memory_cap_gb else ""),
            "versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items() if v),
        ]
        return "\n".join(lines)


def backend_info() -> BackendInfo:
    """Which backend, device, dtype and library versions are in use."""
    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    packages = ("unsloth", "unsloth_zoo", "torch", "transformers", "trl", "peft", "datasets", "accelerate")
    return BackendInfo(
        backend=BACKEND,
        reason=_BACKEND_REASON,
        device="cuda" if cuda else "cpu",
        device_name=props.name if props else f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
        dtype=str(default_dtype()).replace("torch.", ""),
        gpu_memory_gb=props.total_memory / 1e9 if props else None,
        versions={p: _version(p) for p in packages},
        memory_cap_gb=MEMORY_CAP_GB,
    )


quiet_max_length_warning()
MEMORY_CAP_GB = apply_t4_emulation()


@contextlib.contextmanager
def _local_adapter_view(name: str) -> Iterator[str]:
    """`name`, or for an adapter folder whose base is a Hub id that resolves to a local copy here (SmolLM2 without
    the Hub), a temporary copy of the folder naming that copy: Unsloth reads the base from adapter_config.json
    and would look for the id on the Hub. (The stand-in resolves the id itself: standin._load_adapter_folder.)"""
    config_file = Path(name) / "adapter_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    base = config.get("base_model_name_or_path")
    local = resolve_model(base) if base else base
    if local == base:
        yield name
        return
    with tempfile.TemporaryDirectory(prefix="adapter-view-") as tmp:
        view = Path(tmp) / Path(name).name
        shutil.copytree(name, view)
        (view / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": local}, indent=2))
        yield str(view)


if _unsloth is not None:
    _UnslothFLM = _unsloth.FastLanguageModel

    class FastLanguageModel(_UnslothFLM):  # type: ignore[misc,valid-type]
        """Unsloth's FastLanguageModel; from_pretrained also resolves the offline SmolLM2 checkpoint."""

        @staticmethod
        def from_pretrained(model_name: str = DEFAULT_MODEL, *args: Any, **kwargs: Any):
            if kwargs.get("dtype") is None and not args:
                kwargs["dtype"] = default_dtype()  # Unsloth's own choice, except when emulating a T4 (fp16)
            if kwargs.pop("attn_implementation", None):
                report_once("attn", "attn_implementation is for the plain backend: Unsloth picks its own attention")
            with _local_adapter_view(resolve_model(model_name)) as name:
                model, tokenizer = _UnslothFLM.from_pretrained(name, *args, **kwargs)
            if model_name == DEFAULT_MODEL:
                fix_special_tokens(tokenizer, model)
            return save_adapters_with_hub_ids(model), tokenizer

        @staticmethod
        def get_peft_model(model, *args: Any, r: int = 16, **kwargs: Any):
            standin.check_rank(r)
            return save_adapters_with_hub_ids(_UnslothFLM.get_peft_model(model, *args, r=r, **kwargs))

    UnslothTrainer, UnslothTrainingArguments = _unsloth.UnslothTrainer, _unsloth.UnslothTrainingArguments
else:
    FastLanguageModel = standin.PlainFastLanguageModel  # type: ignore[misc,assignment]
    UnslothTrainer, UnslothTrainingArguments = standin.UnslothTrainer, standin.UnslothTrainingArguments

__all__ = ["BACKEND", "BackendInfo", "FastLanguageModel", "UnslothTrainer", "UnslothTrainingArguments",
           "backend_info"]
