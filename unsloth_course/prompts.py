"""Fixed prompts the notebooks and the CLI answer before and after training, so runs compare."""

from __future__ import annotations

SUMMARY_PARAGRAPH = (
    "The city council met on Tuesday to discuss the new bike lanes. Supporters said the lanes would make "
    "streets safer and cut traffic, while some shop owners worried about losing parking spaces. After two "
    "hours of debate, the council voted to build the lanes on three main streets next spring and to review "
    "the effect on local businesses after one year."
)

SFT_PROMPTS = (
    "Write a Python function that returns the factorial of a non-negative integer n.",
    "What is the capital of France?",
    f"Summarize the following paragraph in one sentence.\n\n{SUMMARY_PARAGRAPH}",
)

CODE_HEADERS = (
    'def is_palindrome(text: str) -> bool:\n    """Return True if text reads the same backwards, ignoring case."""\n',
    'def chunked(items: list, size: int) -> list:\n    """Split items into lists of at most size elements."""\n',
    'def read_json(path):\n    """Load and return the JSON document stored at path."""\n',
)
