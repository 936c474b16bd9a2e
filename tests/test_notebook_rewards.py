"""Notebook 4 defines its reward functions in a cell for the learner to read and change; the library keeps the
same rewards for `unsloth-course run grpo`. These tests hold the two to the same behaviour on shared hostile,
random and very long completions."""

import re
import time
from pathlib import Path

import pytest
from test_rewards import ADVERSARIAL, GOOD, HOSTILE, NOT_A_STATED_ANSWER, SLOPPY, WRONG, conv, random_texts

from unsloth_course import rewards

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "colab4_grpo_reasoning_model.py"
CELL = re.compile(r'^# %% tags=\["reward-functions"\]\n(.*?)(?=^# %%)', re.S | re.M)


def notebook_rewards() -> dict:
    """The notebook's reward cell, run in a fresh namespace (project code, not model text)."""
    match = CELL.search(NOTEBOOK.read_text(encoding="utf-8"))
    assert match, f"{NOTEBOOK.name} has no cell tagged reward-functions"
    namespace: dict = {}
    exec(compile(match.group(1), str(NOTEBOOK), "exec"), namespace)  # noqa: S102
    return {fn.__name__: fn for fn in namespace["REWARDS"]}


def test_the_notebook_defines_the_library_rewards_in_the_same_order():
    assert list(notebook_rewards()) == [fn.__name__ for fn in rewards.DEFAULT_REWARDS]


def texts_to_compare() -> list:
    wrapped = [f"<reasoning>\nthinking\n</reasoning>\n<answer>\n{a}\n</answer>" for a in NOT_A_STATED_ANSWER]
    plain = [*HOSTILE, *wrapped, *random_texts(1500), GOOD, WRONG, SLOPPY, ""]
    return plain + [conv(text) for text in plain[:300]]


@pytest.mark.parametrize("name", [fn.__name__ for fn in rewards.DEFAULT_REWARDS])
def test_notebook_reward_equals_the_library_on_shared_completions(name):
    mine, library = notebook_rewards()[name], getattr(rewards, name)
    completions = texts_to_compare()
    answers = ["42"] * len(completions)
    assert mine(None, completions, answer=answers) == library(None, completions, answer=answers)


@pytest.mark.parametrize("kind", list(ADVERSARIAL))
def test_notebook_rewards_are_linear_on_long_input(kind):
    text = ADVERSARIAL[kind](1_000_000)
    for name, fn in notebook_rewards().items():
        started = time.perf_counter()
        mine = fn(None, [text], answer=["42"])
        assert time.perf_counter() - started < 0.25, f"{name} on 1 MB of {kind}"
        assert mine == getattr(rewards, name)(None, [text], answer=["42"]), name
