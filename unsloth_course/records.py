"""Run records: what a notebook or `unsloth-course run` measured, saved as runs/<technique>.json."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from unsloth_course.backend import backend_info

import pandas as pd

from unsloth_course import settings


def json_safe(value: Any, digits: int = 6) -> Any:
    """`value` as plain JSON: results with to_record() (evaluation's results, statistics.Estimate) as their
    records, other dataclasses as dicts, tuples as lists, numpy/torch scalars as numbers, floats rounded to
    `digits` significant digits, NaN and infinities as None (JSON has neither), intervals as [low, high]."""
    if hasattr(value, "to_record") and callable(value.to_record):
        return json_safe(value.to_record(), digits)
    if is_dataclass(value) and not isinstance(value, type):
        return json_safe(asdict(value), digits)
    if isinstance(value, dict):
        return {str(k): json_safe(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, digits) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a numpy or torch scalar
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    return str(value)


def write_run_record(technique: str, record: dict, runs_dir: Path | str | None = None) -> Path:
    """Save runs/<technique>.json so later notebooks and the README compare measured numbers.

    Values that are not plain JSON (evaluation results, Estimates, dataclasses, numpy numbers) are written
    through json_safe; plain floats are kept as they are."""
    folder = Path(runs_dir or settings.runs_dir())
    if not settings.is_main_process():  # under torchrun/accelerate only rank 0 writes
        return folder / f"{technique}.json"
    folder.mkdir(parents=True, exist_ok=True)
    info = backend_info()
    payload = {"technique": technique, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
               "backend": asdict(info), **record}
    path = folder / f"{technique}.json"
    path.write_text(json.dumps(payload, indent=2, default=json_safe))
    return path


def read_run_records(runs_dir: Path | str | None = None) -> dict[str, dict]:
    folder = Path(runs_dir or settings.runs_dir())
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


COMPARED = {"trainable_params": "trainable parameters", "trainable_pct": "trainable %", "runtime_s": "time (s)",
            "tokens_per_s": "tokens/s", "memory_peak_gb": "peak memory (GB)", "checkpoint_mb": "checkpoint (MB)",
            "profile": "profile"}


def _held_out_loss(record: dict, stage: str) -> float | None:
    value = (record.get("held_out") or {}).get(stage)
    return value.get("loss") if isinstance(value, dict) else None


def comparison_table(runs: dict[str, dict]) -> pd.DataFrame:
    """Run records side by side (notebook 2 compares LoRA with notebook 1): held-out answer loss before and after,
    then the costs. A column per run."""
    columns = {}
    for name, record in runs.items():
        column = {"held-out answer loss before": _held_out_loss(record, "before"),
                  "held-out answer loss after": _held_out_loss(record, "after")}
        column.update({label: record.get(key) for key, label in COMPARED.items()})
        column["device"] = (record.get("backend") or {}).get("device_name")
        columns[name] = column
    return pd.DataFrame(columns)
