"""Instruction data for supervised fine-tuning: Alpaca rows, Alpaca prompts and chat templates."""

from __future__ import annotations

from typing import Any

from datasets import Dataset, load_dataset
from jinja2.sandbox import ImmutableSandboxedEnvironment

from unsloth_course.data.generators import generate_sft_rows, try_hub
from unsloth_course.data.validation import drop_blank_rows, validate_messages, validate_rows

ALPACA_DATASET = "yahma/alpaca-cleaned"
ALPACA_SCHEMA: dict[str, type] = {"instruction": str, "input": str, "output": str}
MESSAGES_SCHEMA: dict[str, type] = {"messages": list}

ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}"
)
ALPACA_TEMPLATE_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n{output}"
)

# Jinja chat templates in the form tokenizers use (`messages`, `add_generation_prompt`).
TEMPLATES: dict[str, str] = {
    "chatml": (  # SmolLM2's own format; <|im_end|> is its EOS token
        "{% for message in messages %}"
        "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "llama3": (
        "<|begin_of_text|>"
        "{% for message in messages %}"
        "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
        "{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
}
STYLES = ("alpaca", *TEMPLATES)
_JINJA = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders them


def load_alpaca(n_rows: int | None = None, seed: int = 3407) -> Dataset:
    """Alpaca-style rows (instruction, input, output): yahma/alpaca-cleaned, or our own when offline."""
    if n_rows is not None and n_rows < 1:
        raise ValueError(f"load_alpaca: n_rows must be at least 1 or None, got {n_rows}")
    hub_rows, reason = try_hub(ALPACA_DATASET, lambda: load_dataset(ALPACA_DATASET, split="train"))
    if hub_rows is not None:
        dataset, dropped = drop_blank_rows(hub_rows, ("instruction", "output"))
        if n_rows is not None:
            dataset = dataset.shuffle(seed=seed).select(range(min(n_rows, len(dataset))))
        note = f"; {dropped} blank row{'s' * (dropped != 1)} dropped" if dropped else ""
        print(f"SFT data: {len(dataset)} rows from {ALPACA_DATASET} (Hub{note})")
    else:
        dataset = Dataset.from_list(generate_sft_rows(n=n_rows or 600, seed=seed))
        print(
            f"SFT data: {len(dataset)} rows generated offline by unsloth_course "
            f"({reason}; {ALPACA_DATASET} not used)"
        )
    validate_rows(dataset, ALPACA_SCHEMA, "SFT", allow_empty=("input",))
    return dataset


def alpaca_prompt(row: dict) -> str:
    """The Alpaca prompt up to and including "### Response:\\n", without the answer (for generation)."""
    template = ALPACA_TEMPLATE if row.get("input", "").strip() else ALPACA_TEMPLATE_NO_INPUT
    return template.format(instruction=row["instruction"], input=row.get("input", ""), output="")


def format_alpaca(row: dict, eos_token: str) -> str:
    """One training text: the Alpaca prompt, the answer, then `eos_token` so the model learns to stop."""
    return alpaca_prompt(row) + row["output"] + eos_token


def to_alpaca_text(dataset: Dataset, eos_token: str) -> Dataset:
    """Add a "text" column with each row in the Alpaca format, ending in `eos_token`."""
    if not eos_token:
        raise ValueError(
            "to_alpaca_text: eos_token is empty; pass tokenizer.eos_token so generation can stop"
        )
    validate_rows(dataset, ALPACA_SCHEMA, "SFT", allow_empty=("input",))
    return dataset.map(lambda row: {"text": format_alpaca(row, eos_token)})


def _user_content(row: dict) -> str:
    extra = row.get("input", "")
    return f"{row['instruction']}\n\n{extra}" if extra.strip() else row["instruction"]


def row_to_messages(row: dict) -> list[dict[str, str]]:
    """One Alpaca row as a user turn and an assistant turn."""
    return [{"role": "user", "content": _user_content(row)}, {"role": "assistant", "content": row["output"]}]


def to_chat_messages(dataset: Dataset) -> Dataset:
    """Replace the Alpaca columns with a "messages" column (user, assistant)."""
    validate_rows(dataset, ALPACA_SCHEMA, "SFT", allow_empty=("input",))
    return dataset.map(lambda row: {"messages": row_to_messages(row)}, remove_columns=dataset.column_names)


def render_chat_text(dataset: Dataset, tokenizer: Any) -> Dataset:
    """Add "text": the messages rendered by the tokenizer's chat template (ChatML ends each turn in EOS)."""
    validate_rows(dataset, MESSAGES_SCHEMA, "chat")
    validate_messages(dataset, "messages", "chat")
    return dataset.map(lambda row: {"text": tokenizer.apply_chat_template(row["messages"], tokenize=False)})


def render_chat(
    messages: list[dict[str, str]], style: str = "chatml", add_generation_prompt: bool = False
) -> str:
    """Render messages with one of TEMPLATES, the way a tokenizer's apply_chat_template would."""
    if style not in TEMPLATES:
        raise ValueError(f"render_chat: unknown chat template {style!r}; allowed: {', '.join(TEMPLATES)}")
    template = _JINJA.from_string(TEMPLATES[style])
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt)


def render_example(row: dict, style: str, eos_token: str = "<|im_end|>") -> str:
    """One Alpaca row shown in the "alpaca", "chatml" or "llama3" format."""
    if style not in STYLES:
        raise ValueError(f"render_example: unknown style {style!r}; allowed styles: {', '.join(STYLES)}")
    if style == "alpaca":
        return format_alpaca(row, eos_token)
    return render_chat(row_to_messages(row), style)
