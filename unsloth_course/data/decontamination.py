"""Keep evaluation prompts out of training data: exact and near-duplicate matches.

Two texts are **near-duplicates** when, after normalization, they are equal, or when they state the same
numbers in the same order and their content words overlap by at least `threshold` (Jaccard index;
DEFAULT_THRESHOLD = 0.8):

- normalization: Unicode NFKC, case folded, curly quotes made straight; a text becomes its tokens (runs of
  letters and digits, and the operators + - * / × ÷ = < > %), so punctuation and spacing do not count;
- content words: the tokens minus a short list of English function words and Python keywords
  (STOPWORDS), as a set: word order and repetition do not count;
- numbers: the numbers a text states, in order, must be equal. A changed number makes another question
  ("What is 93 + 17?" is not "What is 93 + 18?", though every other word agrees), and so does a swapped one
  in a word problem ("3 apples and 2 bags of 6" is not "6 apples and 2 bags of 3"). Commutative swaps
  ("13 + 4" and "4 + 13") are the math generator's business: it keeps one of each (data.grpo);
- Jaccard: |A ∩ B| / |A ∪ B| of the two content-word sets, at least 0.8: copies and light edits. One word
  changed takes 9 content words to reach 0.8 (8/10): short templated prompts that differ in one word ("Sort
  the letters of "puzzle"" and "of "garden"", 0.71; "the capital of Spain" and "of France", 0.33) are
  different questions, not duplicates.

A lexical measure does not catch paraphrases ("Name the capital city of France." scores 0.5 against "What
is the capital of France?"): the generators leave out whole topics that the course evaluates on
(generators.EVAL_EXCLUDED_COUNTRIES, EVAL_EXCLUDED_FUNCTIONS), and this check catches the copies.
Conversational prompts are compared by their user turns only: a system prompt shared by every row (GRPO's
format instructions) says nothing about which question a row asks.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

DEFAULT_THRESHOLD = 0.8

# fmt: off
STOPWORDS = frozenset("""
a an the of to in on at by for from with about as into than then and or but nor so if not no
is are was were be been being am do does did done have has had having can could will would shall should may
might must it its it's this that these those there here what which who whom whose when where why how
i me my we our you your he him his she her they them their s t ll d ve re m please
def return self cls none true false pass elif else import lambda yield
""".split())
# fmt: on
_TOKEN = re.compile(r"[^\W_]+|[+\-*/×÷=<>%]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "−": "-"})


def tokens(text: str) -> list[str]:
    """The normalized tokens of `text` (NFKC, case folded): words, numbers and arithmetic operators."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold())


def normalize(text: str) -> str:
    """The text as its tokens joined by single spaces: equal for texts that differ in case or punctuation."""
    return " ".join(tokens(text))


@dataclass(frozen=True)
class Fingerprint:
    """What near-duplicate detection compares: the normalized text, content words, numbers in order."""

    normalized: str
    words: frozenset[str]
    numbers: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> Fingerprint:
        found = tokens(text)
        numbers = tuple(t for t in found if _NUMBER.fullmatch(t))
        return cls(" ".join(found), frozenset(t for t in found if t not in STOPWORDS), numbers)


def similarity(a: str, b: str) -> float:
    """Jaccard index of the content-word sets of `a` and `b` (1.0 for two texts without content words)."""
    return _jaccard(Fingerprint.of(a).words, Fingerprint.of(b).words)


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} must be in (0, 1]: the Jaccard index of content words "
                         f"from which two texts count as near-duplicates (default {DEFAULT_THRESHOLD})")


def is_near_duplicate(a: str, b: str, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """True when `a` and `b` are equal after normalization, or state the same numbers in the same order and
    their content words overlap by at least `threshold` (see the module docstring)."""
    _check_threshold(threshold)
    return _matches(Fingerprint.of(a), Fingerprint.of(b), threshold)


def _matches(a: Fingerprint, b: Fingerprint, threshold: float) -> bool:
    if a.normalized == b.normalized:
        return True
    if a.numbers != b.numbers or not a.words or not b.words:
        return False
    small, large = sorted((len(a.words), len(b.words)))
    if small < threshold * large:  # the Jaccard index is at most |small| / |large|
        return False
    return _jaccard(a.words, b.words) >= threshold


class EvalIndex:
    """Evaluation prompts, indexed so that many training texts can be checked against them quickly."""

    def __init__(self, eval_prompts: Iterable[Any], threshold: float = DEFAULT_THRESHOLD):
        _check_threshold(threshold)
        self.threshold = threshold
        self.prompts = [prompt_text(p) for p in eval_prompts]
        self._exact: dict[str, int] = {}
        self._by_numbers: dict[tuple[str, ...], list[tuple[int, Fingerprint]]] = defaultdict(list)
        for index, text in enumerate(self.prompts):
            fingerprint = Fingerprint.of(text)
            self._exact.setdefault(fingerprint.normalized, index)
            self._by_numbers[fingerprint.numbers].append((index, fingerprint))

    def __len__(self) -> int:
        return len(self.prompts)

    def match(self, text: str) -> int | None:
        """The index of the first evaluation prompt that `text` duplicates (exactly or nearly), else None."""
        fingerprint = Fingerprint.of(text)
        if fingerprint.normalized in self._exact:
            return self._exact[fingerprint.normalized]
        for index, candidate in self._by_numbers.get(fingerprint.numbers, ()):
            if _matches(fingerprint, candidate, self.threshold):
                return index
        return None


def prompt_text(prompt: Any) -> str:
    """The text of a prompt: a string as it is; a list of chat messages as its user turns, joined (all its
    turns when it has no user turn)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence) and all(isinstance(m, dict) and "content" in m for m in prompt):
        user = [str(m["content"]) for m in prompt if m.get("role") == "user"]
        return "\n\n".join(user or [str(m["content"]) for m in prompt])
    raise TypeError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def row_text(row: dict, columns: Sequence[str]) -> str:
    """The prompt a training row asks: its `columns` (strings or chat messages) joined by a blank line, empty
    columns left out (Alpaca's instruction + input is the user turn that data.row_to_messages builds)."""
    parts = [prompt_text(row[c]) for c in columns if row[c] is not None]
    return "\n\n".join(p for p in parts if p.strip())


PROMPT_COLUMNS = (("instruction", "input"), ("question",), ("prompt",), ("text",))


def prompt_columns(dataset: Dataset, columns: Sequence[str] | str | None) -> tuple[str, ...]:
    """The columns that hold a row's prompt: `columns` checked, or the first usual set the dataset has."""
    names = dataset.column_names
    if columns is None:
        for candidate in PROMPT_COLUMNS:
            if all(c in names for c in candidate):
                return candidate
        raise ValueError(f"decontaminate: say which columns hold the prompt (columns=...); the dataset has "
                         f"{', '.join(names)} and none of the usual ones ({PROMPT_COLUMNS})")
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    missing = [c for c in columns if c not in names]
    if missing or not columns:
        raise ValueError(f"decontaminate: column(s) {missing or columns} not in the dataset; its columns are "
                         f"{', '.join(names)}")
    return columns


def find_contaminated(texts: Iterable[str], eval_prompts: Iterable[Any] | EvalIndex,
                      threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, int]]:
    """(text index, evaluation prompt index) of every text that duplicates an evaluation prompt."""
    index = eval_prompts if isinstance(eval_prompts, EvalIndex) else EvalIndex(eval_prompts, threshold)
    found = []
    for i, text in enumerate(texts):
        hit = index.match(text)
        if hit is not None:
            found.append((i, hit))
    return found


def decontaminate(dataset: Dataset, eval_prompts: Iterable[Any], columns: Sequence[str] | str | None = None,
                  threshold: float = DEFAULT_THRESHOLD, name: str = "training") -> tuple[Dataset, int]:
    """Drop the rows of `dataset` whose prompt duplicates an evaluation prompt (exact or near-duplicate, see
    the module docstring); return (kept rows, number removed) and print how many were removed.

    eval_prompts: strings or chat-message lists (the course's fixed prompts, a held-out split's prompts).
    columns: the columns that hold a row's prompt (default: instruction + input, question, prompt or text,
    the first set the dataset has).
    """
    columns = prompt_columns(dataset, columns)
    index = EvalIndex(eval_prompts, threshold)
    if not len(index):
        raise ValueError("decontaminate: eval_prompts is empty; pass the prompts the model is evaluated on")
    texts = (row_text(row, columns) for row in dataset.select_columns(list(columns)))
    removed = {i for i, _ in find_contaminated(texts, index)}
    kept = dataset.select([i for i in range(len(dataset)) if i not in removed]) if removed else dataset
    print(f"decontaminate: removed {len(removed):,} of {len(dataset):,} {name} rows that repeat one of "
          f"{len(index):,} evaluation prompts (exact or near-duplicate, threshold {threshold})")
    if not len(kept):
        raise ValueError(f"decontaminate: every {name} row repeats an evaluation prompt")
    return kept, len(removed)
