"""Seeded train/eval splits shared by the loaders, the notebooks and the command line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import Dataset, DatasetDict

from unsloth_course.data.decontamination import decontaminate, prompt_columns, row_text


def split_train_eval(dataset: Dataset, n_eval: int, seed: int = 3407) -> DatasetDict:
    """Shuffle with `seed` and hold out `n_eval` rows: DatasetDict with "train" and "test"."""
    if n_eval < 1 or n_eval >= len(dataset):
        raise ValueError(
            f"split_train_eval: n_eval must be between 1 and {len(dataset) - 1} "
            f"for a dataset of {len(dataset)} rows, got {n_eval}"
        )
    return dataset.train_test_split(test_size=n_eval, shuffle=True, seed=seed)


def held_out_split(dataset: Dataset, n_eval: int, seed: int = 3407, fixed_prompts: Sequence[Any] = (),
                   columns: Sequence[str] | None = None) -> tuple[Dataset, Dataset]:
    """(training rows, held-out rows): `n_eval` rows set aside that training never sees, and training rows that
    repeat one of their prompts or a fixed evaluation prompt (exactly or nearly: data.decontaminate) removed.

    columns: the columns holding a row's prompt (default: instruction + input, question, prompt or text)."""
    split = split_train_eval(dataset, n_eval, seed)
    columns = prompt_columns(split["test"], columns)
    eval_prompts = [*fixed_prompts, *(row_text(row, columns) for row in split["test"])]
    train, _ = decontaminate(split["train"], eval_prompts, columns)
    print(f"{len(train):,} training rows, {len(split['test']):,} held-out rows (never trained on)")
    return train, split["test"]
