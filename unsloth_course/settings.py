"""Switches read from the environment (UNSLOTH_COURSE_QUICK, UNSLOTH_COURSE_EMULATE_T4, ...)."""

from __future__ import annotations

import os

TRUE_VALUES = ("1", "true", "yes", "on")


def env_flag(name: str) -> bool:
    """True when the variable is set to 1/true/yes/on (any case); unset, empty, 0 or anything else is False."""
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES
