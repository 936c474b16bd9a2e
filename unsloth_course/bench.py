"""Benchmark one technique on both backends with the same recipe, data and settings.

Each backend runs in its own process (the backend is chosen at import: UNSLOTH_COURSE_BACKEND=unsloth|plain)
through `unsloth-course run`, and the run records are compared: step time, trained tokens/s (padding not
counted), peak GPU memory, loss at matching steps, and the Unsloth/plain ratio. On a CPU only the plain
backend runs, and the table says why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def available_backends() -> tuple[list[str], str]:
    """Backends this machine can run, and why Unsloth is missing when it is."""
    if not torch.cuda.is_available():
        return ["plain"], "no CUDA GPU: Unsloth cannot run here, so only the plain backend is measured"
    if importlib.util.find_spec("unsloth") is None:
        return ["plain"], "unsloth is not installed: only the plain backend is measured"
    return ["unsloth", "plain"], "both backends, same recipe and data"


def run_backend(technique: str, backend: str, profile: str, steps: int | None, workdir: Path) -> dict:
    """`unsloth-course run` in a child process with the backend forced; returns its run record."""
    runs = workdir / f"runs-{backend}"
    env = dict(os.environ, UNSLOTH_COURSE_BACKEND=backend, UNSLOTH_COURSE_RUNS=str(runs))
    command = [sys.executable, "-m", "unsloth_course", "run", technique, "--profile", profile,
               "--output-dir", str(workdir / f"out-{backend}")]
    if steps:
        command += ["--max-steps", str(steps)]
    print(f"bench: {backend} backend: {' '.join(command[1:])}", flush=True)
    completed = subprocess.run(command, env=env, text=True, capture_output=True)
    if completed.returncode:
        raise RuntimeError(f"{backend} run failed (exit {completed.returncode}):\n{completed.stdout[-3000:]}"
                           f"\n{completed.stderr[-3000:]}")
    return json.loads((runs / f"{technique}.json").read_text())


def measurements(record: dict) -> dict:
    steps = record.get("steps") or 0
    runtime = record.get("runtime_s") or 0.0
    return {
        "steps": steps,
        "step_time_s": round(runtime / steps, 4) if steps else None,
        "tokens_per_s": record.get("tokens_per_s"),
        "peak_memory_gb": record.get("memory_peak_gb"),
        "memory_device": record.get("memory_device"),
        "loss_curve": record.get("loss_curve", []),
        "backend_reason": record.get("backend", {}).get("reason"),
    }


def _loss_at(curve: list, step: int) -> float | None:
    return next((loss for s, loss in curve if s == step), None)


def format_table(technique: str, results: dict[str, dict], note: str) -> str:
    steps = sorted({s for r in results.values() for s, _ in r["loss_curve"]})
    checkpoints = sorted({steps[0], steps[len(steps) // 2], steps[-1]}) if steps else []
    header = ["backend", "step time (s)", "tokens/s", "peak memory (GB)"] + [f"loss @{s}" for s in checkpoints]
    lines = [f"bench {technique}: {note}", " | ".join(header), " | ".join("---" for _ in header)]
    for backend, r in results.items():
        row = [backend, f"{r['step_time_s']:.3f}" if r["step_time_s"] else "-",
               f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-",
               f"{r['peak_memory_gb']:.2f} ({r['memory_device']})"]
        row += [f"{_loss_at(r['loss_curve'], s):.4f}" if _loss_at(r["loss_curve"], s) is not None else "-"
                for s in checkpoints]
        lines.append(" | ".join(row))
    if {"unsloth", "plain"} <= results.keys():
        u, p = results["unsloth"], results["plain"]
        if u["tokens_per_s"] and p["tokens_per_s"]:
            lines.append(f"Unsloth / plain tokens/s: {u['tokens_per_s'] / p['tokens_per_s']:.2f}x; "
                         f"peak memory: {u['peak_memory_gb'] / p['peak_memory_gb']:.2f}x")
    return "\n".join(lines)


def bench(technique: str, profile: str = "full", steps: int | None = None, json_path: str | None = None,
          workdir: str | None = None) -> dict:
    backends, note = available_backends()
    with tempfile.TemporaryDirectory(prefix="unsloth-course-bench-") as tmp:
        root = Path(workdir or tmp)
        results = {b: measurements(run_backend(technique, b, profile, steps, root)) for b in backends}
    report = {"technique": technique, "profile": profile, "note": note, "results": results}
    print(format_table(technique, results, note))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
        print(f"bench: JSON written to {json_path}")
    return report
