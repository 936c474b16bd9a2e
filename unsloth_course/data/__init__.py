"""Datasets for every notebook: the Hub when reachable, our own deterministic rows otherwise."""

from unsloth_course.data.cpt import (
    CODE_COLUMN,
    CODE_CONFIG,
    CODE_DATASET,
    add_eos,
    load_python_code,
    stdlib_functions,
    token_lengths,
)
from unsloth_course.data.dpo import ORCA_DPO_DATASET, load_orca_dpo, to_dpo_conversations
from unsloth_course.data.generators import COUNTRY_CAPITALS, generate_dpo_rows, generate_sft_rows
from unsloth_course.data.grpo import (
    SYSTEM_PROMPT,
    format_reasoning_answer,
    generate_math_problems,
    load_math_problems,
    to_format_warmup,
)
from unsloth_course.data.sft import (
    ALPACA_DATASET,
    ALPACA_TEMPLATE,
    ALPACA_TEMPLATE_NO_INPUT,
    TEMPLATES,
    alpaca_prompt,
    format_alpaca,
    load_alpaca,
    render_chat,
    render_chat_text,
    render_example,
    row_to_messages,
    to_alpaca_text,
    to_chat_messages,
)
from unsloth_course.data.split import split_train_eval
from unsloth_course.data.validation import (
    drop_blank_rows,
    drop_identical_pairs,
    report_dpo_lengths,
    report_sft_lengths,
    validate_messages,
    validate_rows,
)

__all__ = [
    "ALPACA_DATASET",
    "ALPACA_TEMPLATE",
    "ALPACA_TEMPLATE_NO_INPUT",
    "CODE_COLUMN",
    "CODE_CONFIG",
    "CODE_DATASET",
    "COUNTRY_CAPITALS",
    "ORCA_DPO_DATASET",
    "SYSTEM_PROMPT",
    "TEMPLATES",
    "add_eos",
    "alpaca_prompt",
    "drop_blank_rows",
    "drop_identical_pairs",
    "format_alpaca",
    "format_reasoning_answer",
    "generate_dpo_rows",
    "generate_math_problems",
    "generate_sft_rows",
    "load_alpaca",
    "load_math_problems",
    "load_orca_dpo",
    "load_python_code",
    "render_chat",
    "render_chat_text",
    "render_example",
    "report_dpo_lengths",
    "report_sft_lengths",
    "row_to_messages",
    "split_train_eval",
    "stdlib_functions",
    "to_alpaca_text",
    "to_chat_messages",
    "to_dpo_conversations",
    "to_format_warmup",
    "token_lengths",
    "validate_messages",
    "validate_rows",
]
from unsloth_course.data.formats import (
    filter_long_prompts,
    general_text_samples,
    messages_to_prompt_completion,
    split_trained_tokens,
    to_prompt_completion,
)

__all__ += [
    "filter_long_prompts",
    "general_text_samples",
    "messages_to_prompt_completion",
    "split_trained_tokens",
    "to_prompt_completion",
]
