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

Model text is parsed with regular expressions only; nothing is ever evaluated.
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
    "MAX_TOTAL_REWARD",
    "REWARD_WEIGHTS",
    "SHORT_TEXT_MAX_CHARS",
    "SOFT_FORMAT_REWARD",
    "STRICT_FORMAT_REWARD",
    "XML_TAG_REWARD",
    "XML_TRAILING_PENALTY_CAP",
    "XML_TRAILING_PENALTY_PER_CHAR",
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
SHORT_TEXT_MAX_CHARS = 40  # longest text in which parse_int looks for a number inside a short sentence

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


# An integer in one of the accepted spellings, optionally followed by a zero fraction (".0", ".00").
# Grouped forms must be correctly grouped: 1-3 leading digits, then groups of exactly 3, one separator kind.
_INT_BODY = r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,3}(?:_[0-9]{3})+|[0-9]{1,3}(?: [0-9]{3})+|[0-9]+)"
_NUMBER_RE = re.compile(rf"(?P<sign>[+-]?)(?P<int>{_INT_BODY})(?:\.(?P<frac>[0-9]+))?")
# Short-sentence form: one number among words. A number candidate is a digit run with inner separators.
_CANDIDATE_RE = re.compile(r"[0-9]+(?:[,_ ][0-9]+)*(?:\.[0-9]+)?")
_PREFIX_RE = re.compile(r"(?:[^\W\d_]|[ :=$])*")  # letters, spaces, ':', '=', '$'
_SUFFIX_RE = re.compile(r"(?: +[^\W\d_]+)*")  # space-separated words ("42 apples")
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-"})  # MINUS SIGN, EN DASH (typographic minus)
_MEANING_CHANGING = ("<super>", "<sub>", "<fraction>")  # NFKC would turn "4²" into "42", "½" into "1⁄2"
_MAX_DIGITS = 1000  # far below Python's int-parsing limit; longer "numbers" are not answers


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
    """Parse a model's answer as an integer, or return None. Regex only; never evaluates anything.

    Normalisation: Unicode NFKC (fullwidth digits and signs, no-break and thin spaces become ASCII);
    U+2212 MINUS SIGN and U+2013 EN DASH become ``-``; superscripts, subscripts and vulgar fractions are
    rejected outright (NFKC would change their meaning); surrounding whitespace and one trailing ``.``
    are dropped.

    Accepted, as the whole text: an optional ``+``/``-`` sign, digits either plain or grouped in
    thousands by ``,`` / ``_`` / a single space ("1,234", "1_234", "1 234", grouping must be exact:
    "1,23,4" is rejected), and an optional all-zero fraction ("4.0" -> 4, "3.5" -> None).

    Otherwise, only if the text has at most ``SHORT_TEXT_MAX_CHARS`` (40) characters: a short sentence
    with exactly one number, surrounded by words only (letters, spaces, ``:``, ``=``, ``$``), such as
    "= 42", "x = 42", "The answer is 42." or "42 apples"; that number must itself be valid as above.
    Anything containing another digit or an operator, i.e. an expression such as "2+3", "2 * 3" or
    "2 + 3 = 5", gives None, as do floats in exponent form, hex, and empty text.
    """
    if not isinstance(text, str):
        return None
    if any(unicodedata.decomposition(ch).startswith(_MEANING_CHANGING) for ch in text if ord(ch) > 127):
        return None
    s = unicodedata.normalize("NFKC", text).translate(_MINUS_SIGNS).strip()
    if s.endswith("."):
        s = s[:-1].rstrip()
    if not s:
        return None
    match = _NUMBER_RE.fullmatch(s)
    if match is not None:
        return _int_from_match(match)
    if len(s) > SHORT_TEXT_MAX_CHARS:
        return None
    return _int_from_sentence(s)


def _int_from_sentence(s: str) -> int | None:
    """The only number of a short sentence such as "x = 42", or None (see :func:`parse_int`)."""
    candidates = list(_CANDIDATE_RE.finditer(s))
    if len(candidates) != 1:
        return None
    number = candidates[0].group()
    prefix, suffix = s[: candidates[0].start()], s[candidates[0].end() :]
    if prefix[-1:] in ("+", "-") and prefix[-2:-1] in ("", " ", "=", ":"):
        number, prefix = prefix[-1] + number, prefix[:-1]
    if prefix[-1:].isalpha():
        return None  # glued to a word, as in "x2"
    if not (_PREFIX_RE.fullmatch(prefix) and _SUFFIX_RE.fullmatch(suffix)):
        return None
    match = _NUMBER_RE.fullmatch(number)
    return _int_from_match(match) if match is not None else None


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
    """``CORRECTNESS_REWARD`` (2.0) when the extracted answer parses to the ground-truth integer, else 0.0.

    ``answer`` is the dataset column: one value per completion (strings such as "42" or "-7"); a single
    value is used for every completion. A ground truth that is not an integer raises ValueError (a data
    bug); model text never raises.
    """
    texts = _texts(completions)
    truths = [_ground_truth(a) for a in _per_completion(answer, len(texts), "answer")]
    return [
        CORRECTNESS_REWARD if parse_int(extract_answer(t)) == truth else 0.0
        for t, truth in zip(texts, truths, strict=True)
    ]


def int_reward(prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """``INT_REWARD`` (0.5) when the extracted answer parses as an integer (right or wrong), else 0.0."""
    return [INT_REWARD if parse_int(extract_answer(t)) is not None else 0.0 for t in _texts(completions)]


# Inner parts may not contain another tag, so two answer blocks can't pass as one.
_NO_TAG = r"(?:(?!</?(?:reasoning|answer)>).)*?"
_STRICT_RE = re.compile(
    rf"<reasoning>\n{_NO_TAG}\n</reasoning>\n<answer>\n{_NO_TAG}\n</answer>\n?", re.DOTALL
)
_SOFT_RE = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)


def strict_format_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any
) -> list[float]:
    """``STRICT_FORMAT_REWARD`` (0.5) when the whole completion is exactly the format, else 0.0.

    The pattern is ``^<reasoning>\\n.*?\\n</reasoning>\\n<answer>\\n.*?\\n</answer>\\n?$`` (DOTALL), where
    the two inner parts may not contain another reasoning/answer tag: nothing before or after, newlines
    exactly where shown, one block of each.
    """
    return [STRICT_FORMAT_REWARD if _STRICT_RE.fullmatch(t) else 0.0 for t in _texts(completions)]


def soft_format_reward(
    prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any
) -> list[float]:
    """``SOFT_FORMAT_REWARD`` (0.5) when ``<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>`` occurs
    anywhere (DOTALL), whatever the newlines and surrounding text, else 0.0."""
    return [SOFT_FORMAT_REWARD if _SOFT_RE.search(t) else 0.0 for t in _texts(completions)]


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
