"""Continued pretraining data: raw Python code (CodeSearchNet, your own file, or this Python's standard
library) and general English prose for the forgetting check (alpaca-cleaned answers without code)."""

from __future__ import annotations

import ast
import random
import re
import sysconfig
import textwrap
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from unsloth_course.data.decontamination import find_contaminated
from unsloth_course.data.generators import generate_sft_rows
from unsloth_course.data.sft import ALPACA_DATASET
from unsloth_course.data.sources import (
    DataSourceError,
    Texts,
    attach_source,
    check_source_argument,
    fetch,
    load_hub_dataset,
    require_columns,
)
from unsloth_course.data.split import split_train_eval
from unsloth_course.data.validation import validate_rows

# A parquet copy of CodeSearchNet: the original "code-search-net/code_search_net" needs a loading script,
# which datasets 4 no longer runs. Config "python"; "whole_func_string" is the function with its docstring.
CODE_DATASET = "claudios/code_search_net"
CODE_CONFIG = "python"
CODE_COLUMN = "whole_func_string"
CODE_NAME_COLUMN = "func_name"
CODE_SOURCE_SCHEMA: dict[str, type] = {CODE_COLUMN: str, CODE_NAME_COLUMN: str}  # of a Hub dataset or a file
# Python code is about 3.9 characters per SmolLM2 token (measured on CodeSearchNet rows): a function of at
# most 4 x max_seq_length characters fits a training row, or nearly.
CODE_CHARS_PER_TOKEN = 4
STREAM_SHUFFLE_BUFFER = 2_000

# fmt: off
SKIPPED_STDLIB_DIRS = frozenset({
    "test", "tests", "idlelib", "tkinter", "site-packages", "dist-packages", "lib2to3", "turtledemo",
    "__pycache__", "pydoc_data", "ensurepip", "lib-dynload",
})
# fmt: on
CODE_SCHEMA: dict[str, type] = {"text": str, "name": str}


def _stdlib_files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*.py")
        if not SKIPPED_STDLIB_DIRS.intersection(path.relative_to(root).parts[:-1])
        and not path.relative_to(root).parts[0].startswith("config-")
    )


def _functions_in_file(path: Path, root: Path, min_lines: int, max_chars: int) -> list[tuple[str, str, str]]:
    """(text, name, relative path) of each documented top-level function or method that fits the limits."""
    try:
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return []
    candidates: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            candidates.append((node.name, node))
        elif isinstance(node, ast.ClassDef):
            candidates += [
                (f"{node.name}.{item.name}", item)
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
            ]
    found = []
    module = path.relative_to(root).as_posix()
    lines = source.split("\n")  # read_text turned every line ending into "\n", as ast counts lines
    for name, node in candidates:
        if ast.get_docstring(node) is None or node.end_lineno is None:
            continue
        # the whole lines of the definition; ast.get_source_segment re-splits the file on every call
        text = textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno]))
        if not text.startswith(("def ", "async def ")):
            continue
        if text.count("\n") + 1 < min_lines or len(text) > max_chars:
            continue
        try:  # a string literal at column 0 defeats dedent; keep only code that stands on its own
            ast.parse(text)
        except SyntaxError:
            continue
        found.append((text, name, module))
    return found


@lru_cache(maxsize=8)
def _stdlib_records(
    n: int | None, min_lines: int, max_chars: int, seed: int
) -> tuple[tuple[str, str, str], ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = _stdlib_files(root)
    rng = random.Random(seed)
    rng.shuffle(files)
    records: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for path in files:
        for record in _functions_in_file(path, root, min_lines, max_chars):
            if record[0] not in seen:
                seen.add(record[0])
                records.append(record)
        if n is not None and len(records) >= 3 * n:  # enough to choose from; scanning all takes seconds
            break
    rng.shuffle(records)
    return tuple(records if n is None else records[:n])


def stdlib_functions(
    n: int | None = None, min_lines: int = 4, max_chars: int = 1500, seed: int = 3407
) -> list[dict]:
    """Documented functions and methods from this Python's standard library: text, name, path."""
    if n is not None and n < 1:
        raise ValueError(f"stdlib_functions: n must be at least 1 or None, got {n}")
    return [
        {"text": text, "name": name, "path": path}
        for text, name, path in _stdlib_records(n, min_lines, max_chars, seed)
    ]


def _reindent_method(text: str) -> str:
    """CodeSearchNet keeps a method's body at its class indentation under an unindented `def`; undo that."""
    first, *rest = text.split("\n")
    indents = [len(line) - len(line.lstrip(" ")) for line in rest if line.strip()]
    extra = min(indents, default=0) - 4
    if extra <= 0:
        return text
    return "\n".join([first] + [line[extra:] if line.strip() else line for line in rest])


def code_char_limit(max_seq_length: int) -> int:
    """The longest function (in characters) that fits a `max_seq_length`-token row, or nearly."""
    return CODE_CHARS_PER_TOKEN * max_seq_length


def _pick_functions(
    examples: Iterable[dict], max_chars: int, limit: int | None
) -> tuple[list[dict], int, int]:
    """(rows with text and name, number too long, number of duplicates) from CodeSearchNet-style examples:
    methods re-indented, blank texts skipped; stops after `limit` rows (None: all)."""
    rows: list[dict] = []
    seen: set[str] = set()
    too_long = duplicates = 0
    for example in examples:
        text = _reindent_method(example[CODE_COLUMN] or "")
        if not text.strip():
            continue
        if len(text) > max_chars:
            too_long += 1
        elif text in seen:
            duplicates += 1
        else:
            seen.add(text)
            rows.append({"text": text, "name": example[CODE_NAME_COLUMN] or "unknown"})
            if limit is not None and len(rows) == limit:
                break
    return rows, too_long, duplicates


def _stream_functions(repo_id: str, total: int, max_chars: int, seed: int, counts: list[int]) -> Dataset:
    """The first `total` usable functions of a shuffled stream of `repo_id` (nothing is downloaded whole), in
    the CodeSearchNet columns; `counts` receives (too long, duplicates)."""
    config = CODE_CONFIG if repo_id == CODE_DATASET else None
    stream = load_hub_dataset(repo_id, config, streaming=True)
    require_columns(stream.column_names, CODE_SOURCE_SCHEMA, "code", repo_id, schema_of=CODE_DATASET)
    examples = stream.shuffle(seed=seed, buffer_size=STREAM_SHUFFLE_BUFFER).take(total * 20)
    rows, too_long, duplicates = _pick_functions(examples, max_chars, total)
    counts[:] = [too_long, duplicates]
    return Dataset.from_dict({CODE_COLUMN: [r["text"] for r in rows],
                              CODE_NAME_COLUMN: [r["name"] for r in rows]})


def _counts_note(too_long: int, duplicates: int, max_chars: int) -> list[str]:
    notes = [f"{too_long:,} longer than {max_chars:,} characters skipped"] if too_long else []
    return notes + ([f"{duplicates:,} duplicates skipped"] if duplicates else [])


def load_python_code(
    source: str | Path | None = None,
    n_train: int = 400,
    n_eval: int = 50,
    seed: int = 3407,
    max_seq_length: int = 1024,
) -> DatasetDict:
    """Python functions as raw text: "train" and "test" (columns text, name), no function in both.

    `source`: a Hub id (default claudios/code_search_net, config python, streamed) or your own .parquet/
    .jsonl/.json/.csv file in its schema (whole_func_string, func_name). Functions longer than
    code_char_limit(max_seq_length) characters are skipped. When fewer than n_train + n_eval functions are
    usable, all n_eval are held out and the rest trains (the printed line says so). Offline without a cached
    copy: documented functions of this Python's standard library."""
    check_source_argument(source, "load_python_code")
    for name, value in (("n_train", n_train), ("n_eval", n_eval), ("max_seq_length", max_seq_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"load_python_code: {name} must be a positive integer, got {value!r}")
    total, max_chars = n_train + n_eval, code_char_limit(max_seq_length)
    counts: list[int] = []  # (too long, duplicates) of a stream
    fetched = fetch(source, CODE_DATASET, "code", CODE_SOURCE_SCHEMA,
                    load=lambda repo_id: _stream_functions(repo_id, total, max_chars, seed, counts))
    notes: list[str] = []
    if fetched.rows is None:
        rows = [{"text": r["text"], "name": r["name"]} for r in stdlib_functions(n=total, seed=seed,
                                                                                 max_chars=max_chars)]
    elif fetched.kind == "local file":
        rows, too_long, duplicates = _pick_functions(fetched.rows.shuffle(seed=seed), max_chars, None)
        notes += _counts_note(too_long, duplicates, max_chars)
    else:
        rows = [{"text": r[CODE_COLUMN], "name": r[CODE_NAME_COLUMN]} for r in fetched.rows]
        notes += _counts_note(*counts, max_chars)
        notes.append(f"{CODE_CONFIG} config, streamed" if fetched.repo_id == CODE_DATASET else "streamed")
    if len(rows) <= n_eval:
        where = fetched.path or fetched.repo_id or "this Python's standard library"
        raise DataSourceError(f"{where}: only {len(rows)} usable functions (at most {max_chars:,} "
                              f"characters, distinct); the code data needs more than n_eval={n_eval}")
    if len(rows) < total:
        notes.append(f"only {len(rows):,} usable functions, fewer than {n_train:,} + {n_eval:,}: "
                     f"all {n_eval:,} held out, {len(rows) - n_eval:,} to train")
    dataset = Dataset.from_list(rows[:total])
    validate_rows(dataset, CODE_SCHEMA, "code")
    splits = split_train_eval(dataset, n_eval=n_eval, seed=seed)
    copies = {i for i, _ in find_contaminated(splits["train"]["text"], splits["test"]["text"])}
    if copies:  # the same code with a few names changed, as in functools' _gt_from_le and _ge_from_le
        splits["train"] = splits["train"].select([i for i in range(len(splits["train"])) if i not in copies])
        what = "training function that nearly repeats" if len(copies) == 1 else "training functions that nearly repeat"
        notes.append(f"{len(copies)} {what} a held-out one dropped")
    count = f"{len(splits['train']):,} train + {len(splits['test']):,} eval functions"
    line = fetched.line("Code data", count, f"schema of {CODE_DATASET}", "; ".join(notes),
                        generated_from="from this Python's standard library")
    print(line, flush=True)
    return attach_source(splits, fetched.record(line))


# ---------------------------------------------------------------- general prose, for the forgetting check

MIN_PROSE_CHARS = 400
# What looks like code or markup: fences, inline code, definitions, imports, braces, tags, statements.
_CODE_MARKERS = re.compile(
    r"```|`[^`\n]+`|\b(?:def|class|function)\s+\w+\s*[(:{]|^\s*(?:import|from)\s+[\w.]+|#include|[{}]"
    r"|</?[A-Za-z][^>]*>|;\s*$|=>|\bprint\s*\(|\w+\([^)]*\)\s*[;:]|^(?: {4}|\t)\S|\bSELECT\b.*\bFROM\b|\$\w+",
    re.MULTILINE,
)
PROSE_FIELDS = ("instruction", "input", "output")


def is_prose(row: dict) -> bool:
    """True when no field of an Alpaca-style row (instruction, input, output) holds code or markup."""
    return not any(_CODE_MARKERS.search(row.get(field) or "") for field in PROSE_FIELDS)


def load_general_prose(source: str | Path | None = ALPACA_DATASET, n: int = 64, seed: int = 3407) -> Texts:
    """`n` texts of general English prose, raw (no chat template), to check that continued pretraining on code
    does not make the model forget ordinary text.

    From `source` (default yahma/alpaca-cleaned, or your own file with an `output` column): the `output` of
    rows with no code or markup anywhere, at least MIN_PROSE_CHARS characters (the longest shorter ones fill
    in when too few are that long). Offline without a cached copy: the prose answers of the generated SFT rows
    (short), saying so. The list remembers its source: data.source_of(texts)."""
    check_source_argument(source, "load_general_prose")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"load_general_prose: n must be a positive integer, got {n!r}")
    fetched = fetch(source, ALPACA_DATASET, "general text", {"output": str})
    notes: list[str] = []
    if fetched.rows is None:
        rows = [r for r in generate_sft_rows(n=max(600, 6 * n), seed=seed) if is_prose(r)]
        texts = sorted((r["output"] for r in rows), key=lambda text: (-len(text), text))[:n]
        notes.append("the prose answers of its generated SFT rows, shorter than real ones")
    else:
        columns = [c for c in PROSE_FIELDS if c in fetched.rows.column_names]
        rows = fetched.rows.select_columns(columns).shuffle(seed=seed)
        prose = [r["output"].strip() for r in rows if r["output"] and is_prose(r)]
        long_texts = [text for text in prose if len(text) >= MIN_PROSE_CHARS]
        texts = long_texts[:n]
        if len(texts) < n:
            shorter = sorted((t for t in prose if len(t) < MIN_PROSE_CHARS), key=lambda t: (-len(t), t))
            texts += shorter[: n - len(texts)]
            notes.append(f"only {len(long_texts):,} of at least {MIN_PROSE_CHARS} characters: the longest "
                         "shorter ones fill in")
        if not texts:
            where = fetched.path or fetched.repo_id
            raise DataSourceError(f"{where}: no row without code or markup; the general-text check needs "
                                  "prose answers in an `output` column")
    if len(texts) < n:
        notes.append(f"{n:,} asked")
    count = f"{len(texts):,} prose texts (`output` without code, >= {MIN_PROSE_CHARS} characters)"
    if fetched.rows is None:
        count = f"{len(texts):,} prose texts"
    line = fetched.line("General text", count, f"schema of {ALPACA_DATASET}", "; ".join(notes))
    print(line, flush=True)
    return attach_source(Texts(texts), fetched.record(line))


def _function_head(text: str) -> str | None:
    """Signature, docstring (if any) and first body line of the one function `text` defines, ending in a
    newline; None when the text is not a single parsable function or nothing follows that first line."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    body = tree.body[0].body
    statements = body[1:] if ast.get_docstring(tree.body[0], clean=False) is not None else body
    if not statements:
        return None
    lines = text.split("\n")
    head = lines[: statements[0].lineno]  # up to and including the first body statement's first line
    rest = [line for line in lines[statements[0].lineno:] if line.strip()]
    return "\n".join(head) + "\n" if rest else None


def code_completion_prompts(functions: Sequence[str], n: int | None = None) -> list[str]:
    """Prompts that make a model continue raw code: the head of each held-out function (its signature,
    docstring and first body line, ending in a newline), so the model continues inside the function body
    rather than closing a code block and writing prose. Functions that do not parse on their own, or end at
    that first line, are skipped; the first `n` heads (all when None) are returned, in order."""
    if n is not None and n < 1:
        raise ValueError(f"code_completion_prompts: n must be at least 1 or None, got {n}")
    heads = [head for head in map(_function_head, functions) if head is not None]
    if n is not None and len(heads) < n:
        raise ValueError(f"code_completion_prompts: only {len(heads)} of {len(functions)} functions have a "
                         f"head to complete (a parsable function with more after its first body line); "
                         f"asked for {n}")
    return heads if n is None else heads[:n]


def add_eos(dataset: Dataset, eos_token: str, column: str = "text") -> Dataset:
    """Append `eos_token` to every text (raw text + EOS, no chat template) so documents are separated."""
    if not eos_token:
        raise ValueError("add_eos: eos_token is empty; pass tokenizer.eos_token")
    validate_rows(dataset, {column: str}, "code")
    return dataset.map(lambda row: {column: row[column] + eos_token})


def token_lengths(dataset: Dataset, tokenizer: Any, column: str = "text") -> list[int]:
    """Number of tokens of each text in `column` (without special tokens added by the tokenizer)."""
    validate_rows(dataset, {column: str}, "code")
    encoded = tokenizer(list(dataset[column]), add_special_tokens=False)
    return [len(ids) for ids in encoded["input_ids"]]
