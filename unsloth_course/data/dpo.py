"""Preference pairs for DPO: Intel/orca_dpo_pairs, or our own pairs when offline."""

from __future__ import annotations

from datasets import Dataset, load_dataset

from unsloth_course.data.generators import generate_dpo_rows, try_hub
from unsloth_course.data.validation import drop_blank_rows, drop_identical_pairs, validate_rows

ORCA_DPO_DATASET = "Intel/orca_dpo_pairs"
DPO_SCHEMA: dict[str, type] = {"system": str, "question": str, "chosen": str, "rejected": str}


def load_orca_dpo(n_rows: int | None = None, seed: int = 3407) -> Dataset:
    """Rows with system, question, chosen, rejected (system may be "")."""
    if n_rows is not None and n_rows < 1:
        raise ValueError(f"load_orca_dpo: n_rows must be at least 1 or None, got {n_rows}")
    hub_rows, reason = try_hub(ORCA_DPO_DATASET, lambda: load_dataset(ORCA_DPO_DATASET, split="train"))
    if hub_rows is not None:
        dataset = hub_rows.select_columns(list(DPO_SCHEMA))
        dataset, dropped = drop_blank_rows(dataset, ("question", "chosen", "rejected"))
        if n_rows is not None:
            dataset = dataset.shuffle(seed=seed).select(range(min(n_rows, len(dataset))))
        note = f"; {dropped} blank row{'s' * (dropped != 1)} dropped" if dropped else ""
        print(f"DPO data: {len(dataset)} rows from {ORCA_DPO_DATASET} (Hub{note})")
    else:
        dataset = Dataset.from_list(generate_dpo_rows(n=n_rows or 400, seed=seed))
        print(
            f"DPO data: {len(dataset)} rows generated offline by unsloth_course "
            f"({reason}; {ORCA_DPO_DATASET} not used)"
        )
    validate_rows(dataset, DPO_SCHEMA, "DPO", allow_empty=("system",))
    return dataset


def to_dpo_conversations(dataset: Dataset) -> Dataset:
    """TRL's conversational preference form: prompt (system if any, user), chosen and rejected replies.

    Pairs whose chosen and rejected answers are identical after stripping prefer nothing: they are dropped,
    with their count and first row numbers (ValueError if none is left; see drop_identical_pairs).
    """
    validate_rows(dataset, DPO_SCHEMA, "DPO", allow_empty=("system",))
    dataset = drop_identical_pairs(dataset, "DPO")

    def convert(row: dict) -> dict:
        system = [{"role": "system", "content": row["system"]}] if row["system"].strip() else []
        return {
            "prompt": system + [{"role": "user", "content": row["question"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }

    return dataset.map(convert, remove_columns=dataset.column_names)
