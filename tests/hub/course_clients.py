"""Run the course's loaders in this process and print what they returned or raised, one JSON line per call.

    python tests/hub/course_clients.py CALL ...

Each CALL is a JSON object: {"kind": KIND, ...keyword arguments}. KIND is sft, dpo, code, prose, math (the
unsloth_course.data loaders; "source" and the sizes as keyword arguments), model (models.resolve_model,
"name"), or raw (a library call of clients.py, "call": "dataset:REPO", or "config:REPO" for hf_hub_download
of its config.json, whose exception is classified by hub.is_network_error). HF_ENDPOINT, HF_HOME and
HF_HUB_OFFLINE come from the environment, read fresh by this process. Each call prints
`RESULT {"call": CALL, "value": {...}}` with its source (data.source_of / models.model_source) and rows,
or `"error": [...]`, the exception chain, and `"network"`, what is_network_error says of it; plus what it
printed (stdout lines, WARNING lines of stderr) and its seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import CALLS, exception_chain  # noqa: E402  (this folder, run as a script)


def _rows(dataset) -> list[dict]:
    return [dict(row) for row in dataset]


def _call(kind: str, **kwargs) -> dict:
    from unsloth_course import data, models

    if kind == "raw":
        library_call, *args = kwargs["call"].split(":")
        if library_call == "config":  # what resolve_model asks first
            from huggingface_hub import hf_hub_download

            return {"path": hf_hub_download(args[0], "config.json")}
        return CALLS[library_call](*args)
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
        return {
            "source": data.source_of(splits),
            "train": _rows(splits["train"]),
            "test": _rows(splits["test"]),
        }
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return {"source": data.source_of(dataset), "rows": _rows(dataset)}


def main(calls: list[str]) -> None:
    from unsloth_course.hub import is_network_error

    logging.disable(logging.WARNING)
    for call in calls:
        spec = json.loads(call)
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                value = _call(**spec)
            result = {"call": call, "value": value}
        except Exception as exc:  # the point: record what the loader raised
            result = {"call": call, "error": exception_chain(exc), "network": is_network_error(exc)}
        result["seconds"] = round(time.perf_counter() - started, 2)
        result["stdout"] = [line for line in out.getvalue().splitlines() if line.strip()]
        result["stderr"] = [line for line in err.getvalue().splitlines() if line.startswith("WARNING")]
        print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
