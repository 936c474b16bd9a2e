"""Check a dataset's columns and values before any training starts."""

from __future__ import annotations

from datasets import Dataset


def _type_names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(t.__name__ for t in types)


def _has_type(value: object, expected: type | tuple[type, ...]) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:  # bool is an int subclass, but True is no answer
        return False
    return isinstance(value, types)


def _is_blank(value: object) -> bool:
    return isinstance(value, str) and not value.strip()


def validate_rows(
    dataset: Dataset,
    schema: dict[str, type | tuple[type, ...]],
    name: str,
    allow_empty: tuple[str, ...] = (),
) -> None:
    """Raise ValueError naming the dataset, row and column of the first problem found.

    Problems: a missing column, zero rows, a None value, an empty or whitespace-only string
    (allowed for columns in `allow_empty`), a value of the wrong type.
    """
    expected_columns = ", ".join(schema)
    for column in schema:
        if column not in dataset.column_names:
            raise ValueError(
                f"column {column!r} missing in the {name} dataset; expected columns {expected_columns}"
            )
    if len(dataset) == 0:
        raise ValueError(f"the {name} dataset has 0 rows; expected columns {expected_columns}")
    columns = list(schema)
    row_index = 0
    for batch in dataset.select_columns(columns).iter(batch_size=1000):
        for offset in range(len(batch[columns[0]])):
            for column in columns:
                value = batch[column][offset]
                where = f"row {row_index + offset} of the {name} dataset: column {column!r}"
                if value is None:
                    raise ValueError(f"{where} is None")
                if _is_blank(value) and column not in allow_empty:
                    raise ValueError(f"{where} is empty")
                if not _has_type(value, schema[column]):
                    raise ValueError(
                        f"{where} should be {_type_names(schema[column])}, got {type(value).__name__}"
                    )
        row_index += len(batch[columns[0]])


def drop_blank_rows(dataset: Dataset, columns: tuple[str, ...]) -> tuple[Dataset, int]:
    """Drop rows whose `columns` hold None or blank strings (for Hub data); return (kept, n_dropped)."""

    def keep(row: dict) -> bool:
        return all(row[c] is not None and not _is_blank(row[c]) for c in columns)

    kept = dataset.filter(keep)
    return kept, len(dataset) - len(kept)
