"""Datasets for every notebook: the Hub (or its cache) when it can be used, your own files, or our own
deterministic rows; every loader prints where its rows came from and source_of(data) returns it."""

from unsloth_course.data.cpt import (
    CODE_COLUMN,
    CODE_CONFIG,
    CODE_DATASET,
    MIN_PROSE_CHARS,
    add_eos,
    code_char_limit,
    code_completion_prompts,
    is_prose,
    load_general_prose,
    load_python_code,
    stdlib_functions,
    token_lengths,
)
from unsloth_course.data.decontamination import decontaminate, find_contaminated, is_near_duplicate
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
from unsloth_course.data.sources import (
    LOCAL_FORMATS,
    DataSourceError,
    Texts,
    check_source,
    parse_source,
    source_of,
)
from unsloth_course.data.split import held_out_split, split_train_eval
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
    "DataSourceError",
    "LOCAL_FORMATS",
    "MIN_PROSE_CHARS",
    "ORCA_DPO_DATASET",
    "SYSTEM_PROMPT",
    "TEMPLATES",
    "add_eos",
    "alpaca_prompt",
    "code_completion_prompts",
    "decontaminate",
    "check_source",
    "code_char_limit",
    "drop_blank_rows",
    "drop_identical_pairs",
    "find_contaminated",
    "format_alpaca",
    "format_reasoning_answer",
    "generate_dpo_rows",
    "generate_math_problems",
    "generate_sft_rows",
    "is_near_duplicate",
    "is_prose",
    "load_alpaca",
    "load_general_prose",
    "load_math_problems",
    "load_orca_dpo",
    "load_python_code",
    "render_chat",
    "render_chat_text",
    "render_example",
    "report_dpo_lengths",
    "report_sft_lengths",
    "parse_source",
    "row_to_messages",
    "held_out_split",
    "source_of",
    "split_train_eval",
    "stdlib_functions",
    "Texts",
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
    messages_to_prompt_completion,
    split_trained_tokens,
    to_prompt_completion,
)

__all__ += [
    "filter_long_prompts",
    "messages_to_prompt_completion",
    "split_trained_tokens",
    "to_prompt_completion",
]
