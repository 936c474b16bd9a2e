"""Seeded train/eval split shared by the loaders."""

from __future__ import annotations

from datasets import Dataset, DatasetDict


def split_train_eval(dataset: Dataset, n_eval: int, seed: int = 3407) -> DatasetDict:
    """Shuffle with `seed` and hold out `n_eval` rows: DatasetDict with "train" and "test"."""
    if n_eval < 1 or n_eval >= len(dataset):
        raise ValueError(
            f"split_train_eval: n_eval must be between 1 and {len(dataset) - 1} "
            f"for a dataset of {len(dataset)} rows, got {n_eval}"
        )
    return dataset.train_test_split(test_size=n_eval, shuffle=True, seed=seed)
