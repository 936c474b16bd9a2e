"""Run the course's loaders in this process and print what they returned or raised, one JSON line per call.

    python tests/hub/course_clients.py CALL ...

Each CALL is a JSON object: {"kind": KIND, ...keyword arguments}. KIND is sft, dpo, code, prose, math (the
unsloth_course.data loaders; "source" and the sizes as keyword arguments) or model (models.resolve_model,
"name"). HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE come from the environment, read fresh by this process. Each
call prints `RESULT {"call": CALL, "value": {...}}` with what the loader printed (stdout lines, stderr lines),
its source (data.source_of / models.model_source) and its rows, or `"error": [...]`, the exception chain.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import exception_chain  # noqa: E402  (this folder, run as a script)


def _rows(dataset) -> list[dict]:
    return [dict(row) for row in dataset]


def _call(kind: str, **kwargs) -> dict:
    from unsloth_course import data, models

    if kind == "model":
        path = models.resolve_model(kwargs.get("name", models.DEFAULT_MODEL))
        return {"path": path, "source": models.model_source()}
    if kind == "sft":
        dataset = data.load_alpaca(**kwargs)
    elif kind == "dpo":
        dataset = data.load_orca_dpo(**kwargs)
    elif kind == "prose":
        texts = data.load_general_prose(**kwargs)
        return {"source": data.source_of(texts), "texts": list(texts)}
    elif kind in ("code", "math"):
        splits = (data.load_python_code if kind == "code" else data.load_math_problems)(**kwargs)
        return {"source": data.source_of(splits), "train": _rows(splits["train"]),
                "test": _rows(splits["test"])}
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return {"source": data.source_of(dataset), "rows": _rows(dataset)}


def main(calls: list[str]) -> None:
    logging.disable(logging.WARNING)
    for call in calls:
        spec = json.loads(call)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                value = _call(**spec)
            result = {"call": call, "value": value}
        except Exception as exc:  # the point: record what the loader raised
            result = {"call": call, "error": exception_chain(exc)}
        result["stdout"] = [line for line in out.getvalue().splitlines() if line.strip()]
        result["stderr"] = [line for line in err.getvalue().splitlines() if line.startswith("WARNING")]
        print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
