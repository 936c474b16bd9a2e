"""Raw Python code for continued pretraining: CodeSearchNet (Python) or the installed standard library."""

from __future__ import annotations

import ast
import random
import sysconfig
import textwrap
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset

from unsloth_course.data.decontamination import find_contaminated
from unsloth_course.data.generators import try_hub
from unsloth_course.data.split import split_train_eval
from unsloth_course.data.validation import validate_rows

# A parquet copy of CodeSearchNet: the original "code-search-net/code_search_net" needs a loading script,
# which datasets 4 no longer runs. Config "python"; "whole_func_string" is the function with its docstring.
CODE_DATASET = "claudios/code_search_net"
CODE_CONFIG = "python"
CODE_COLUMN = "whole_func_string"
CODE_NAME_COLUMN = "func_name"

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


def _hub_code_rows(n_total: int, max_chars: int, seed: int) -> list[dict]:
    """The first `n_total` short, distinct functions of a shuffled stream of CodeSearchNet Python."""
    stream = load_dataset(CODE_DATASET, CODE_CONFIG, split="train", streaming=True)
    rows: list[dict] = []
    seen: set[str] = set()
    for example in stream.shuffle(seed=seed, buffer_size=2_000).take(n_total * 20):
        text = _reindent_method(example[CODE_COLUMN] or "")
        if text.strip() and len(text) <= max_chars and text not in seen:
            seen.add(text)
            rows.append({"text": text, "name": example[CODE_NAME_COLUMN] or "unknown"})
            if len(rows) == n_total:
                return rows
    raise ValueError(
        f"only {len(rows)} functions of at most {max_chars} characters streamed from {CODE_DATASET}"
    )


def load_python_code(n_train: int = 400, n_eval: int = 50, seed: int = 3407) -> DatasetDict:
    """Python functions as raw text ("train", "test"; columns text, name); no function is in both splits.

    Training functions that nearly duplicate a held-out one (data.decontamination: the same code with a few
    names changed, as in functools' _gt_from_le and _ge_from_le) are dropped, so "train" may hold a few rows
    fewer than `n_train`; the printed line says how many.
    """
    if n_train < 1 or n_eval < 1:
        raise ValueError(
            f"load_python_code: n_train and n_eval must be at least 1, got {n_train} and {n_eval}"
        )
    total = n_train + n_eval
    hub_rows, reason = try_hub(CODE_DATASET, lambda: _hub_code_rows(total, max_chars=1500, seed=seed))
    if hub_rows is not None:
        rows, source = hub_rows, f"from {CODE_DATASET} ({CODE_CONFIG}, Hub, streamed)"
    else:
        rows = [{"text": r["text"], "name": r["name"]} for r in stdlib_functions(n=total, seed=seed)]
        source = f"from this Python's standard library ({reason}; {CODE_DATASET} not used)"
    if len(rows) < total:
        raise ValueError(f"load_python_code: found only {len(rows)} functions, need {n_train} + {n_eval}")
    dataset = Dataset.from_list(rows)
    validate_rows(dataset, CODE_SCHEMA, "code")
    splits = split_train_eval(dataset, n_eval=n_eval, seed=seed)
    copies = {i for i, _ in find_contaminated(splits["train"]["text"], splits["test"]["text"])}
    if copies:
        splits["train"] = splits["train"].select([i for i in range(len(splits["train"])) if i not in copies])
    note = f"; {len(copies)} training functions that nearly repeat a held-out one dropped" if copies else ""
    print(f"Code data: {len(splits['train'])} train + {len(splits['test'])} eval functions {source}{note}")
    return splits


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
