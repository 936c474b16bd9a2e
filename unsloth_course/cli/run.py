"""Run one technique end to end, headless: load, data, answers before, train, answers after, save, record.

The notebooks walk through the same steps one cell at a time; this is the CLI's version of them.
Runs can save checkpoints every N steps (`save_steps`) and continue from the latest one (`resume`).
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unsloth_course.backend import BACKEND, backend_info

import torch
from safetensors import safe_open

from unsloth_course import data, models, rewards, trainers
from unsloth_course.cli import distributed
from unsloth_course.cli.distributed import print_main
from unsloth_course.cli.kernels import set_grpo_sequence_packing
from unsloth_course.cli.profiling import GenerationTimer, format_generation_split, profile_callback_from_env
from unsloth_course.evaluation import (
    answer_loss,
    code_rate,
    compare_answer_loss,
    compare_perplexity,
    loss_table,
    math_accuracy,
    math_table,
    perplexity_report,
    preference_metrics,
    stage_contributions,
)
from unsloth_course.export import save_adapter, save_merged
from unsloth_course.hardware import report_once
from unsloth_course.inference import chat_details, compare, generate_details, padding_side
from unsloth_course.measurement import folder_size_mb, reward_trend
from unsloth_course.models import ModelSourceError, resolve_model
from unsloth_course.plots import live_loss_callback
from unsloth_course.prompts import SFT_PROMPTS
from unsloth_course.recipes import TECHNIQUES, Recipe, check_model_name
from unsloth_course.records import write_run_record
from unsloth_course.training import train

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class NoCheckpointError(FileNotFoundError):
    """--resume was asked for, but the output folder holds no complete checkpoint."""


@dataclass(frozen=True)
class RunOptions:
    """Checkpointing and extra callbacks for a run.

    save_steps: save a checkpoint (safetensors weights + optimizer, scheduler and RNG state) every N steps
    into output_dir/checkpoint-N; save_total_limit keeps the newest ones. resume_from: a checkpoint folder
    to continue from (run() finds the latest one when resume=True). train_only: load, data and training only
    (no answers before/after, no evaluation, no GRPO format warm-up, nothing saved): what a benchmark times.
    """

    save_steps: int | None = None
    save_total_limit: int | None = 2
    resume_from: str | None = None
    callbacks: tuple = ()
    train_only: bool = False

    def evaluating(self, measure, *args, **kwargs):
        """measure(*args, **kwargs), or None in a train-only run."""
        return None if self.train_only else measure(*args, **kwargs)

    def trainer_args(self, lora: bool = True) -> dict[str, Any]:
        """Checkpointing and data-parallel arguments on top of the recipe's (the builders take them as overrides)."""
        args = distributed.trainer_ddp_args(lora=lora)
        if self.save_steps:  # optimizer/scheduler/RNG state too: an exact continuation
            args.update(save_strategy="steps", save_steps=self.save_steps, save_total_limit=self.save_total_limit,
                        save_only_model=False)
        return args

    def callback_list(self) -> list:
        profile = profile_callback_from_env()  # UNSLOTH_COURSE_TORCH_PROFILE=N: where the step time goes
        return [live_loss_callback(), *self.callbacks, *([profile] if profile else [])]


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint-N folders with trainer_state.json (written last) in output_dir, oldest first (not verified:
    see verify_checkpoint)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    return sorted(complete, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))


def _check_safetensors(path: Path) -> str | None:
    """Why a safetensors file is unusable (header, every tensor readable, no NaN/inf), or None."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                tensor = weights.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    return f"tensor {name} holds NaN/inf values"
    except Exception as error:  # SafetensorError, OSError, ...: the file is cut or corrupt
        return f"unreadable ({type(error).__name__}: {error})"
    return None


def _check_torch_archive(path: Path) -> str | None:
    """Why a torch.save file (a zip archive) is cut or corrupt (CRC of every member), or None; not unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        return f"not a complete torch.save archive ({error})"
    return f"member {bad} is corrupt (CRC mismatch)" if bad else None


def _weight_files(folder: Path) -> tuple[list[Path], str | None]:
    """The checkpoint's weight files (a LoRA adapter, or a full model, possibly sharded), or why there are none."""
    if (folder / "adapter_config.json").is_file():
        adapter = folder / "adapter_model.safetensors"
        return ([adapter], None) if adapter.is_file() else ([], "adapter_model.safetensors is missing")
    if not (folder / "config.json").is_file():
        return [], "neither adapter_config.json nor config.json: no model was saved"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as error:
            return [], f"model.safetensors.index.json is unreadable ({error})"
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            return [], f"{', '.join(missing)} missing (listed in model.safetensors.index.json)"
        return [folder / name for name in shards], None
    single = folder / "model.safetensors"
    return ([single], None) if single.is_file() else ([], "model.safetensors is missing")


def verify_checkpoint(folder: str | Path) -> str | None:
    """Why checkpoint `folder` cannot be resumed from exactly, naming the file, or None when it is complete.

    Checks what a save with save_only_model=False writes: trainer_state.json (readable, its global_step the
    folder's N), the weights (every safetensors file: header, every tensor, all finite), and the optimizer,
    scheduler and RNG state (torch archives, CRC-checked, not unpickled; scaler.pt too when present).
    """
    folder = Path(folder)
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError) as error:
        return f"trainer_state.json is missing or unreadable ({error})"
    step = int(_CHECKPOINT.match(folder.name).group(1)) if _CHECKPOINT.match(folder.name) else None
    if step is not None and state.get("global_step") != step:
        return f"trainer_state.json says global_step={state.get('global_step')!r}, not {step}"
    weights, problem = _weight_files(folder)
    if problem:
        return problem
    rng = sorted(folder.glob("rng_state*.pth"))
    for name in ("optimizer.pt", "scheduler.pt"):
        if not (folder / name).is_file():
            return f"{name} is missing (saved with save_only_model=True? then training cannot continue exactly)"
    if not rng:
        return "rng_state.pth is missing: the data order and dropout would not continue exactly"
    for path in [folder / "optimizer.pt", folder / "scheduler.pt", *rng, *folder.glob("scaler.pt")]:
        problem = _check_torch_archive(path)
        if problem:
            return f"{path.name}: {problem}"
    for path in weights:  # last: it reads every tensor
        problem = _check_safetensors(path)
        if problem:
            return f"{path.name}: {problem}"
    return None


def latest_checkpoint(output_dir: str | Path) -> Path:
    """The newest checkpoint in output_dir that verify_checkpoint accepts, checked before any model loads.

    A damaged newer one (a cut file, NaN weights, missing optimizer state) is reported, naming the file and
    why, and the previous complete one is used; NoCheckpointError (saying what to do) if none is complete.
    """
    where = Path(output_dir)
    found = checkpoints(where)
    unfinished = sorted((p for p in where.glob("checkpoint-*") if p.is_dir() and _CHECKPOINT.match(p.name)
                         and not (p / "trainer_state.json").is_file()),
                        key=lambda p: int(_CHECKPOINT.match(p.name).group(1))) if where.is_dir() else []
    if not found:
        state = "does not exist" if not where.exists() else "has no checkpoint-N folder with trainer_state.json"
        raise NoCheckpointError(f"cannot resume: {where} {state}. Checkpoints are written by a run started with "
                                "--save-steps N (runner.run(..., save_steps=N)) into the same --output-dir; "
                                "start without --resume to train from the beginning")
    damaged = []
    for candidate in reversed(found):
        problem = verify_checkpoint(candidate)
        if problem is None:
            newest = int(_CHECKPOINT.match(candidate.name).group(1))
            for folder in unfinished:
                if int(_CHECKPOINT.match(folder.name).group(1)) > newest:
                    print_main(f"checkpoint {folder} has no trainer_state.json (its save was interrupted): skipped")
            for folder, why in damaged:
                print_main(f"checkpoint {folder} is damaged: {why}; resuming from {candidate.name} instead")
            return candidate
        damaged.append((candidate, problem))
    reasons = "; ".join(f"{folder.name}: {why}" for folder, why in damaged)
    raise NoCheckpointError(f"cannot resume: no complete checkpoint in {where} ({reasons}). Start without "
                            "--resume to train from the beginning")


def _save(model, tokenizer, out: Path, merged: bool) -> dict[str, float]:
    """Adapter (LoRA) or full model, plus a merged 16-bit copy for LoRA; returns sizes in MB (rank 0 only)."""
    if not distributed.is_main_process():
        return {}
    if not merged:
        model.save_pretrained(out / "model", safe_serialization=True)
        with padding_side(tokenizer, "right"):  # saved as the base model pads, whatever generation last set
            tokenizer.save_pretrained(out / "model")
        return {"model_mb": folder_size_mb(out / "model")}
    save_adapter(model, tokenizer, out / "adapter", overwrite=True)
    save_merged(model, tokenizer, out / "merged", overwrite=True)
    return {"adapter_mb": folder_size_mb(out / "adapter"), "merged_mb": folder_size_mb(out / "merged")}


def _answers(model, tokenizer, prompts, recipe: Recipe):
    return chat_details(model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)


def run_sft(recipe: Recipe, out: Path, model_name: str | None = None,
            options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Notebooks 1 and 2: held-out answer loss and answers before and after, the trained model saved."""
    full = recipe.technique == "full"
    raw = data.load_alpaca(recipe.dataset, recipe.n_train_rows + recipe.n_eval_rows, recipe.seed)  # before the model
    train_rows, held_out_rows = data.held_out_split(raw, recipe.n_eval_rows, recipe.seed, fixed_prompts=SFT_PROMPTS)
    train_set, held_out = data.to_prompt_completion(train_rows), data.to_prompt_completion(held_out_rows)
    model, tokenizer = trainers.load_model(recipe, model_name)
    if not full:
        model = trainers.add_lora(model, recipe)
    prompts = list(SFT_PROMPTS) + [row["prompt"] for row in held_out.select(range(min(2, len(held_out))))]
    loss_before = options.evaluating(answer_loss, model, tokenizer, held_out, recipe.max_seq_length)
    before = options.evaluating(_answers, model, tokenizer, prompts, recipe)
    trainer = trainers.sft_trainer(recipe, model, tokenizer, train_set, str(out), options.callback_list(),
                                   **options.trainer_args(lora=not full))
    summary = train(trainer, recipe, resume_from_checkpoint=options.resume_from)
    if options.train_only:
        return summary
    change = compare_answer_loss(loss_before, answer_loss(model, tokenizer, held_out, recipe.max_seq_length))
    print_main(f"held-out {change}")
    after = _answers(model, tokenizer, prompts, recipe)
    sizes = _save(model, tokenizer, out, merged=not full)
    return {**summary, **sizes, "data": data.source_of(raw), "held_out": change,
            "answers": compare(prompts, before, after).to_records()}


def run_dpo(recipe: Recipe, out: Path, model_name: str | None = None,
            options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Notebook 3: held-out preference metrics and answers before and after, the adapter saved."""
    raw = data.load_orca_dpo(recipe.dataset, recipe.n_train_rows + recipe.n_eval_rows, recipe.seed)  # before the model
    model, tokenizer = trainers.load_model(recipe, model_name)
    model = trainers.add_lora(model, recipe)
    pairs = data.filter_long_prompts(data.to_dpo_conversations(raw), tokenizer, recipe.max_prompt_length)
    train_set, held_out = data.held_out_split(pairs, recipe.n_eval_rows, recipe.seed)
    prompts = [row["prompt"] for row in held_out.select(range(min(3, len(held_out))))]
    metrics_before = options.evaluating(preference_metrics, model, tokenizer, held_out, recipe.max_seq_length,
                                        recipe.beta)
    before = options.evaluating(_answers, model, tokenizer, prompts, recipe)
    trainer = trainers.dpo_trainer(recipe, model, tokenizer, train_set, str(out), options.callback_list(),
                                   **options.trainer_args())
    summary = train(trainer, recipe, resume_from_checkpoint=options.resume_from)
    if options.train_only:
        return summary
    metrics_after = preference_metrics(model, tokenizer, held_out, recipe.max_seq_length, recipe.beta)
    print_main(f"held-out pairs after DPO:\n{metrics_after}")
    after = _answers(model, tokenizer, prompts, recipe)
    sizes = _save(model, tokenizer, out, merged=True)
    return {**summary, **sizes, "data": data.source_of(raw),
            "held_out": {"before": metrics_before, "after": metrics_after},
            "answers": compare(prompts, before, after).to_records()}


def run_grpo(recipe: Recipe, out: Path, model_name: str | None = None,
             options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Notebook 4: held-out accuracy and format after each stage (base, format warm-up, GRPO)."""
    problems = data.load_math_problems(recipe.n_train_rows, recipe.n_eval_rows, recipe.levels, recipe.seed,
                                       source=recipe.dataset)
    if recipe.warmup_sft_steps and "reasoning" not in problems["train"].column_names:
        raise data.DataSourceError(f"{recipe.dataset}: the format warm-up trains on worked examples, a `reasoning` "
                                   "column (e.g. '12 + 7 = 19'); add one, or run with --set warmup_sft_steps=0")
    held_out = problems["test"]
    model, tokenizer = trainers.load_model(recipe, model_name)
    model = trainers.add_lora(model, recipe)
    eval_base = options.evaluating(math_accuracy, model, tokenizer, held_out, recipe.max_completion_length)
    if recipe.warmup_sft_steps and not options.train_only:
        warm_set = data.messages_to_prompt_completion(data.to_format_warmup(problems["train"]))
        warmup = trainers.format_warmup_trainer(recipe, model, tokenizer, warm_set, str(out / "warmup"),
                                                **distributed.trainer_ddp_args())
        train(warmup, recipe, technique="grpo format warm-up", verbose=False)
    eval_warm = options.evaluating(math_accuracy, model, tokenizer, held_out, recipe.max_completion_length)
    trainer = trainers.grpo_trainer(recipe, model, tokenizer, problems["train"], rewards.DEFAULT_REWARDS, str(out),
                                    options.callback_list(), **options.trainer_args())
    if recipe.unsloth_sequence_packing is not None:
        if BACKEND == "unsloth":
            where = set_grpo_sequence_packing(recipe.unsloth_sequence_packing, trainer)
            print_main(f"Unsloth GRPO sequence packing: {'on' if recipe.unsloth_sequence_packing else 'off'} "
                       f"(recipe; set in {', '.join(where) or 'the environment only'})")
        else:
            report_once("grpo-packing", "unsloth_sequence_packing is an Unsloth setting: the plain backend pads")
    timer = GenerationTimer()
    timer.attach(trainer)
    summary = train(trainer, recipe, resume_from_checkpoint=options.resume_from)
    summary.update(timer.summary(summary.get("runtime_s")))
    print_main(format_generation_split(summary))
    if options.train_only:
        return summary
    eval_after = math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
    sizes = _save(model, tokenizer, out, merged=True)
    trend = reward_trend(trainer.state.log_history)  # window means, as notebook 4 reports them
    contributions = stage_contributions(eval_base, eval_warm, eval_after)
    print_main(f"held-out problems:\n{math_table({'base': eval_base, 'warm-up': eval_warm, 'GRPO': eval_after})}"
               f"\n{contributions}")
    return {**summary, **sizes, "data": data.source_of(problems["train"]),
            "reward_start": trend[1] if trend else None, "reward_end": trend[2] if trend else None,
            "held_out": {"base": eval_base, "warmup": eval_warm, "after": eval_after,
                         "contributions": contributions}}


def run_cpt(recipe: Recipe, out: Path, model_name: str | None = None,
            options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Notebook 5: held-out code and general-prose perplexity, code continuations, before and after."""
    code = data.load_python_code(recipe.dataset, recipe.n_train_rows, recipe.n_eval_rows, recipe.seed,
                                 max_seq_length=recipe.max_seq_length)  # the data before the model
    held_out_code = list(code["test"]["text"])
    prose = data.load_general_prose(recipe.general_dataset or data.ALPACA_DATASET, recipe.n_eval_rows, recipe.seed)
    heads = data.code_completion_prompts(held_out_code)[:16]  # up to 16 held-out functions
    model, tokenizer = trainers.load_model(recipe, model_name)
    model = trainers.add_lora(model, recipe)
    train_set = data.add_eos(code["train"], tokenizer.eos_token)

    def perplexities() -> dict[str, Any]:  # held-out code, and general prose for the forgetting check
        return {"code": perplexity_report(model, tokenizer, held_out_code, recipe.max_seq_length),
                "prose": perplexity_report(model, tokenizer, prose, recipe.max_seq_length)}

    def continuations():
        return generate_details(model, tokenizer, heads, max_new_tokens=recipe.max_new_tokens)

    ppl_before = options.evaluating(perplexities)
    before = options.evaluating(continuations)
    trainer = trainers.cpt_trainer(recipe, model, tokenizer, train_set, str(out), options.callback_list(),
                                   **options.trainer_args())
    summary = train(trainer, recipe, resume_from_checkpoint=options.resume_from)
    if options.train_only:
        return summary
    ppl_after = perplexities()
    changes = {name: compare_perplexity(ppl_before[name], ppl_after[name]) for name in ppl_before}
    print_main(f"held-out perplexity:\n{loss_table(changes)}")
    after = continuations()
    sizes = _save(model, tokenizer, out, merged=True)
    return {**summary, **sizes, "data": data.source_of(code["train"]), "general_data": data.source_of(prose),
            "held_out": changes,
            "code_continuations": {"before": code_rate(heads, before), "after": code_rate(heads, after)},
            "answers": compare(heads, before, after).to_records()}


RUNNERS = {"full": run_sft, "lora": run_sft, "dpo": run_dpo, "grpo": run_grpo, "cpt": run_cpt}


def run(technique: str, recipe: Recipe, output_dir: str | Path, model_name: str | None = None, *,
        save_steps: int | None = None, save_total_limit: int | None = 2, resume: bool = False,
        callbacks: Sequence = (), runs_dir: str | Path | None = None, record_name: str | None = None,
        train_only: bool = False) -> dict:
    """Run `technique` with `recipe`, print before/after answers and the summary, write runs/<technique>.json.

    save_steps: write output_dir/checkpoint-N every N steps (safetensors weights plus the optimizer, scheduler
    and RNG state; the newest `save_total_limit` are kept). resume: continue from the latest checkpoint in
    output_dir (NoCheckpointError, before any model is loaded, if there is none); without save_steps the
    resumed run keeps the checkpoint's own interval. callbacks: extra TrainerCallbacks. runs_dir/record_name:
    where the run record goes (default runs/<technique>.json). train_only: time the training alone (no answers,
    no evaluation, no GRPO warm-up, nothing saved), as `unsloth-course bench` does.
    """
    if technique not in RUNNERS:
        raise ValueError(f"unknown technique {technique!r}; allowed: {', '.join(TECHNIQUES)}")
    if save_steps is not None and (isinstance(save_steps, bool) or not isinstance(save_steps, int)
                                   or save_steps <= 0):
        raise ValueError(f"save_steps={save_steps!r} must be a positive integer (or None: no checkpoints)")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {str(out)!r} is a file; give a folder (--output-dir)")
    try:  # the model to start from: an existing model folder or a well-formed repo id, before anything loads
        check_model_name(model_name or recipe.model_name, technique)
    except ValueError as error:
        raise ModelSourceError(str(error)) from None
    resolve_model(model_name or recipe.model_name, verbose=False)  # missing, gated, not cached: ModelSourceError
    resume_from = None
    if resume:
        checkpoint = latest_checkpoint(out)  # fails here, before any model is loaded
        resume_from = str(checkpoint)
        if save_steps is None:
            state = json.loads((checkpoint / "trainer_state.json").read_text())
            save_steps = state.get("save_steps") or None
    options = RunOptions(save_steps=save_steps, save_total_limit=save_total_limit, resume_from=resume_from,
                         callbacks=tuple(callbacks), train_only=train_only)
    print_main(backend_info())
    if distributed.is_distributed():
        print_main(distributed.describe_scaling(recipe))
    print_main(f"technique {technique}, profile {recipe.profile}, output {out}"
          + (f", checkpoints every {save_steps} steps" if save_steps else "")
          + (f", resuming from {resume_from}" if resume_from else "")
          + (", train only (no answers, evaluation or saving)" if train_only else ""))
    started = time.time()
    result = RUNNERS[technique](recipe, out, model_name=model_name, options=options)
    result["wall_s"] = round(time.time() - started, 1)
    if resume_from:
        result["resumed_from"] = resume_from
    result.update(distributed.scaling_record(recipe))
    if not distributed.is_main_process():  # only rank 0 prints, saves and writes the run record
        distributed.barrier()
        return result
    for row in result.get("answers", []):
        print(f"\n=== {row['prompt'][:100]}")
        print(f"--- before training:\n{row['before training']}")
        print(f"--- after training:\n{row['after training']}")
    record = {**result, "train_only": train_only, "recipe": recipe.to_dict(), "output_dir": str(out),
              "model_name": model_name, "model": models.model_source(model_name)}
    path = write_run_record(technique, record, runs_dir)
    if record_name:
        path = path.replace(path.with_name(f"{record_name}.json"))
    print(f"\nrun record: {path}")
    distributed.barrier()
    return result
