"""unsloth_course: the shared library of the five fine-tuning notebooks.

Import it before trl/transformers trainers: on a CUDA machine with Unsloth installed, importing the
backend imports unsloth first, so that Unsloth can patch TRL and transformers.
"""

from .backend import (  # noqa: I001  (unsloth must be imported first)
    BACKEND,
    FastLanguageModel,
    UnslothTrainer,
    UnslothTrainingArguments,
    backend_info,
    default_dtype,
    is_bfloat16_supported,
)
from .hub import hf_token, hub_available
from .models import DEFAULT_MODEL, resolve_model
from .recipes import get_recipe, quick_mode

__version__ = "0.1.0"

__all__ = [
    "BACKEND",
    "DEFAULT_MODEL",
    "FastLanguageModel",
    "UnslothTrainer",
    "UnslothTrainingArguments",
    "__version__",
    "backend_info",
    "default_dtype",
    "get_recipe",
    "hf_token",
    "hub_available",
    "is_bfloat16_supported",
    "quick_mode",
    "resolve_model",
]
