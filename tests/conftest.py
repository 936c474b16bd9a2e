"""Shared test settings: offline, headless, a throwaway runs/ folder, and SmolLM2 loaded once per session.

The environment is set at import time, before any test module imports unsloth_course.
"""

import copy
import os
import shutil
import tempfile

import pytest
from hub.fixtures import local_hub  # noqa: F401  (a local Hub server: tests/hub/README.md)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# An empty Hugging Face cache: offline, the loaders use what the cache holds, so a cache filled elsewhere
# would change what the tests see (the Hub tests give each client process its own HF_HOME).
_HF_HOME = tempfile.mkdtemp(prefix="unsloth_course_hf_home_")
os.environ["HF_HOME"] = _HF_HOME
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS/OpenMP thread: on shared cores two spinning threads made generation 5-15x slower (measured).
os.environ.setdefault("OMP_NUM_THREADS", "1")
_RUNS = tempfile.mkdtemp(prefix="unsloth_course_runs_")
os.environ["UNSLOTH_COURSE_RUNS"] = _RUNS  # tests never write into the repository's runs/


def pytest_unconfigure(config):
    shutil.rmtree(_RUNS, ignore_errors=True)
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def runs_dir():
    return _RUNS


@pytest.fixture(scope="session")
def tiny_model():
    """(model, tokenizer): SmolLM2-135M-Instruct on CPU in float32. Shared: tests must not change it
    (copy.deepcopy it before get_peft_model or training; chat/generate restore what they switch)."""
    from unsloth_course import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(max_seq_length=256)
    return model, tokenizer


@pytest.fixture(scope="session")
def lora_model(tiny_model):
    """A fresh (untrained, B = 0) LoRA r=16 model on all 7 projections, on a copy of tiny_model. Read only."""
    from unsloth_course.backend import FastLanguageModel

    from unsloth_course.recipes import LORA_TARGETS

    model, _ = tiny_model
    return FastLanguageModel.get_peft_model(copy.deepcopy(model), r=16, target_modules=list(LORA_TARGETS))


@pytest.fixture
def hub_cache_clear():
    """hub_available() is cached per process: clear it around tests that change the environment."""
    from unsloth_course.hub import hub_available

    hub_available.cache_clear()
    yield
    hub_available.cache_clear()
