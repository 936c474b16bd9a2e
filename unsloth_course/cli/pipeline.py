"""Chain techniques: each stage trains from the previous stage's merged model, e.g. CPT -> SFT -> DPO.

    unsloth-course pipeline cpt sft dpo --quick

Stage names are the technique names (cpt, lora, full, dpo, grpo) plus `sft`, an alias of the LoRA SFT stage.
Stage k writes <output_root>/<k>-<stage>/ and its run record to runs/pipeline/<k>-<stage>.json; the next
stage loads <output_root>/<k>-<stage>/merged (LoRA stages; `model/` for full fine-tuning). The pipeline ends
with one summary of every stage's own metric, also written to runs/pipeline.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from unsloth_course import settings
from unsloth_course.cli.run import run
from unsloth_course.recipes import get_recipe
from unsloth_course.records import json_safe

STAGES = {"cpt": "cpt", "sft": "lora", "lora": "lora", "full": "full", "dpo": "dpo", "grpo": "grpo"}


class PipelineError(ValueError):
    """Bad pipeline input (unknown or no stages) or a stage that left no model for the next; raised before
    any work for input errors."""


def resolve_stages(stages: Sequence[str]) -> list[tuple[str, str]]:
    """[(stage name, technique)], every name checked before anything runs."""
    if isinstance(stages, str):
        stages = stages.split()
    if not stages:
        raise PipelineError(f"no stages given; e.g. `pipeline cpt sft dpo` (allowed: {_allowed()})")
    unknown = [s for s in stages if str(s).lower() not in STAGES]
    if unknown:
        raise PipelineError(f"unknown pipeline stage(s) {', '.join(map(repr, unknown))}; allowed: {_allowed()}")
    return [(str(s).lower(), STAGES[str(s).lower()]) for s in stages]


def _allowed() -> str:
    return "cpt, sft (= lora, LoRA supervised fine-tuning), lora, full, dpo, grpo"


def stage_model_dir(stage_dir: Path) -> Path:
    """The model a finished stage hands on: merged/ (LoRA stages) or model/ (full fine-tuning)."""
    for name in ("merged", "model"):
        if (stage_dir / name / "config.json").is_file():
            return stage_dir / name
    raise PipelineError(f"{stage_dir} has no merged/ (or model/) checkpoint, so the next stage has nothing to "
                        "start from")


def stage_metric(technique: str, result: dict) -> str:
    """Each stage's own held-out measure, in one line (result: what cli.run.run returned)."""
    held_out = result.get("held_out")
    if held_out is None:
        return ""
    if technique == "cpt":
        return "; ".join(f"{name} perplexity {c.before.perplexity.value:.2f} -> {c.after.perplexity.value:.2f}"
                         for name, c in held_out.items())
    if technique in ("lora", "full"):
        return f"held-out answer loss {held_out.before.loss.value:.3f} -> {held_out.after.loss.value:.3f}"
    if technique == "dpo":
        before, after = held_out["before"], held_out["after"]
        return (f"held-out preference accuracy {before.logp_accuracy.value:.1%} -> {after.logp_accuracy.value:.1%};"
                f" implicit-reward accuracy {after.reward_accuracy}")
    if technique == "grpo":
        base, after = held_out["base"], held_out["after"]
        return (f"held-out accuracy {base.accuracy.value:.1%} -> {after.accuracy.value:.1%}, strict format "
                f"{base.strict_format.value:.1%} -> {after.strict_format.value:.1%}")
    return ""


def format_summary(stages: list[dict]) -> str:
    """The pipeline summary: one row per stage, then the SFT stages' answers."""
    lines = ["| # | stage | technique | started from | steps | time (s) | loss first -> last | metric |",
             "|---|---|---|---|---|---|---|---|"]
    for s in stages:
        lines.append(f"| {s['index']} | {s['stage']} | {s['technique']} | {s['model_from']} | {s['steps']} | "
                     f"{s['wall_s']:.0f} | {s['first_loss']} -> {s['last_loss']} | {s['metric']} |")
    for s in stages:
        if s["technique"] in ("lora", "full"):
            lines.append(f"\nanswers after stage {s['index']} ({s['stage']}):")
            for row in s.get("answers", []):
                answer = row["after training"].replace("\n", " ")
                lines.append(f"- {row['prompt'][:70].replace(chr(10), ' ')!r}\n    -> {answer[:300]}")
    return "\n".join(lines)


def run_pipeline(stages: Sequence[str], quick: bool | None = None, output_root: str | Path = "outputs/pipeline",
                 max_steps: int | None = None, model_name: str | None = None,
                 runs_dir: str | Path | None = None, **recipe_overrides) -> dict:
    """Run `stages` in order, each from the previous stage's merged model; print and return the summary.

    quick: the quick profile (None: UNSLOTH_COURSE_QUICK). max_steps and recipe_overrides apply to every
    stage's recipe. runs_dir: where runs/pipeline.json and runs/pipeline/<k>-<stage>.json go.
    """
    plan = resolve_stages(stages)
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps <= 0):
        raise PipelineError(f"max_steps={max_steps!r} must be a positive integer")
    profile = None if quick is None else ("quick" if quick else "full")
    overrides = dict(recipe_overrides)
    if max_steps:
        overrides["max_steps"] = max_steps
    try:  # every recipe is built (and so validated) before the first stage trains
        recipes = [get_recipe(technique, profile, **overrides) for _, technique in plan]
    except (TypeError, ValueError) as error:
        raise PipelineError(f"invalid recipe override for the pipeline: {error}") from error
    runs = Path(runs_dir or settings.runs_dir())
    root = Path(output_root)
    current = model_name or recipes[0].model_name
    started = time.time()
    summary: list[dict] = []
    for index, ((stage, technique), recipe) in enumerate(zip(plan, recipes), start=1):
        stage_dir = root / f"{index}-{stage}"
        print(f"\n########## pipeline stage {index}/{len(plan)}: {stage} ({technique}) from {current}")
        result = run(technique, recipe, stage_dir, model_name=current, runs_dir=runs / "pipeline",
                     record_name=f"{index}-{stage}")
        next_model = stage_model_dir(stage_dir)
        entry = {"index": index, "stage": stage, "technique": technique, "model_from": str(current),
                 "output_dir": str(stage_dir), "model_out": str(next_model), "steps": result.get("steps"),
                 "wall_s": result.get("wall_s", 0.0), "first_loss": result.get("first_loss"),
                 "last_loss": result.get("last_loss"), "metric": stage_metric(technique, result),
                 "record": str(runs / "pipeline" / f"{index}-{stage}.json")}
        if "held_out" in result:
            entry["held_out"] = json_safe(result["held_out"])
        if technique in ("lora", "full"):
            entry["answers"] = result.get("answers", [])
        summary.append(entry)
        current = str(next_model)
    record = {"stages": summary, "profile": recipes[0].profile, "max_steps": max_steps,
              "model_from": model_name or recipes[0].model_name, "final_model": current,
              "wall_s": round(time.time() - started, 1), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / "pipeline.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    print(f"\n########## pipeline summary ({' -> '.join(s for s, _ in plan)}, {record['wall_s']:.0f} s)")
    print(format_summary(summary))
    print(f"\nfinal model: {current}\npipeline record: {path}")
    return record


__all__ = ["STAGES", "PipelineError", "format_summary", "resolve_stages", "run_pipeline", "stage_metric"]
