"""Conversions to the dataset forms TRL trainers take, and small helpers the evaluations share."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from unsloth_course.data.sft import row_to_messages
from unsloth_course.data.validation import validate_messages, validate_rows

MESSAGES_SCHEMA = {"messages": list}


def to_prompt_completion(dataset: Dataset) -> Dataset:
    """Alpaca rows -> conversational prompt/completion pairs: TRL renders them with the chat template and
    computes the loss on the completion (the answer, closed by the template's EOS) only."""
    validate_rows(dataset, {"instruction": str, "input": str, "output": str}, "SFT", allow_empty=("input",))

    def convert(row: dict) -> dict:
        user, assistant = row_to_messages(row)
        return {"prompt": [user], "completion": [assistant]}

    return dataset.map(convert, remove_columns=dataset.column_names)


def messages_to_prompt_completion(dataset: Dataset) -> Dataset:
    """A "messages" column -> prompt (every turn before the last) and completion (the last assistant turn)."""
    validate_rows(dataset, MESSAGES_SCHEMA, "chat")
    validate_messages(dataset, "messages", "chat")
    for index, row in enumerate(dataset):
        if row["messages"][-1]["role"] != "assistant":
            raise ValueError(f"row {index} of the chat dataset: column 'messages' must end with an assistant turn")
    return dataset.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                       remove_columns=dataset.column_names)


def prompt_token_count(tokenizer: Any, prompt: list[dict]) -> int:
    """Tokens in the templated prompt (the text the model reads before it answers)."""
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def filter_long_prompts(dataset: Dataset, tokenizer: Any, max_prompt_length: int) -> Dataset:
    """Drop rows whose templated prompt exceeds `max_prompt_length` tokens (TRL 1.x has no
    max_prompt_length: a truncated prompt would train on a question the model never fully saw)."""
    if max_prompt_length <= 0:
        raise ValueError(f"max_prompt_length={max_prompt_length} must be > 0")
    kept = dataset.filter(lambda row: prompt_token_count(tokenizer, row["prompt"]) <= max_prompt_length)
    dropped = len(dataset) - len(kept)
    if dropped:
        print(f"dropped {dropped} of {len(dataset)} rows whose prompt is longer than {max_prompt_length} tokens")
    if not len(kept):
        raise ValueError(f"every prompt is longer than max_prompt_length={max_prompt_length} tokens")
    return kept


def split_trained_tokens(example: dict, tokenizer: Any) -> tuple[str, str] | None:
    """(prompt text, trained text) of one tokenized training example, from its -100-masked `labels` or its
    `completion_mask`; None when the trainer builds the mask later, in its collator."""
    ids = example["input_ids"]
    if "labels" in example:
        trained = [label != -100 for label in example["labels"]]
    elif "completion_mask" in example:
        trained = [bool(m) for m in example["completion_mask"]]
    else:
        return None
    prompt = tokenizer.decode([t for t, keep in zip(ids, trained) if not keep])
    answer = tokenizer.decode([t for t, keep in zip(ids, trained) if keep])
    return prompt, answer
