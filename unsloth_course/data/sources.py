"""Where each dataset comes from. One function, `fetch`, decides for every loader:

    a local file (.json, .jsonl, .parquet, .csv)   read and validated; errors name the file, row and column
    a Hub id, the Hub reachable                    datasets.load_dataset: the real download, cached
    a Hub id, HF_HUB_OFFLINE=1                     the Hugging Face cache if the dataset is there
    otherwise                                      the course's generated rows, saying why

Only a network failure falls back to generated rows (with a warning line); any other failure (a missing or
gated dataset, a loading script, a missing column) stops with what failed and what to do. Only the course's
own datasets have generated stand-ins: a dataset you named yourself is never replaced.

Each loader prints exactly one source line and records it on the data it returns: `source_of(data)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, IterableDataset

from unsloth_course import settings
from unsloth_course.data.validation import validate_rows
from unsloth_course.hub import (
    OFFLINE,
    ONLINE,
    PROBE_TIMEOUT_S,
    SourceError,
    error_summary,
    hf_token,
    hub_mode,
    is_network_error,
    is_repo_id,
    looks_like_path,
    network_failure,
    offline_variable,
    warn,
)

KINDS = ("hub", "cache", "local file", "generated")
LOCAL_FORMATS = {".json": "JSON", ".jsonl": "JSON Lines", ".parquet": "Parquet", ".csv": "CSV"}
# Suffixes that mark a file name (not a Hub id) even when the file does not exist: reported as unsupported.
OTHER_FILE_SUFFIXES = frozenset(
    {
        ".txt",
        ".tsv",
        ".xlsx",
        ".xls",
        ".arrow",
        ".zip",
        ".gz",
        ".bz2",
        ".xz",
        ".zst",
        ".tar",
        ".ndjson",
        ".pkl",
        ".pickle",
        ".feather",
        ".h5",
        ".hdf5",
        ".md",
        ".py",
    }
)
OWN_DATA_HINT = 'your own file: --dataset PATH (CLI) or DATASET = "path" (notebook)'
SOURCE_MARK = "unsloth_course source: "  # the prefix of the provenance stored in dataset.info.description


class DataSourceError(SourceError):
    """A dataset cannot be loaded from where it was asked for; the message says what failed and what to do."""


# ---------------------------------------------------------------- which source


@dataclass(frozen=True)
class Where:
    """A parsed source: a local file (`path`) or a Hub dataset (`repo_id`)."""

    kind: str  # "local file" or "hub"
    path: Path | None = None
    repo_id: str | None = None


def parse_source(source: str | Path) -> Where:
    """A local data file or a Hub id; DataSourceError for a missing file, a folder, another file type."""
    text = str(source).strip()
    if not text:
        raise DataSourceError(
            "the dataset source is empty: give a Hub id (org/name) or a .json/.jsonl/.parquet/.csv file"
        )
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if (
        isinstance(source, Path)
        or suffix in LOCAL_FORMATS
        or suffix in OTHER_FILE_SUFFIXES
        or looks_like_path(text)
    ):
        if path.is_dir():
            raise DataSourceError(f"{text} is a folder; give one data file ({_formats()})")
        if suffix not in LOCAL_FORMATS:
            raise DataSourceError(
                f"{text}: unsupported file type {suffix or '(no extension)'}; the course reads {_formats()}"
            )
        if not path.is_file():
            raise DataSourceError(f"{text}: no such file")
        return Where("local file", path=path)
    if not is_repo_id(text):
        raise DataSourceError(f"{text!r} is neither a data file ({_formats()}) nor a Hub id like org/name")
    return Where("hub", repo_id=text)


def check_source(source: str | None) -> None:
    """Fail at once (before any model loads) on a source that cannot work: a missing file, a wrong type."""
    if source is not None:
        parse_source(source)


def check_source_argument(source: object, loader: str) -> None:
    """The loaders take the source first: an old call like load_alpaca(1000, 3407) fails clearly."""
    if source is not None and not isinstance(source, (str, Path)):
        raise TypeError(
            f"{loader}(source, ...): source must be a Hub id or a file path (None: the default), "
            f"got {type(source).__name__} {source!r}; give the row count by name (n_rows=...)"
        )


def _formats() -> str:
    return ", ".join(LOCAL_FORMATS)


# ---------------------------------------------------------------- provenance


def source_record(kind: str, line: str, repo_id: str | None = None, path: Path | str | None = None) -> dict:
    """The provenance of loaded data: kind (one of KINDS), id (Hub id), path (local file), the line."""
    if kind not in KINDS:
        raise ValueError(f"unknown source kind {kind!r}; allowed: {', '.join(KINDS)}")
    return {"kind": kind, "id": repo_id, "path": None if path is None else str(path), "line": line}


class Texts(list):
    """A list of strings that remembers where it came from (`source_of(texts)`); slices are plain lists."""

    source: dict


def attach_source(data: Any, record: dict) -> Any:
    """Store `record` on `data` (a Dataset, each split of a DatasetDict, or Texts) and return `data`.

    Datasets keep it in `info.description`, which select, shuffle, filter, map and train_test_split copy."""
    if isinstance(data, DatasetDict):
        for split in data.values():
            attach_source(split, record)
    elif isinstance(data, (Dataset, IterableDataset)):
        data.info.description = SOURCE_MARK + json.dumps(record)
    elif isinstance(data, Texts):
        data.source = dict(record)
    else:
        raise TypeError(f"attach_source: cannot store a source on a {type(data).__name__}")
    return data


def source_of(data: Any) -> dict:
    """Where loaded data came from: {"kind", "id", "path", "line"} as its loader printed it.

    Works on what the loaders return and on datasets derived from them (select, shuffle, filter, map,
    train_test_split); a DatasetDict answers for its first split."""
    if isinstance(data, DatasetDict):
        if not data:
            raise ValueError("source_of: the DatasetDict is empty")
        data = next(iter(data.values()))
    if isinstance(data, Texts) and hasattr(data, "source"):
        return dict(data.source)
    description = getattr(getattr(data, "info", None), "description", None) or ""
    if description.startswith(SOURCE_MARK):
        return json.loads(description[len(SOURCE_MARK) :])
    raise ValueError(
        f"source_of: this {type(data).__name__} carries no source: it was not returned by an "
        "unsloth_course.data loader (or was rebuilt with Dataset.from_list/from_dict since)"
    )


# ---------------------------------------------------------------- local files


def _json_rows(path: Path) -> list[dict]:
    """The rows of a JSON array of objects or of a JSON Lines file; DataSourceError naming the line or row."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataSourceError(
                        f"{path}: cannot be read as JSON Lines: line {number}: {error.msg} "
                        f"(column {error.colno})"
                    ) from error
                if not isinstance(rows[-1], dict):
                    raise DataSourceError(f"{path}: line {number} is not a JSON object (one row per line)")
        return rows
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataSourceError(
            f"{path}: cannot be read as JSON: line {error.lineno}: {error.msg} (column "
            f"{error.colno}); a .json file holds one array of objects, a .jsonl file one "
            "object per line"
        ) from error
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise DataSourceError(
            f"{path}: expected a JSON array of objects, one per row (or JSON Lines in a .jsonl file)"
        )
    return rows


def _check_consistent_types(rows: list[dict], path: Path) -> None:
    """Every value of a column has one type (None aside): arrow needs it, and a number among strings would
    otherwise be converted silently (or make the whole column numbers)."""
    first: dict[str, tuple[int, type]] = {}
    for index, row in enumerate(rows):
        for column, value in row.items():
            if value is None:
                continue
            seen = first.setdefault(column, (index, type(value)))
            if type(value) is not seen[1]:
                where = _where_in_file(f"row {index} ", path).strip()
                raise DataSourceError(
                    f"{path}: {where}: column {column!r} is {type(value).__name__}, but row "
                    f"{seen[0]} has {seen[1].__name__}: give every row the same type"
                )


def _read_file(path: Path) -> Dataset:
    suffix = path.suffix.lower()
    if suffix == ".csv":  # every cell a string, an empty cell "" (not NaN/None): "0042" stays "0042"
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return Dataset.from_pandas(frame, preserve_index=False)
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    rows = _json_rows(path)  # parsed here rather than by pyarrow: errors can name the line
    _check_consistent_types(rows, path)
    columns = dict.fromkeys(key for row in rows for key in row)  # every key of every row; absent: None
    return Dataset.from_dict({column: [row.get(column) for row in rows] for column in columns})


def _where_in_file(message: str, path: Path) -> str:
    """Say where validate_rows' "row N ..." (counted from 0) is in the file: its line, for line-based files."""
    match = re.match(r"row (\d+) ", message)
    if not match:
        return message
    row, suffix = int(match.group(1)), path.suffix.lower()
    if suffix == ".jsonl":
        where = f"line {row + 1} of the file"
    elif suffix == ".csv":
        where = f"line {row + 2} of the file, after the header"
    else:
        where = "counting from 0"
    return f"row {row} ({where}){message[match.end() - 1 :]}"


def read_local(
    path: Path,
    name: str,
    schema: dict[str, Any],
    allow_empty: tuple[str, ...] = (),
    schema_of: str | None = None,
) -> Dataset:
    """A local data file as a Dataset, every row checked against `schema` (all rows, before any sampling):
    errors name the file, the row and the column."""
    try:
        dataset = _read_file(path)
    except DataSourceError:
        raise
    except Exception as error:  # noqa: BLE001 -- any reader failure: say which file
        raise DataSourceError(
            f"{path}: cannot be read as {LOCAL_FORMATS[path.suffix.lower()]}: {error_summary(error)}"
        ) from error
    require_columns(dataset.column_names, schema, name, str(path), schema_of=schema_of)
    try:
        validate_rows(dataset, schema, name, allow_empty=allow_empty)
    except ValueError as error:
        raise DataSourceError(f"{path}: {_where_in_file(str(error), path)}") from error
    return dataset


def require_columns(
    columns: list[str] | None, schema: dict[str, Any], name: str, where: str, schema_of: str | None = None
) -> None:
    """DataSourceError naming the missing columns, the columns there are, and the ones the course needs."""
    if columns is None:
        return  # a stream without declared features: validation checks the rows themselves
    missing = [column for column in schema if column not in columns]
    if missing:
        of = f" (the schema of {schema_of})" if schema_of else ""
        named = ", ".join(map(repr, missing))
        raise DataSourceError(
            f"{where}: column{'s' * (len(missing) > 1)} {named} missing; its columns: "
            f"{', '.join(columns) or 'none'}. The {name} data needs {', '.join(schema)}{of}. "
            f"Use a dataset with these columns, or {OWN_DATA_HINT}"
        )


# ---------------------------------------------------------------- the Hub


def load_hub_dataset(
    repo_id: str, config: str | None = None, streaming: bool = False
) -> Dataset | IterableDataset:
    """datasets.load_dataset(repo_id, config, split="train") with the course's token (HF_TOKEN or Colab's)."""
    from datasets import load_dataset

    return load_dataset(repo_id, config, split="train", streaming=streaming, token=hf_token())


def hub_failure(repo_id: str, error: BaseException) -> str:
    """What an error of a Hub that answered means, and what to do."""
    from datasets.data_files import EmptyDatasetError
    from datasets.exceptions import DataFilesNotFoundError, DatasetNotFoundError

    endpoint = settings.hub_endpoint()
    message = str(error)
    if isinstance(error, DatasetNotFoundError) and "gated" in message:
        return (
            f"{repo_id} is a gated dataset: accept its conditions on {endpoint}/datasets/{repo_id}, then set "
            f"HF_TOKEN to a token of that account (Colab: the key icon, secret HF_TOKEN); or {OWN_DATA_HINT}"
        )
    if isinstance(error, DatasetNotFoundError):
        return (
            f"dataset {repo_id} was not found on the Hub ({endpoint}): check the id; a private dataset "
            f"needs HF_TOKEN; or {OWN_DATA_HINT}"
        )
    if isinstance(error, RuntimeError) and "scripts are no longer supported" in message:
        script = message.rsplit("found ", 1)[-1]
        return (
            f"{repo_id} needs a loading script ({script}), which datasets 4 no longer runs: use a copy of it "
            f"in Parquet or JSON on the Hub, or download its data and pass {OWN_DATA_HINT}"
        )
    if isinstance(error, (EmptyDatasetError, DataFilesNotFoundError)):
        return (
            f"{repo_id} on the Hub has no data files that datasets can read ({_formats()}): "
            f"{error_summary(error, 160)}; or {OWN_DATA_HINT}"
        )
    if isinstance(error, ValueError) and 'Unknown split "train"' in message:
        return f"{repo_id} has no train split ({error_summary(error, 160)}); or {OWN_DATA_HINT}"
    return f"loading {repo_id} from the Hub ({endpoint}) failed: {error_summary(error)}; or {OWN_DATA_HINT}"


def validate_hub_rows(
    dataset: Dataset,
    schema: dict[str, Any],
    name: str,
    repo_id: str | None,
    allow_empty: tuple[str, ...] = (),
) -> None:
    """validate_rows on rows from the Hub (or its cache), the error naming the dataset."""
    try:
        validate_rows(dataset, schema, name, allow_empty=allow_empty)
    except ValueError as error:
        raise DataSourceError(f"{repo_id} (rows as loaded, sampled): {error}; or {OWN_DATA_HINT}") from error


# ---------------------------------------------------------------- the decision


@dataclass
class Fetched:
    """What `fetch` found: `rows` (None: use generated rows), its kind, the Hub id or file, and why."""

    rows: Dataset | IterableDataset | None
    kind: str
    repo_id: str | None = None
    path: Path | None = None
    reason: str = ""

    def line(self, name: str, count: str, schema: str, note: str = "", generated_from: str = "") -> str:
        """The one source line: `NAME: COUNT from ... (details)`; `schema` describes a local file's columns
        ("schema of yahma/alpaca-cleaned")."""
        note = f"; {note}" if note else ""
        if self.kind == "local file":
            return f"{name}: {count} from local file {self.path} ({schema}{note})"
        if self.kind == "hub":
            return f"{name}: {count} from {self.repo_id} on the Hub ({settings.hub_endpoint()}{note})"
        if self.kind == "cache":
            return (
                f"{name}: {count} from {self.repo_id} in the Hugging Face cache ({offline_variable()}{note})"
            )
        source = f" {generated_from}" if generated_from else ""
        return f"{name}: {count} generated by unsloth_course{source} ({self.reason}{note})"

    def record(self, line: str) -> dict:
        return source_record(self.kind, line, repo_id=self.repo_id, path=self.path)


def fetch(
    source: str | Path | None,
    default_id: str | None,
    name: str,
    schema: dict[str, Any],
    allow_empty: tuple[str, ...] = (),
    load: Callable[[str], Dataset | IterableDataset] | None = None,
) -> Fetched:
    """Decide where `name` data comes from (module docstring) and load it when it is not generated.

    `source`: a local file, a Hub id, or None (`default_id`; None too: generated rows). `load(repo_id)` loads
    from the Hub (default: load_hub_dataset). Local rows are validated here in full; Hub rows only have their
    columns checked (the loader drops blank rows, samples, then validates)."""
    if source is None and default_id is None:
        return Fetched(None, "generated", reason="no dataset given")
    where = parse_source(source if source is not None else default_id)
    if where.kind == "local file":
        rows = read_local(where.path, name, schema, allow_empty, schema_of=default_id)
        return Fetched(rows, "local file", path=where.path)
    repo_id = where.repo_id
    mode, endpoint = hub_mode(), settings.hub_endpoint()
    own = repo_id != default_id  # a dataset the learner named: never replaced by generated rows
    if mode not in (ONLINE, OFFLINE):
        why = f"{endpoint} did not answer within {PROBE_TIMEOUT_S:.0f} s"
        if own:
            raise DataSourceError(f"cannot load {repo_id}: {why}; {OWN_DATA_HINT}")
        return Fetched(None, "generated", repo_id=repo_id, reason=f"{why}, so {repo_id} was not loaded")
    try:
        rows = (load or load_hub_dataset)(repo_id)
    except DataSourceError:
        raise  # already says what is wrong with the dataset
    except Exception as error:  # noqa: BLE001 -- sorted below: only a network failure falls back
        if not is_network_error(error):
            raise DataSourceError(hub_failure(repo_id, error)) from error
        if mode == OFFLINE:
            why = f"{offline_variable()} and {repo_id} is not in the Hugging Face cache"
        else:
            why = f"loading {repo_id} from the Hub ({endpoint}) failed: {network_failure(error)}"
            warn(f"{why}. Check the connection or HF_ENDPOINT; the course continues with generated rows")
        if own:
            raise DataSourceError(f"cannot load {repo_id}: {why}; {OWN_DATA_HINT}") from error
        return Fetched(None, "generated", repo_id=repo_id, reason=why)
    require_columns(rows.column_names, schema, name, repo_id, schema_of=default_id)
    return Fetched(rows, "hub" if mode == ONLINE else "cache", repo_id=repo_id)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' * (count != 1)}"


def load_rows(
    source: str | Path | None,
    default_id: str,
    name: str,
    schema: dict[str, Any],
    *,
    n_rows: int | None,
    seed: int,
    generate: Callable[[int], list[dict]],
    default_n: int,
    allow_empty: tuple[str, ...] = (),
) -> Dataset:
    """Rows with the columns of `schema` from `fetch`, `n_rows` of them (None: all) sampled with `seed`;
    printed as one `NAME data: ...` line and recorded for source_of.

    Hub rows whose required columns are blank are dropped (a Hub dataset cannot be fixed here; the line says
    how many); a local file must have none (the error names the row). Generated rows: `generate(n)`."""
    if n_rows is not None and (isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1):
        raise ValueError(f"{name} data: n_rows must be a positive integer or None, got {n_rows!r}")
    from unsloth_course.data.validation import drop_blank_rows

    fetched = fetch(source, default_id, name, schema, allow_empty=allow_empty)
    notes = []
    if fetched.rows is None:
        dataset = Dataset.from_list(generate(n_rows or default_n))
    else:
        dataset = fetched.rows.select_columns(list(schema))
        if fetched.kind != "local file":
            required = tuple(column for column in schema if column not in allow_empty)
            dataset, dropped = drop_blank_rows(dataset, required)
            if dropped:
                notes.append(f"{_plural(dropped, 'blank row')} dropped")
        if n_rows is not None and n_rows < len(dataset):
            dataset = dataset.shuffle(seed=seed).select(range(n_rows))
        elif n_rows is not None and n_rows > len(dataset):
            notes.append(f"all of them: {n_rows:,} asked")
        if fetched.kind != "local file":
            validate_hub_rows(dataset, schema, name, fetched.repo_id, allow_empty)
    line = fetched.line(
        f"{name} data", _plural(len(dataset), "row"), f"schema of {default_id}", "; ".join(notes)
    )
    print(line, flush=True)
    return attach_source(dataset, fetched.record(line))
