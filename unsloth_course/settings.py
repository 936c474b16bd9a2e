"""Switches read from the environment (UNSLOTH_COURSE_QUICK, UNSLOTH_COURSE_EMULATE_T4, ...)."""

from __future__ import annotations

import os

TRUE_VALUES = ("1", "true", "yes", "on")


def env_flag(name: str, default: bool = False) -> bool:
    """True when the variable is set to 1/true/yes/on (any case); 0 or anything else is False; unset or empty: default."""
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value in TRUE_VALUES
