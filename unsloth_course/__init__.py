"""unsloth_course: the library the five fine-tuning notebooks share.

The names below load on first use. Those that train (`FastLanguageModel`, `UnslothTrainer`, ...) import
`unsloth_course.backend`, which imports Unsloth where it can run before anything imports TRL, transformers or
PEFT, so that Unsloth can patch them: import `unsloth_course` before `trl` in a notebook. Submodules are
imported as usual (`from unsloth_course import data, evaluation`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_NAMES = {
    "BACKEND": "unsloth_course.backend",
    "FastLanguageModel": "unsloth_course.backend",
    "UnslothTrainer": "unsloth_course.backend",
    "UnslothTrainingArguments": "unsloth_course.backend",
    "backend_info": "unsloth_course.backend",
    "default_dtype": "unsloth_course.hardware",
    "is_bfloat16_supported": "unsloth_course.hardware",
    "hf_token": "unsloth_course.hub",
    "hub_available": "unsloth_course.hub",
    "DEFAULT_MODEL": "unsloth_course.models",
    "resolve_model": "unsloth_course.models",
    "get_recipe": "unsloth_course.recipes",
    "quick_mode": "unsloth_course.settings",
}

__all__ = [*_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'unsloth_course' has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
