"""Check a dataset's columns and values before any training starts."""

from __future__ import annotations

from typing import Any

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


# ---------------------------------------------------------------- chat messages
CHAT_ROLES = ("system", "user", "assistant", "tool")


def message_problem(message: object, roles: tuple[str, ...] = CHAT_ROLES) -> str | None:
    """What is wrong with one chat message ({"role": ..., "content": ...}), or None."""
    if not isinstance(message, dict):
        return f"should be a dict with 'role' and 'content', got {type(message).__name__}"
    if "role" not in message or message["role"] is None:
        return "has no 'role'"
    if message["role"] not in roles:
        return f"role {message['role']!r} is not one of {', '.join(roles)}"
    if "content" not in message:
        return "has no 'content'"
    content = message["content"]
    if content is None:
        return "content is None"
    if not isinstance(content, str):
        return f"content should be str, got {type(content).__name__}"
    if not content.strip():
        return "content is empty"
    return None


def validate_messages(dataset: Dataset, columns: str | tuple[str, ...], name: str,
                      roles: tuple[str, ...] = CHAT_ROLES) -> None:
    """Raise ValueError naming the row, column, message index and problem of the first malformed chat message
    (a message without role, an unknown role, content that is None, not a string or empty; a column that is
    not a non-empty list of messages)."""
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    for column in columns:
        if column not in dataset.column_names:
            raise ValueError(f"column {column!r} missing in the {name} dataset; expected columns "
                             f"{', '.join(columns)}")
    for index, row in enumerate(dataset.select_columns(list(columns))):
        for column in columns:
            where = f"row {index} of the {name} dataset: column {column!r}"
            messages = row[column]
            if not isinstance(messages, list):
                raise ValueError(f"{where} should be a list of messages, got {type(messages).__name__}")
            if not messages:
                raise ValueError(f"{where} has no messages")
            for position, message in enumerate(messages):
                problem = message_problem(message, roles)
                if problem:
                    raise ValueError(f"{where}, message {position}: {problem}")


# ---------------------------------------------------------------- preference pairs
def _answer_text(value: object) -> str:
    """An answer as compared for identity: a string, or a list of messages' roles and contents, stripped."""
    if isinstance(value, list):
        return "\n".join(f"{m.get('role')}: {str(m.get('content') or '').strip()}" if isinstance(m, dict)
                         else str(m).strip() for m in value)
    return str(value).strip()


def identical_pairs(dataset: Dataset, chosen: str = "chosen", rejected: str = "rejected") -> list[int]:
    """Rows whose chosen and rejected answers are the same after stripping whitespace: they prefer nothing."""
    return [i for i, (a, b) in enumerate(zip(dataset[chosen], dataset[rejected]))
            if _answer_text(a) == _answer_text(b)]


def drop_identical_pairs(dataset: Dataset, name: str = "DPO", chosen: str = "chosen",
                         rejected: str = "rejected") -> Dataset:
    """Drop preference pairs that prefer nothing (chosen == rejected after stripping), saying how many and the
    first row numbers; ValueError if no pair is left.

    Dropped rather than refused: public preference sets contain a few such pairs (a copy of the same answer),
    which teach DPO nothing (their loss is a constant log 2 with zero gradient) but do not make the rest wrong.
    """
    same = identical_pairs(dataset, chosen, rejected)
    if not same:
        return dataset
    shown = ", ".join(map(str, same[:5])) + (", ..." if len(same) > 5 else "")
    if len(same) == len(dataset):
        raise ValueError(f"every row of the {name} dataset ({len(dataset)}) has the same {chosen!r} and "
                         f"{rejected!r} answer after stripping whitespace (rows {shown}): no pair prefers anything")
    print(f"{name} data: dropped {len(same)} of {len(dataset)} pairs whose {chosen!r} and {rejected!r} answers are "
          f"identical after stripping whitespace (rows {shown}): they prefer nothing")
    keep = set(range(len(dataset))) - set(same)
    return dataset.select(sorted(keep))


# ---------------------------------------------------------------- rows TRL cuts or drops for length
def _token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _render(tokenizer: Any, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def sft_token_lengths(dataset: Dataset, tokenizer: Any, text_field: str = "text") -> tuple[list[int], list[int]]:
    """(tokens per row, prompt tokens per row) as TRL's SFTTrainer tokenizes the row: conversational
    prompt/completion (the prompt is not trained), "messages", or raw text (prompt 0)."""
    columns = dataset.column_names
    if "prompt" in columns and "completion" in columns:
        rows = list(dataset.select_columns(["prompt", "completion"]))
        conversational = bool(rows) and isinstance(rows[0]["prompt"], list)
        if conversational:
            full = [_render(tokenizer, r["prompt"] + r["completion"]) for r in rows]
            prompts = [_render(tokenizer, r["prompt"], generation_prompt=True) for r in rows]
        else:
            full = [r["prompt"] + r["completion"] for r in rows]
            prompts = [r["prompt"] for r in rows]
        return _token_counts(tokenizer, full), _token_counts(tokenizer, prompts)
    if "messages" in columns:
        full = [_render(tokenizer, messages) for messages in dataset["messages"]]
        return _token_counts(tokenizer, full), [0] * len(full)
    if text_field in columns:
        return _token_counts(tokenizer, list(dataset[text_field])), [0] * len(dataset)
    raise ValueError(f"cannot count tokens: the dataset has none of prompt/completion, messages or {text_field!r} "
                     f"(columns: {', '.join(columns)})")


def report_sft_lengths(dataset: Dataset, tokenizer: Any, max_length: int, packing: bool = False,
                       packing_strategy: str = "bfd", name: str = "SFT", text_field: str = "text") -> dict:
    """Say how many rows TRL's SFTTrainer (1.15 and 1.16) will cut or drop for `max_length`, and why.

    Without packing, a row longer than max_length keeps its first max_length tokens (the end of its answer is
    not trained) and a row whose prompt alone fills max_length has no trained token left: TRL drops it. With
    "bfd" packing, long rows are cut the same way and stay (one with no answer token left trains nothing);
    "wrapped" and "bfd_split" packing cut nothing (a long row continues in another packed sequence). Returns the
    counts.
    """
    lengths, prompts = sft_token_lengths(dataset, tokenizer, text_field)
    counts = {"rows": len(lengths), "cut": 0, "no_trained_token": 0, "dropped": 0, "max_length": max_length}
    if packing and packing_strategy in ("wrapped", "bfd_split"):  # long rows continue in other packed rows
        return counts
    cut = [i for i, n in enumerate(lengths) if n > max_length]
    empty = [i for i in cut if prompts[i] >= max_length]
    counts.update(cut=len(cut), no_trained_token=len(empty), dropped=0 if packing else len(empty))
    if cut:
        rows = ", ".join(map(str, cut[:5])) + (", ..." if len(cut) > 5 else "")
        tail = ""
        if empty:
            fate = "they train nothing" if packing else "TRL drops them"
            tail = f"; {len(empty)} of them keep no answer token (the prompt fills max_length): {fate}"
        print(f"{name} data: {len(cut)} of {len(lengths)} rows are longer than max_length={max_length} tokens "
              f"(rows {rows}, longest {max(lengths[i] for i in cut)}): TRL keeps their first {max_length} tokens, "
              f"so the end of their answer is not trained{tail}")
    return counts


def report_dpo_lengths(dataset: Dataset, tokenizer: Any, max_length: int, name: str = "DPO") -> dict:
    """Say how many pairs TRL's DPOTrainer (1.15 and 1.16) will cut or drop for `max_length`, and why.

    TRL drops a pair whose templated prompt alone fills max_length (truncation_mode="keep_start"), and its
    collator cuts prompt+chosen and prompt+rejected to their first max_length tokens (the ends of the answers
    then do not count in the preference). TRL 1.x has no max_prompt_length: data.filter_long_prompts drops long
    prompts beforehand. Returns the counts.
    """
    rows = list(dataset.select_columns(["prompt", "chosen", "rejected"]))
    conversational = bool(rows) and isinstance(rows[0]["prompt"], list)
    if conversational:
        prompt_texts = [_render(tokenizer, r["prompt"], generation_prompt=True) for r in rows]
        chosen = [_render(tokenizer, r["prompt"] + r["chosen"]) for r in rows]
        rejected = [_render(tokenizer, r["prompt"] + r["rejected"]) for r in rows]
    else:
        prompt_texts = [r["prompt"] for r in rows]
        chosen = [r["prompt"] + r["chosen"] for r in rows]
        rejected = [r["prompt"] + r["rejected"] for r in rows]
    prompts = _token_counts(tokenizer, prompt_texts)
    longest = [max(a, b) for a, b in zip(_token_counts(tokenizer, chosen), _token_counts(tokenizer, rejected))]
    dropped = [i for i, n in enumerate(prompts) if n >= max_length]
    cut = [i for i, n in enumerate(longest) if n > max_length and prompts[i] < max_length]
    counts = {"rows": len(rows), "cut": len(cut), "dropped": len(dropped), "max_length": max_length}
    if dropped:
        print(f"{name} data: {len(dropped)} of {len(rows)} pairs have a prompt of max_length={max_length} tokens "
              f"or more (rows {', '.join(map(str, dropped[:5]))}{', ...' if len(dropped) > 5 else ''}): TRL "
              "drops them (no answer token would be left)")
    if cut:
        print(f"{name} data: {len(cut)} of {len(rows)} pairs are longer than max_length={max_length} tokens "
              f"(prompt + chosen or rejected; rows {', '.join(map(str, cut[:5]))}{', ...' if len(cut) > 5 else ''}"
              f", longest {max(longest[i] for i in cut)}): TRL's collator keeps their first {max_length} tokens, "
              "so the end of those answers does not count in the preference")
    return counts
