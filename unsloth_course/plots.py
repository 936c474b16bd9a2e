"""Plots of what the trainer logged: curves after training, and a live curve while it trains."""

from __future__ import annotations

import time
from collections.abc import Sequence

import unsloth_course.backend  # noqa: F401  (Unsloth before transformers: see backend)

import matplotlib.pyplot as plt
from transformers import TrainerCallback

from unsloth_course.measurement import losses


def plot_metrics(log_history: Sequence[dict], keys: Sequence[str] = ("loss",), title: str = "Training",
                 ax=None):
    """One line per logged key over steps (from trainer.state.log_history); returns the figure."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    for key in keys:
        points = losses(log_history, key)
        if points:
            ax.plot(*zip(*points), marker=".", label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(keys) > 1:
        ax.legend()
    return fig or ax.figure


def plot_loss(log_history: Sequence[dict], title: str = "Training loss"):
    return plot_metrics(log_history, ("loss",), title)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # present wherever a notebook runs; optional in a terminal
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ in ("ZMQInteractiveShell", "Shell")


def live_loss_callback(keys: Sequence[str] = ("loss",), min_interval_s: float = 3.0):
    """A TrainerCallback that redraws the loss curve while training (in notebooks; a no-op in terminals).

    It redraws at most every `min_interval_s` seconds, and at the end: drawing costs time that would
    otherwise show up as lower tokens/s.
    """
    class LiveLossPlot(TrainerCallback):
        def __init__(self) -> None:
            self.handle = None
            self.last_draw = 0.0

        def _draw(self, state) -> None:
            from IPython.display import display  # only called in a notebook (see _in_notebook)

            fig = plot_metrics(state.log_history, keys, f"live: step {state.global_step}/{state.max_steps}")
            if self.handle is None:
                self.handle = display(fig, display_id=True)
            else:
                self.handle.update(fig)
            plt.close(fig)
            self.last_draw = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if _in_notebook() and time.monotonic() - self.last_draw >= min_interval_s:
                self._draw(state)

        def on_train_end(self, args, state, control, **kwargs):
            if _in_notebook():
                self._draw(state)

    return LiveLossPlot()
