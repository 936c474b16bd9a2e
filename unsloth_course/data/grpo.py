"""Math problems with exact integer answers for GRPO, at four levels of difficulty."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, DatasetDict

from unsloth_course.data.sources import (
    DataSourceError,
    Fetched,
    attach_source,
    check_source_argument,
    fetch,
    source_record,
    validate_hub_rows,
)
from unsloth_course.data.split import split_train_eval
from unsloth_course.data.validation import validate_rows

SYSTEM_PROMPT = (
    "Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
    "The answer is a single integer, with no units or words."
)
LEVELS = (1, 2, 3, 4)
NAMES = ("Sam", "Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Yuki")

Problem = tuple[str, list[str], int]  # question, worked steps ("a op b = c"), answer


def _step(a: int, op: str, b: int) -> tuple[str, int]:
    value = {"+": a + b, "-": a - b, "×": a * b, "÷": a // b}[op]
    return f"{a} {op} {b} = {value}", value


def _one_operation(a: int, op: str, b: int, rng: random.Random) -> Problem:
    line, value = _step(a, op, b)
    word = {"+": "plus", "-": "minus", "×": "times"}[op]
    question = rng.choice((f"What is {a} {op} {b}?", f"Calculate {a} {op} {b}.", f"What is {a} {word} {b}?"))
    return question, [line], value


def _level_1(rng: random.Random) -> Problem:
    a, b, op = rng.randint(1, 25), rng.randint(1, 25), rng.choice("+-")  # 650 distinct computations
    if op == "-" and b > a:
        a, b = b, a
    return _one_operation(a, op, b, rng)


def _level_2(rng: random.Random) -> Problem:
    op = rng.choice("+-×")
    if op == "×":
        return _one_operation(rng.randint(2, 9), op, rng.randint(11, 19), rng)
    return _one_operation(rng.randint(21, 99), op, rng.randint(10, 99), rng)  # "-" may go below zero


def _level_3(rng: random.Random) -> Problem:
    name, kind = rng.choice(NAMES), rng.randrange(5)
    if kind == 0:
        a, b, c = rng.randint(2, 20), rng.randint(2, 6), rng.randint(3, 8)
        first, product = _step(b, "×", c)
        second, answer = _step(a, "+", product)
        question = (
            f"{name} has {a} apples and buys {b} bags with {c} apples in each bag. "
            f"How many apples does {name} have now?"
        )
    elif kind == 1:
        a = rng.randint(20, 80)
        b, c = rng.randint(1, a), rng.randint(1, 30)
        first, left = _step(a, "-", b)
        second, answer = _step(left, "+", c)
        question = (
            f"A train leaves the station with {a} passengers. At the first stop, {b} passengers get off "
            f"and {c} get on. How many passengers are on the train now?"
        )
    elif kind == 2:
        b, c = rng.randint(2, 6), rng.randint(2, 9)
        a = b * c + rng.randint(0, 40)
        first, cost = _step(b, "×", c)
        second, answer = _step(a, "-", cost)
        question = (
            f"{name} has {a} dollars and buys {b} notebooks that cost {c} dollars each. "
            f"How many dollars does {name} have left?"
        )
    elif kind == 3:
        b, c = rng.randint(2, 6), rng.randint(6, 12)
        d = rng.randint(1, b * c)
        first, baked = _step(b, "×", c)
        second, answer = _step(baked, "-", d)
        question = (
            f"A baker makes {b} trays with {c} cookies on each tray and sells {d} cookies. "
            f"How many cookies are left?"
        )
    else:
        a, b = rng.randint(5, 40), rng.randint(5, 40)
        total = a + b + rng.randint(0, 100)
        first, read = _step(a, "+", b)
        second, answer = _step(total, "-", read)
        question = (
            f"{name} reads {a} pages on Monday and {b} pages on Tuesday. The book has {total} pages. "
            f"How many pages are left to read?"
        )
    return question, [first, second], answer


def _level_4(rng: random.Random) -> Problem:
    kind = rng.randrange(4)
    if kind == 0:
        per_box, boxes = rng.choice((6, 10, 12)), rng.randint(20, 80)
        sold, more = rng.randint(5, boxes - 1), rng.randint(5, 40)
        eggs = per_box * boxes
        steps = [_step(eggs, "÷", per_box)]
        steps.append(_step(steps[-1][1], "-", sold))
        steps.append(_step(steps[-1][1], "+", more))
        question = (
            f"A farm collects {eggs} eggs and packs them into boxes of {per_box}. It sells {sold} boxes "
            f"and packs {more} more boxes the next day. How many boxes does the farm have now?"
        )
    elif kind == 1:
        classes, students = rng.choice((4, 6, 8, 10, 12)), rng.randint(18, 32)
        buses = rng.choice([d for d in range(2, classes + 1) if classes % d == 0])
        teachers = rng.randint(1, 4)
        steps = [_step(classes, "×", students)]
        steps.append(_step(steps[-1][1], "÷", buses))
        steps.append(_step(steps[-1][1], "+", teachers))
        question = (
            f"A school has {classes} classes of {students} students. All the students are split evenly "
            f"into {buses} buses, and each bus also carries {teachers} teachers. "
            f"How many people are on each bus?"
        )
    elif kind == 2:
        per_day, days, partners = rng.randint(100, 400), rng.randint(3, 9), rng.randint(2, 5)
        earned = per_day * days
        largest_share = (earned - 100) // partners
        share = rng.randint(largest_share // 2, largest_share)
        rent = earned - share * partners
        steps = [_step(per_day, "×", days)]
        steps.append(_step(steps[-1][1], "-", rent))
        steps.append(_step(steps[-1][1], "÷", partners))
        question = (
            f"A shop earns {per_day} dollars a day for {days} days. It pays {rent} dollars in rent and "
            f"splits the rest equally among {partners} partners. "
            f"How many dollars does each partner get?"
        )
    else:
        per_crate = rng.choice((4, 5, 6, 8, 10))
        per_hour, hours = per_crate * rng.randint(5, 30), rng.randint(3, 9)
        steps = [_step(per_hour, "×", hours)]
        steps.append(_step(steps[-1][1], "÷", per_crate))
        shipped = rng.randint(1, steps[-1][1] - 1)
        steps.append(_step(steps[-1][1], "-", shipped))
        question = (
            f"A factory makes {per_hour} toys per hour for {hours} hours and packs them into crates of "
            f"{per_crate} toys. It ships {shipped} crates. How many crates are left?"
        )
    return question, [line for line, _ in steps], steps[-1][1]


_GENERATORS: dict[int, Callable[[random.Random], Problem]] = {
    1: _level_1,
    2: _level_2,
    3: _level_3,
    4: _level_4,
}


def _check_level(level: int, where: str) -> None:
    if level not in _GENERATORS:
        raise ValueError(f"{where}: level must be one of {', '.join(map(str, LEVELS))}, got {level!r}")


_STEP = re.compile(r"(-?\d+) ([+\-×÷]) (-?\d+) = (-?\d+)")


def computation(reasoning: str) -> tuple[tuple[str, ...], ...]:
    """The worked steps with the operands of + and × in sorted order: "13 + 4" and "4 + 13" are one
    computation, asked twice."""
    steps = []
    for a, op, b, value in _STEP.findall(reasoning):
        operands = sorted((a, b), key=int) if op in "+×" else [a, b]
        steps.append((operands[0], op, operands[1], value))
    return tuple(steps)


def generate_math_problems(
    n: int, level: int = 1, seed: int = 0, exclude: frozenset = frozenset()
) -> list[dict]:
    """`n` distinct problems of one level: question, answer (int), level, reasoning (worked steps).

    Distinct means distinct computations (`computation`): however a problem is phrased, and in whichever
    order it adds or multiplies, the same computation counts once, so a held-out problem never repeats a
    training one in other words. `exclude`: computations not to produce (other levels' problems).
    """
    _check_level(level, "generate_math_problems")
    if n < 1:
        raise ValueError(f"generate_math_problems: n must be at least 1, got {n}")
    rng, seen, problems = random.Random(seed), set(exclude), []
    for _ in range(n * 200):
        question, steps, answer = _GENERATORS[level](rng)
        reasoning = "\n".join(steps)
        key = computation(reasoning)
        if key in seen:  # the same computation, however phrased, counts once
            continue
        seen.add(key)
        problems.append({"question": question, "answer": answer, "level": level, "reasoning": reasoning})
        if len(problems) == n:
            return problems
    raise ValueError(f"generate_math_problems: level {level} has fewer than {n} distinct problems")


def format_reasoning_answer(reasoning: str, answer: int | str) -> str:
    """The completion format that SYSTEM_PROMPT asks for."""
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


MATH_SCHEMA: dict[str, type | tuple[type, ...]] = {"question": str, "answer": (str, int)}
_INTEGER = re.compile(r"[+-]?\d+")


def _math_prompt(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def _generated_problems(total: int, levels: tuple[int, ...], seed: int) -> list[dict]:
    rows: list[dict] = []
    for i, level in enumerate(levels):
        count = total // len(levels) + (1 if i < total % len(levels) else 0)
        if count:
            taken = frozenset(computation(row["reasoning"]) for row in rows)
            rows += generate_math_problems(count, level=level, seed=seed * 10 + level, exclude=taken)
    if len({computation(row["reasoning"]) for row in rows}) != len(rows):
        raise ValueError(
            "load_math_problems: two levels produced the same computation; eval would leak into train"
        )
    return rows


def _sourced_problems(fetched: Fetched, total: int, seed: int) -> tuple[list[dict], list[str]]:
    """Rows of a file or Hub dataset with question and an integer answer; extra columns reasoning (for the
    format warm-up) and level are kept when every row has them. Duplicate questions are dropped."""
    dataset = fetched.rows
    where = str(fetched.path or fetched.repo_id)
    if fetched.kind != "local file":
        validate_hub_rows(dataset, MATH_SCHEMA, "GRPO", fetched.repo_id)
    extra = [c for c in ("reasoning", "level") if c in dataset.column_names]
    rows, seen, notes = [], set(), []
    for index, row in enumerate(dataset.select_columns(["question", "answer", *extra])):
        answer = row["answer"]
        if isinstance(answer, bool) or not _INTEGER.fullmatch(str(answer).strip()):
            raise DataSourceError(f"{where}: row {index}: column 'answer' should be an integer or an "
                                  f"integer string like \"42\" or \"-7\", got {answer!r} (GSM8K-style "
                                  "\"... #### 42\": keep only the number after ####)")
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        rows.append({"question": row["question"], "answer": int(str(answer).strip()),
                     **{c: row[c] for c in extra}})
    if len(rows) < len(dataset):
        notes.append(f"{len(dataset) - len(rows):,} duplicate questions dropped")
    random.Random(seed).shuffle(rows)
    if len(rows) > total:
        rows = rows[:total]
    return rows, notes


def load_math_problems(
    n_train: int = 256,
    n_eval: int = 64,
    levels: tuple[int, ...] = (1, 2),
    seed: int = 3407,
    source: str | Path | None = None,
) -> DatasetDict:
    """Math problems split into "train" and "test" (no question in both), with chat prompts for GRPO.

    `source` None: generated problems of `levels`, with worked reasoning. Otherwise a Hub id or your own
    .json/.jsonl/.parquet/.csv file with columns question and answer (an integer or an integer string);
    columns reasoning (needed by the format warm-up) and level are kept when present. When it has fewer than
    n_train + n_eval problems, all n_eval are held out and the rest trains (the printed line says so)."""
    check_source_argument(source, "load_math_problems")
    levels = tuple(dict.fromkeys(levels))  # each level once, in the order given
    if not levels:
        raise ValueError("load_math_problems: levels is empty; pick from 1, 2, 3, 4")
    for level in levels:
        _check_level(level, "load_math_problems")
    if n_train < 1 or n_eval < 1:
        raise ValueError(
            f"load_math_problems: n_train and n_eval must be at least 1, got {n_train} and {n_eval}"
        )
    total = n_train + n_eval
    fetched = fetch(source, None, "GRPO", MATH_SCHEMA)
    if fetched.rows is None:
        rows, notes = _generated_problems(total, levels, seed), [f"levels {', '.join(map(str, levels))}"]
    else:
        rows, notes = _sourced_problems(fetched, total, seed)
        if len(rows) <= n_eval:
            raise DataSourceError(f"{fetched.path or fetched.repo_id}: only {len(rows)} distinct questions; "
                                  f"GRPO needs more than n_eval={n_eval}")
        if len(rows) < total:
            notes.append(f"only {len(rows):,} problems, fewer than {n_train:,} + {n_eval:,}: all "
                         f"{n_eval:,} held out, {len(rows) - n_eval:,} to train")
    for row in rows:
        row["prompt"] = _math_prompt(row["question"])
        row["answer"] = str(row["answer"])  # reward functions compare it with the text inside <answer>
    splits = split_train_eval(Dataset.from_list(rows), n_eval=n_eval, seed=seed)
    count = f"{len(splits['train']):,} train + {len(splits['test']):,} eval math problems"
    if fetched.rows is None:
        line = f"GRPO data: {count} generated by unsloth_course ({'; '.join(notes)})"
        record = source_record("generated", line)
    else:
        line = fetched.line("GRPO data", count, "columns question, answer", "; ".join(notes))
        record = fetched.record(line)
    print(line, flush=True)
    return attach_source(splits, record)


def to_format_warmup(dataset: Dataset) -> Dataset:
    """A "messages" column (system, user, assistant in the answer format) for a short SFT warm-up."""
    validate_rows(dataset, {"question": str, "answer": (str, int), "reasoning": str}, "GRPO warm-up")

    def convert(row: dict) -> dict:
        return {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": row["question"]},
                {"role": "assistant", "content": format_reasoning_answer(row["reasoning"], row["answer"])},
            ]
        }

    return dataset.map(convert, remove_columns=dataset.column_names)
