"""Reward functions for GRPO on integer math problems (notebook 4).

The system prompt asks the model to answer in this format::

    <reasoning>
    ...
    </reasoning>
    <answer>
    42
    </answer>

Every reward has TRL ``GRPOTrainer``'s signature ``fn(prompts, completions, **kwargs) -> list[float]``.
TRL passes one completion per generated sample: a plain string for a standard (text) dataset, or a list
of messages such as ``[{"role": "assistant", "content": "..."}]`` for a conversational one;
:func:`completion_text` accepts both. Dataset columns (here ``answer``) arrive as keyword lists aligned
with ``completions``, along with extras (``completion_ids``, ``trainer_state``, ``log_extra``, ...) that
``**kwargs`` absorbs.

The trainer sums the rewards (unweighted), so each function's maximum is its weight:

====================== ====== ==========================================================
reward                 max    meaning
====================== ====== ==========================================================
correctness_reward     2.0    the extracted answer equals the ground truth
int_reward             0.5    the extracted answer is an integer
strict_format_reward   0.5    the whole completion is exactly the format above
soft_format_reward     0.5    a reasoning block is followed by an answer block
xml_count_reward       0.5    0.125 per well-placed tag, minus a trailing-text penalty
====================== ====== ==========================================================

Model text is read with string methods and a few regular expressions; nothing is ever evaluated. Every
check takes time linear in the completion's length (no pattern can backtrack quadratically): adversarial
completions of 1 MB (thousands of unclosed tags, runs of digits or whitespace) score in milliseconds.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "CORRECTNESS_REWARD",
    "DEFAULT_REWARDS",
    "INT_REWARD",
    "MAX_ANSWER_CHARS",
    "MAX_TOTAL_REWARD",
    "REWARD_WEIGHTS",
    "SOFT_FORMAT_REWARD",
    "STRICT_FORMAT_REWARD",
    "XML_TAG_REWARD",
    "XML_TRAILING_PENALTY_CAP",
    "XML_TRAILING_PENALTY_PER_CHAR",
    "answer_int",
    "completion_text",
    "correctness_reward",
    "extract_answer",
    "int_reward",
    "parse_int",
    "score_completions",
    "soft_format_reward",
    "strict_format_reward",
    "xml_count_reward",
]

CORRECTNESS_REWARD = 2.0
INT_REWARD = 0.5
STRICT_FORMAT_REWARD = 0.5
SOFT_FORMAT_REWARD = 0.5
XML_TAG_REWARD = 0.125  # four tags -> 0.5 at best
XML_TRAILING_PENALTY_PER_CHAR = 0.001
XML_TRAILING_PENALTY_CAP = 0.5

RewardFunc = Callable[..., list[float]]

# ----------------------------------------------------------------------------------------------------------
# Text helpers
# ----------------------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Text of one message's ``content``: a string, None, or a list of parts (``{"type": "text", ...}``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return ""


def completion_text(completion: Any) -> str:
    """The text of one completion, in either of TRL's forms.

    A string is returned as is. A conversational completion (a list of messages) gives the contents of its
    assistant messages (or messages without a role), joined by newlines; a single message dict is accepted
    too. ``None`` content, an empty list, or anything unrecognised gives ``""``; it never raises.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        texts = [
            _content_text(message.get("content"))
            for message in completion
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant"
        ]
        return "\n".join(texts)
    return ""


_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"


def extract_answer(text: str) -> str | None:
    """The stripped content of the last complete ``<answer>...</answer>`` block, or None.

    Rule: find the last ``</answer>``, then the nearest ``<answer>`` before it. So with several answer
    blocks the LAST one counts (the model's final word), and a trailing unclosed ``<answer>`` is ignored
    in favour of the last closed block. Tags are matched exactly (lower case). None when there is no
    closed block; ``""`` for an empty block.
    """
    if not isinstance(text, str):
        return None
    end = text.rfind(_ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(_ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return text[start + len(_ANSWER_OPEN) : end].strip()


# The whole answer must be [LEAD-IN] NUMBER (see parse_int). NUMBER: a sign touching the digits, an optional
# "$", digits plain or grouped in thousands (1-3 leading digits, then groups of exactly 3, one separator
# kind), optionally a zero fraction (".0", ".00").
_INT_BODY = r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,3}(?:_[0-9]{3})+|[0-9]{1,3}(?: [0-9]{3})+|[0-9]+)"
_NUMBER = rf"(?P<sign>[+-]?)\$?(?P<int>{_INT_BODY})(?:\.(?P<frac>[0-9]+))?"
# LEAD-IN: "=", or a name (one letter, or "[the] [final] answer" / "[the] [final] result") then ":", "=",
# "is" or "is:"/"is =". An allow-list: any other word (not, wrong, minus, about, ...) makes it no answer.
_NAME = r"(?:[a-z]|(?:the\s+)?(?:final\s+)?(?:answer|result))"
_LEAD_IN = rf"(?:=\s*|{_NAME}(?:\s*[:=]\s*|\s+is\s*[:=]\s*|\s+is\s+))"
_ANSWER_RE = re.compile(rf"(?:{_LEAD_IN})?{_NUMBER}", re.IGNORECASE | re.ASCII)
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-"})  # MINUS SIGN, EN DASH (typographic minus)
_MEANING_CHANGING = ("<super>", "<sub>", "<fraction>")  # NFKC would turn "4²" into "42", "½" into "1⁄2"
_MAX_DIGITS = 1000  # far below Python's int-parsing limit; longer "numbers" are not answers
MAX_ANSWER_CHARS = 2000  # longer stripped answers are rejected unread (1,000 grouped digits take 1,333)


def _int_from_match(match: re.Match[str]) -> int | None:
    frac = match.group("frac")
    if frac is not None and frac.strip("0"):
        return None  # a real fraction such as 3.5
    digits = re.sub(r"[ ,_]", "", match.group("int"))
    if len(digits) > _MAX_DIGITS:
        return None
    value = int(digits)
    return -value if match.group("sign") == "-" else value


def parse_int(text: str | None) -> int | None:
    """The integer that an answer states, or None when it states anything else. Never evaluates anything.

    Normalisation: surrounding whitespace is dropped, and a text still longer than ``MAX_ANSWER_CHARS``
    (2,000) characters is rejected unread (bounded work per answer); Unicode NFKC (fullwidth digits and
    signs, no-break and thin spaces become ASCII); U+2212 MINUS SIGN and U+2013 EN DASH become ``-``;
    superscripts, subscripts and vulgar fractions are rejected outright (NFKC would change their
    meaning); one trailing ``.`` is dropped.

    Then the WHOLE text must be ``[LEAD-IN] NUMBER``, nothing before or after:

    - NUMBER: an optional ``+``/``-`` touching the digits, an optional ``$``, digits either plain or
      grouped in thousands by ``,`` / ``_`` / a single space ("1,234", "1_234", "1 234"; the grouping must
      be exact: "1,23,4" is rejected), and an optional all-zero fraction ("4.0" -> 4, "3.5" -> None).
    - LEAD-IN (optional, any letter case): ``=``, or a name followed by ``:``, ``=``, ``is``, ``is:`` or
      ``is =``, where the name is a single letter (a variable, "x = 42") or one of "answer", "result",
      each optionally preceded by "the" and/or "final" ("Answer: 7", "The final answer is -7.").

    So "42", "-1,234.", "$42", "x=-3" and "The answer is 42." give numbers, and everything else is None:
    negations and verdicts ("not 42", "42 is wrong", "The answer is not 42", "isn't 42", "no, 42"), any
    word before or after the number ("so the answer is 42", "about 42", "42 apples"), sign words ("minus 7"
    and "negative 7" are rejected, never read as 7: write "-7"), number words ("forty-two"), several
    numbers ("41 or 42", "41, 42"), expressions ("2+3", "6*7 = 42"), floats, exponents, hex and empty text.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if len(text) > MAX_ANSWER_CHARS:
        return None
    if any(unicodedata.decomposition(ch).startswith(_MEANING_CHANGING) for ch in text if ord(ch) > 127):
        return None
    s = unicodedata.normalize("NFKC", text).translate(_MINUS_SIGNS).strip()
    if s.endswith("."):
        s = s[:-1].rstrip()
    match = _ANSWER_RE.fullmatch(s)
    return _int_from_match(match) if match is not None else None


def answer_int(completion: Any) -> int | None:
    """The integer that a completion's ``<answer>`` block states, or None.

    ``parse_int(extract_answer(completion_text(completion)))``: a string or a conversational completion,
    the last closed answer block, then :func:`parse_int`'s rule ("<answer>42</answer>" -> 42,
    "<answer>not 42</answer>" -> None). The one step that the correctness and integer rewards share.
    """
    return parse_int(extract_answer(completion_text(completion)))


# ----------------------------------------------------------------------------------------------------------
# Reward functions
# ----------------------------------------------------------------------------------------------------------


def _texts(completions: Sequence[Any] | None) -> list[str]:
    return [completion_text(c) for c in (completions or [])]


def _per_completion(values: Any, n: int, name: str) -> list[Any]:
    """A dataset column aligned with the completions; a single (non-list) value is repeated n times."""
    if isinstance(values, (list, tuple)):
        if len(values) != n:
            raise ValueError(f"{name!r} has {len(values)} values for {n} completions")
        return list(values)
    return [values] * n


def _ground_truth(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    parsed = parse_int(str(value))
    if parsed is None:
        raise ValueError(f"ground-truth answer {value!r} is not an integer")
    return parsed


def correctness_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], answer: Any, **kwargs: Any
) -> list[float]:
    """``CORRECTNESS_REWARD`` (2.0) when the extracted answer states the ground-truth integer, else 0.0.

    "States" is :func:`parse_int`'s rule: the number and nothing that negates or changes it ("42" and
    "The answer is 42." count; "not 42", "42 is wrong" and "about 42" do not).

    ``answer`` is the dataset column: one value per completion (strings such as "42" or "-7"); a single
    value is used for every completion. A ground truth that is not an integer raises ValueError (a data
    bug); model text never raises.
    """
    stated = [answer_int(c) for c in (completions or [])]
    truths = [_ground_truth(a) for a in _per_completion(answer, len(stated), "answer")]
    return [CORRECTNESS_REWARD if s == truth else 0.0 for s, truth in zip(stated, truths, strict=True)]


def int_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """``INT_REWARD`` (0.5) when the extracted answer states an integer (right or wrong; see
    :func:`parse_int`), else 0.0."""
    return [INT_REWARD if answer_int(c) is not None else 0.0 for c in (completions or [])]


_REASONING_OPEN = "<reasoning>"
_REASONING_CLOSE = "</reasoning>"
_TAGS = (_REASONING_OPEN, _REASONING_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE)
_STRICT_MIDDLE = "\n</reasoning>\n<answer>\n"
# Literal start, then one whitespace run: runs after different matches are disjoint, so search is linear.
_SOFT_JOIN_RE = re.compile(r"</reasoning>\s*<answer>")


def _is_strict_format(text: str) -> bool:
    """``<reasoning>\\n A \\n</reasoning>\\n<answer>\\n B \\n</answer>[\\n]``, A and B free of tags.

    String methods only, linear time. Equivalent to fullmatching the DOTALL regular expression
    ``<reasoning>\\n(?:(?!TAG).)*?\\n</reasoning>\\n<answer>\\n(?:(?!TAG).)*?\\n</answer>\\n?`` with TAG =
    ``</?(?:reasoning|answer)>`` (the rule before, 0.1 s per MB): a tag holds no newline and every part
    around A and B ends or starts with one, so "A and B hold no tag" is "each tag occurs exactly once".
    """
    body = text[:-1] if text.endswith(_ANSWER_CLOSE + "\n") else text
    reasoning, middle, answer = body.partition(_STRICT_MIDDLE)
    return (
        bool(middle)
        and reasoning.startswith(_REASONING_OPEN + "\n")
        and answer.endswith("\n" + _ANSWER_CLOSE)
        and all(body.count(tag) == 1 for tag in _TAGS)
    )


def _has_soft_format(text: str) -> bool:
    """Whether ``<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>`` (DOTALL) occurs anywhere; linear time.

    Searching that pattern directly is quadratic (every ``<reasoning>`` restarts a scan to the end: 4 s
    on 100 kB of unclosed tags). Equivalent test: the first ``<reasoning>`` is the best start and the
    last ``</answer>`` the best end, so it suffices that the first ``</reasoning>\\s*<answer>`` after the
    first ``<reasoning>`` is followed by a ``</answer>``.
    """
    start = text.find(_REASONING_OPEN)
    if start < 0:
        return False
    join = _SOFT_JOIN_RE.search(text, start + len(_REASONING_OPEN))
    return join is not None and text.find(_ANSWER_CLOSE, join.end()) >= 0


def strict_format_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any
) -> list[float]:
    """``STRICT_FORMAT_REWARD`` (0.5) when the whole completion is exactly the format, else 0.0.

    The format is ``<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>`` and an optional final
    newline, where the two inner parts may not contain another reasoning/answer tag: nothing before or
    after, newlines exactly where shown, one block of each.
    """
    return [STRICT_FORMAT_REWARD if _is_strict_format(t) else 0.0 for t in _texts(completions)]


def soft_format_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any
) -> list[float]:
    """``SOFT_FORMAT_REWARD`` (0.5) when ``<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>`` occurs
    anywhere (DOTALL), whatever the newlines and surrounding text, else 0.0."""
    return [SOFT_FORMAT_REWARD if _has_soft_format(t) else 0.0 for t in _texts(completions)]


_XML_TAGS = ("<reasoning>\n", "\n</reasoning>\n", "\n<answer>\n", "\n</answer>")


def _xml_count(text: str) -> float:
    """Shaped format score of one text, in [-0.5, 0.5]; see :func:`xml_count_reward`."""
    score = XML_TAG_REWARD * sum(text.count(tag) == 1 for tag in _XML_TAGS)
    end = text.rfind(_ANSWER_CLOSE)
    if end >= 0:
        trailing = text[end + len(_ANSWER_CLOSE) :].strip()
        score -= min(XML_TRAILING_PENALTY_PER_CHAR * len(trailing), XML_TRAILING_PENALTY_CAP)
    return float(score)


def xml_count_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Partial format credit that gives GRPO a gradient before the strict format is ever hit.

    ``XML_TAG_REWARD`` (0.125) for each of ``"<reasoning>\\n"``, ``"\\n</reasoning>\\n"``,
    ``"\\n<answer>\\n"`` and ``"\\n</answer>"`` that occurs exactly once (with its newlines), minus
    ``XML_TRAILING_PENALTY_PER_CHAR`` (0.001) per character of text after the last ``</answer>``
    (surrounding whitespace not counted), the penalty capped at ``XML_TRAILING_PENALTY_CAP`` (0.5).
    Range [-0.5, 0.5]; best 0.5.
    """
    return [_xml_count(t) for t in _texts(completions)]


DEFAULT_REWARDS: list[RewardFunc] = [
    correctness_reward,
    int_reward,
    strict_format_reward,
    soft_format_reward,
    xml_count_reward,
]

#: Maximum of each reward; TRL sums them unweighted, so these are the effective weights.
REWARD_WEIGHTS: dict[str, float] = {
    "correctness_reward": CORRECTNESS_REWARD,
    "int_reward": INT_REWARD,
    "strict_format_reward": STRICT_FORMAT_REWARD,
    "soft_format_reward": SOFT_FORMAT_REWARD,
    "xml_count_reward": len(_XML_TAGS) * XML_TAG_REWARD,
}
MAX_TOTAL_REWARD: float = sum(REWARD_WEIGHTS.values())  # 4.0


def score_completions(completions: Sequence[Any], answer: Any) -> list[dict[str, float]]:
    """Score completions of one problem with every default reward, for a table before training.

    Returns one dict per completion: ``{reward name: value, ..., "total": sum}``, in ``DEFAULT_REWARDS``
    order. Completions may be strings or conversational message lists; ``answer`` is the ground truth.
    """
    completions = list(completions)
    prompts = [""] * len(completions)
    answers = [answer] * len(completions)
    columns = {
        fn.__name__: fn(prompts=prompts, completions=completions, answer=answers) for fn in DEFAULT_REWARDS
    }
    rows = []
    for i in range(len(completions)):
        row = {name: values[i] for name, values in columns.items()}
        row["total"] = sum(row.values())
        rows.append(row)
    return rows
