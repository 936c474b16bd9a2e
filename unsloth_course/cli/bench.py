"""Benchmark one technique on both backends with the same recipe, data and settings.

Each backend runs in its own process (the backend is chosen at import: UNSLOTH_COURSE_BACKEND=unsloth|plain)
through `unsloth-course run --train-only` (no answers, evaluation or saving), and the run records are
compared: step time, trained tokens/s (padding not counted), peak GPU memory, loss at matching steps, and the
Unsloth/plain ratio; for GRPO also generated tokens/s and the share of time spent generating. A backend that
fails (e.g. out of memory, or past its timeout) gets its error in the table, and the other still runs. On a CPU only
the plain backend runs, and the table says why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from unsloth_course.recipes import TECHNIQUES, get_recipe, parse_overrides


def available_backends() -> tuple[list[str], str]:
    """Backends this machine can run, and why Unsloth is missing when it is."""
    if not torch.cuda.is_available():
        return ["plain"], "no CUDA GPU: Unsloth cannot run here, so only the plain backend is measured"
    if importlib.util.find_spec("unsloth") is None:
        return ["plain"], "unsloth is not installed: only the plain backend is measured"
    return ["unsloth", "plain"], "both backends, same recipe and data"


class BackendTimeout(RuntimeError):
    """A backend's run went past its timeout and was killed."""


def run_backend(technique: str, backend: str, profile: str, steps: int | None, workdir: Path,
                torch_profile: int | None = None, timeout: float | None = None,
                overrides: Sequence[str] = ()) -> dict:
    """`unsloth-course run` in a child process with the backend forced; returns its run record.

    The child's output goes to workdir/TECHNIQUE-BACKEND.log as it runs (a run cut off still shows how far it
    got); after `timeout` seconds the child is killed and RuntimeError says so.
    """
    runs = workdir / f"runs-{backend}"
    env = dict(os.environ, UNSLOTH_COURSE_BACKEND=backend, UNSLOTH_COURSE_RUNS=str(runs))
    if torch_profile:
        env["UNSLOTH_COURSE_TORCH_PROFILE"] = str(torch_profile)
    command = [sys.executable, "-m", "unsloth_course", "run", technique, "--profile", profile,
               "--output-dir", str(workdir / f"out-{backend}"), "--train-only"]
    if steps:
        command += ["--max-steps", str(steps)]
    for item in overrides:
        command += ["--set", item]
    print(f"bench: {backend} backend: {' '.join(command[1:])}", flush=True)
    record_path = runs / f"{technique}.json"
    record_path.unlink(missing_ok=True)  # a record found later was written by this run
    log = workdir / f"{technique}-{backend}.log"
    with log.open("w") as sink:
        try:
            returncode = subprocess.run(command, env=env, text=True, stdout=sink, stderr=subprocess.STDOUT,
                                        timeout=timeout).returncode
        except subprocess.TimeoutExpired:  # subprocess.run killed the child
            returncode = None
    output = log.read_text(errors="replace")
    if torch_profile:
        _print_profile(output, backend)
    if returncode is None:
        if record_path.is_file():  # training finished and was recorded; the process was cut off before it exited
            record = json.loads(record_path.read_text())
            record["exit_note"] = f"wrote its run record, then did not exit within the {timeout:.0f} s limit"
            print(f"bench: {backend} backend {record['exit_note']}: its record is used", flush=True)
            return record
        raise BackendTimeout(f"{backend} run timed out after {timeout:.0f} s; its log ends:\n{output[-3000:]}")
    if returncode:
        raise RuntimeError(f"{backend} run failed (exit {returncode}):\n{output[-3000:]}")
    return json.loads(record_path.read_text())


def _print_profile(stdout: str, backend: str) -> None:
    start = stdout.find("torch.profiler:")
    if start >= 0:
        print(f"bench: {backend} backend, {stdout[start:].split(chr(10) + chr(10))[0]}", flush=True)


def _error_line(error: Exception) -> str:
    text = str(error)
    if "out of memory" in text.lower():
        return "CUDA out of memory"
    if isinstance(error, BackendTimeout):  # its last lines are the child's log, not the reason
        return text.split(";")[0]
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:200]


def failure_note(technique: str, profile: str, backend: str, error: str, overrides: Sequence[str] = ()) -> str | None:
    """Why a backend failed, where it is known (measured on the H100)."""
    recipe = get_recipe(technique, profile, **parse_overrides(technique, overrides))
    if (backend == "plain" and getattr(recipe, "packing", False) and recipe.attn_implementation in (None, "sdpa")
            and "out of memory" in error.lower()):
        rows, length = recipe.per_device_train_batch_size, recipe.max_seq_length
        return ("plain ran out of memory on packed rows: TRL's bfd packing turns on padding-free batches, which "
                f"flatten the micro-batch into one sequence ({rows} x {length} rows become one of "
                f"{rows * length:,} tokens), and "
                "without flash-attention installed transformers falls back to SDPA, which warns that it does not "
                "support this and failed allocating 1.97 GiB inside scaled_dot_product_attention on the H100 "
                "(memory that grows with the square of the flattened length); Unsloth runs the same batch")
    if backend == "plain" and "out of memory" in error.lower() and profile == "throughput" and technique in _PLAIN_PEAK:
        unit, measured = _PLAIN_PEAK[technique]
        batch = recipe.per_device_train_batch_size
        return (f"plain ran out of memory at {batch} {unit} a step: it keeps the full fp32 logits (H200 peak, "
                f"{measured}); compare on an 80 GB card with `--set per_device_train_batch_size={batch // 2}` or less")
    return None


# The plain backend's peak memory on the H200 (2026-11-30): it materializes full fp32 logits, Unsloth chunks them
_PLAIN_PEAK = {"dpo": ("pairs", "128 pairs: 67 GB"), "grpo": ("completions", "512 completions: 97 GB")}


# Issue 7's targets on one H100 (throughput profile): trained tokens/s; for GRPO completion tokens per second of a
# steady step (generation and training together), like the other techniques' steady tokens/s (the whole-run figure
# also counts the first step's compilation)
TARGETS = {"full": ("tokens_per_s", 250_000), "cpt": ("tokens_per_s", 250_000), "lora": ("tokens_per_s", 300_000),
           "dpo": ("tokens_per_s", 80_000), "grpo": ("generated_tokens_per_step_s", 10_000)}


def load_reports(folder: Path) -> list[dict]:
    """The bench records `folder/bench-*.json`, in the order of recipes.TECHNIQUES."""
    reports = [json.loads(p.read_text()) for p in folder.glob("bench-*.json")]
    order = {t: i for i, t in enumerate(TECHNIQUES)}
    return sorted(reports, key=lambda r: order.get(r["technique"], len(order)))


def unsloth_over_plain(technique: str, results: dict[str, dict]) -> float | None:
    """Unsloth's measure (the target's: tokens/s, GRPO generated tokens/s) over plain's, where both ran."""
    key = TARGETS[technique][0]
    unsloth, plain = (results.get(b, {}) for b in ("unsloth", "plain"))
    if "error" in unsloth or "error" in plain or not unsloth.get(key) or not plain.get(key):
        return None
    return unsloth[key] / plain[key]


def target_verdict(technique: str, result: dict) -> str:
    """'met' or 'missed (x% of N)' for a measured backend against its technique's target."""
    key, target = TARGETS[technique]
    value = result.get(key)
    if not value:
        return "-"
    return "met" if value >= target else f"missed ({value / target:.0%} of {target:,})"


def measurements(record: dict) -> dict:
    steps = record.get("steps") or 0
    runtime = record.get("runtime_s") or 0.0
    generated = record.get("generated_tokens")
    step_time = record.get("step_time_median_s") or (round(runtime / steps, 4) if steps else None)
    per_run = {"generated_tokens": generated, "generated_tokens_per_run_s": round(generated / runtime, 1),
               # the mean completion tokens of a step over the median step time
               "generated_tokens_per_step_s": round(generated / steps / step_time, 1) if steps and step_time else None,
               } if generated and runtime else {}
    return {  # steady state (median over steps after the first two) where recorded, else the run average
        "steps": steps,
        "step_time_s": step_time,
        "tokens_per_s": record.get("steady_tokens_per_s") or record.get("tokens_per_s"),
        "average_tokens_per_s": record.get("tokens_per_s"),
        "peak_memory_gb": record.get("memory_peak_gb"),
        "memory_device": record.get("memory_device"),
        "loss_curve": record.get("loss_curve", []),
        "backend_reason": record.get("backend", {}).get("reason"),
        **{key: record[key] for key in ("generated_tokens_per_s", "generation_share", "generation_s",
                                        "memory_cap_gb", "exit_note") if record.get(key) is not None},
        **per_run,
    }


def _loss_at(curve: list, step: int) -> float | None:
    return next((loss for s, loss in curve if s == step), None)


def _format_loss(loss: float | None) -> str:
    """4 decimals, or 3 significant digits for tiny losses (GRPO's are ~3e-5)."""
    if loss is None:
        return "-"
    return f"{loss:.4f}" if abs(loss) >= 0.01 or loss == 0 else f"{loss:.3g}"


def format_table(technique: str, results: dict[str, dict], note: str, profile: str = "full",
                 overrides: Sequence[str] = ()) -> str:
    ok = {b: r for b, r in results.items() if "error" not in r}
    steps = sorted({s for r in ok.values() for s, _ in r["loss_curve"]})
    checkpoints = sorted({steps[0], steps[len(steps) // 2], steps[-1]}) if steps else []
    generation = any("generated_tokens_per_s" in r for r in ok.values())
    header = ["backend", "median step (s)", "tokens/s", "peak memory (GB)"]
    header += ["generated tokens/s (while generating)", "generated tokens/s (steady step)",
               "generated tokens/s (whole run)", "generation share"] if generation else []
    header += [f"loss @{s}" for s in checkpoints]
    lines = [f"bench {technique}: {note}", " | ".join(header), " | ".join("---" for _ in header)]
    for backend, r in results.items():
        if "error" in r:
            lines.append(" | ".join([backend, f"failed: {r['error']}"] + ["-"] * (len(header) - 2)))
            continue
        row = [backend, f"{r['step_time_s']:.3f}" if r["step_time_s"] else "-",
               f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-",
               f"{r['peak_memory_gb']:.2f} ({r['memory_device']})"]
        if generation:
            row += [f"{r[key]:,.0f}" if r.get(key) else "-"
                    for key in ("generated_tokens_per_s", "generated_tokens_per_step_s", "generated_tokens_per_run_s")]
            row += [f"{r['generation_share']:.0%}" if r.get("generation_share") is not None else "-"]
        row += [_format_loss(_loss_at(r["loss_curve"], s)) for s in checkpoints]
        lines.append(" | ".join(row))
    for backend, r in results.items():
        explained = failure_note(technique, profile, backend, r["error"], overrides) if "error" in r else None
        if explained:
            lines.append(f"{backend}: {explained}.")
        if r.get("exit_note"):
            lines.append(f"{backend}: {r['exit_note']}.")
    if technique == "dpo":
        lines.append("DPO generates nothing while training: its tokens/s counts the chosen and rejected "
                     "sequences (prompt included) of every pair.")
    if {"unsloth", "plain"} <= ok.keys():
        u, p = ok["unsloth"], ok["plain"]
        if u["tokens_per_s"] and p["tokens_per_s"]:
            lines.append(f"Unsloth / plain tokens/s: {u['tokens_per_s'] / p['tokens_per_s']:.2f}x; "
                         f"peak memory: {u['peak_memory_gb'] / p['peak_memory_gb']:.2f}x")
    return "\n".join(lines)


def bench(technique: str, profile: str = "full", steps: int | None = None, json_path: str | None = None,
          workdir: str | None = None, torch_profile: int | None = None, timeout: float | None = None,
          overrides: Sequence[str] = (), backends: Sequence[str] | None = None) -> dict:
    """Run `technique` on every available backend; print the table, optionally write JSON; return the report.

    workdir keeps the child runs' outputs and logs (default: a temporary folder). torch_profile=N profiles N
    steps of each run with torch.profiler and prints its top operators. timeout: seconds per backend run.
    overrides: recipe changes as KEY=VALUE, the same for every backend. backends: a subset to run.
    """
    available, note = available_backends()
    if backends is not None:
        unknown = [b for b in backends if b not in ("unsloth", "plain")]
        if unknown or not backends:
            raise ValueError(f"backends={list(backends)!r}: allowed unsloth, plain")
        missing = [b for b in backends if b not in available]
        if missing:
            raise ValueError(f"backend {missing[0]} cannot run here: {note}")
        note = f"{note}; run: {', '.join(backends)}"
    backends = list(backends or available)
    if overrides:
        note = f"{note}; recipe changes: {' '.join(overrides)}"
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="unsloth-course-bench-") as tmp:
        root = Path(workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        for backend in backends:
            try:
                results[backend] = measurements(run_backend(technique, backend, profile, steps, root, torch_profile,
                                                            timeout, overrides))
            except RuntimeError as error:  # one backend failing (e.g. OOM) must not hide the other's result
                results[backend] = {"error": _error_line(error)}
                print(f"bench: {backend} backend failed: {results[backend]['error']}", flush=True)
    if not any("error" not in r for r in results.values()):
        raise RuntimeError(f"bench {technique}: every backend failed: "
                           + "; ".join(f"{b}: {r['error']}" for b, r in results.items()))
    report = {"technique": technique, "profile": profile, "note": note, "overrides": list(overrides),
              "results": results}
    print(format_table(technique, results, note, profile, overrides))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
        print(f"bench: JSON written to {json_path}")
    return report
