"""Run one technique end to end, headless: load, data, answers before, train, answers after, save, record.

The notebooks walk through the same steps one cell at a time; this is the CLI's version of them.
Runs can save checkpoints every N steps (`save_steps`) and continue from the latest one (`resume`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import distributed
from .backend import (
    BACKEND,
    FastLanguageModel,
    UnslothTrainer,
    UnslothTrainingArguments,
    backend_info,
    report_once,
)
from .distributed import print_main
from .export import save_adapter, save_merged
from .inference import chat, compare, generate, padding_side
from .kernels import set_grpo_sequence_packing
from .metrics import folder_size_mb, live_loss_callback, reward_trend, write_run_record
from .profiling import GenerationTimer, format_generation_split, profile_callback_from_env
from .prompts import CODE_HEADERS, SFT_PROMPTS
from .recipes import TECHNIQUES, Recipe
from .training import common_args, train

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

    def trainer_args(self) -> dict[str, Any]:
        if not self.save_steps:
            return {}  # common_args: save_strategy="no"
        return {"save_strategy": "steps", "save_steps": self.save_steps, "save_total_limit": self.save_total_limit,
                "save_only_model": False}  # optimizer/scheduler/RNG state: an exact continuation

    def callback_list(self) -> list:
        profile = profile_callback_from_env()  # UNSLOTH_COURSE_TORCH_PROFILE=N: where the step time goes
        return [live_loss_callback(), *self.callbacks, *([profile] if profile else [])]


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint-N folders (with trainer_state.json, written last) in output_dir, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    return sorted(complete, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path:
    """The newest complete checkpoint in output_dir; NoCheckpointError (saying what to do) if there is none."""
    found = checkpoints(output_dir)
    if not found:
        where = Path(output_dir)
        state = "does not exist" if not where.exists() else "has no checkpoint-N folder with trainer_state.json"
        raise NoCheckpointError(f"cannot resume: {where} {state}. Checkpoints are written by a run started with "
                                "--save-steps N (runner.run(..., save_steps=N)) into the same --output-dir; "
                                "start without --resume to train from the beginning")
    return found[-1]


def _checkpointing(recipe: Recipe) -> str | bool:
    return "unsloth" if recipe.gradient_checkpointing else False


def _load(recipe: Recipe, full_finetuning: bool = False, model_name: str | None = None):
    kernel = {"attn_implementation": recipe.attn_implementation} if recipe.attn_implementation else {}
    return FastLanguageModel.from_pretrained(
        model_name=model_name or recipe.model_name, max_seq_length=recipe.max_seq_length, dtype=None,
        load_in_4bit=recipe.load_in_4bit, full_finetuning=full_finetuning, use_gradient_checkpointing=_checkpointing(recipe),
        **kernel,
    )


def _add_lora(model, recipe: Recipe):
    return FastLanguageModel.get_peft_model(
        model, r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
        target_modules=list(recipe.target_modules), bias="none", use_gradient_checkpointing=_checkpointing(recipe),
        random_state=recipe.seed, use_rslora=recipe.use_rslora,
    )


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


def sft_config(recipe: Recipe, output_dir: str, **trainer_args: Any):
    """The SFTConfig run_sft trains with: the recipe's packing, loss on completion tokens only."""
    from trl import SFTConfig

    return SFTConfig(**common_args(recipe, output_dir, **trainer_args), max_length=recipe.max_seq_length,
                     packing=recipe.packing, packing_strategy=recipe.packing_strategy,
                     pad_to_multiple_of=recipe.pad_to_multiple_of, completion_only_loss=True,
                     gradient_checkpointing=recipe.gradient_checkpointing)


def run_sft(recipe: Recipe, out: Path, model_name: str | None = None,
            options: RunOptions = RunOptions()) -> dict[str, Any]:
    from trl import SFTTrainer

    from . import data

    full = recipe.technique == "full"
    model, tokenizer = _load(recipe, full_finetuning=full, model_name=model_name)
    if not full:
        model = _add_lora(model, recipe)
    train_set = data.to_prompt_completion(data.load_alpaca(recipe.n_train_rows, recipe.seed))
    prompts = list(SFT_PROMPTS)
    before = options.evaluating(chat, model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)
    config = sft_config(recipe, str(out), **options.trainer_args())
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train_set, args=config,
                         callbacks=options.callback_list())
    summary = train(trainer, recipe, resume_from_checkpoint=options.resume_from)
    if options.train_only:
        return summary
    after = chat(model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)
    sizes = _save(model, tokenizer, out, merged=not full)
    return {**summary, **sizes, "answers": compare(prompts, before, after).to_records()}


def run_dpo(recipe: Recipe, out: Path, model_name: str | None = None,
            options: RunOptions = RunOptions()) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    from . import data
    from .evaluation import preference_accuracy

    model, tokenizer = _load(recipe, model_name=model_name)
    model = _add_lora(model, recipe)
    pairs = data.to_dpo_conversations(data.load_orca_dpo(recipe.n_train_rows + recipe.n_eval_rows, recipe.seed))
    pairs = data.filter_long_prompts(pairs, tokenizer, recipe.max_prompt_length)
    split = data.split_train_eval(pairs, recipe.n_eval_rows, recipe.seed)
    held_out = split["test"]
    prompts = [row["prompt"] for row in held_out.select(range(min(3, len(held_out))))]
    acc_before = options.evaluating(preference_accuracy, model, tokenizer, held_out, recipe.max_seq_length,
                                    recipe.beta)
    before = options.evaluating(chat, model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)
    config = DPOConfig(**common_args(recipe, str(out), **options.trainer_args()), beta=recipe.beta,
                       max_length=recipe.max_seq_length, truncation_mode="keep_start",
                       pad_to_multiple_of=recipe.pad_to_multiple_of, gradient_checkpointing=recipe.gradient_checkpointing)
    trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=split["train"],
                         processing_class=tokenizer, callbacks=options.callback_list())
    summary = train(trainer, recipe, resume_from_checkpoint=options.resume_from)
    if options.train_only:
        return summary
    acc_after = preference_accuracy(model, tokenizer, held_out, recipe.max_seq_length, recipe.beta)
    after = chat(model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)
    sizes = _save(model, tokenizer, out, merged=True)
    print(f"held-out preference accuracy (log p chosen > log p rejected): "
          f"{acc_before['logp_accuracy']:.1%} -> {acc_after['logp_accuracy']:.1%}")
    return {**summary, **sizes, "preference_before": acc_before, "preference_after": acc_after,
            "answers": compare(prompts, before, after).to_records()}


def run_grpo(recipe: Recipe, out: Path, model_name: str | None = None,
             options: RunOptions = RunOptions()) -> dict[str, Any]:
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from . import data, rewards
    from .evaluation import math_accuracy

    model, tokenizer = _load(recipe, model_name=model_name)
    model = _add_lora(model, recipe)
    problems = data.load_math_problems(recipe.n_train_rows, recipe.n_eval_rows, recipe.levels, recipe.seed)
    held_out = problems["test"]
    eval_before = options.evaluating(math_accuracy, model, tokenizer, held_out, recipe.max_completion_length)
    if recipe.warmup_sft_steps and not options.train_only:
        warm = SFTConfig(**common_args(recipe, str(out / "warmup"), max_steps=recipe.warmup_sft_steps,
                                       learning_rate=recipe.warmup_learning_rate,
                                       per_device_train_batch_size=recipe.warmup_batch_size,
                                       gradient_accumulation_steps=1),
                         max_length=recipe.max_seq_length, completion_only_loss=True)
        warm_set = data.messages_to_prompt_completion(data.to_format_warmup(problems["train"]))
        SFTTrainer(model=model, processing_class=tokenizer, train_dataset=warm_set, args=warm).train()
    eval_warm = options.evaluating(math_accuracy, model, tokenizer, held_out, recipe.max_completion_length)
    config = GRPOConfig(**common_args(recipe, str(out), include_num_input_tokens_seen="no",
                                      **options.trainer_args()),
                        num_generations=recipe.num_generations,
                        max_completion_length=recipe.max_completion_length, temperature=recipe.temperature,
                        beta=recipe.beta, gradient_checkpointing=recipe.gradient_checkpointing,
                        use_transformers_continuous_batching=recipe.continuous_batching, log_completions=False)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=rewards.DEFAULT_REWARDS,
                          args=config, train_dataset=problems["train"], callbacks=options.callback_list())
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
    print(format_generation_split(summary))
    if options.train_only:
        return summary
    eval_after = math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
    sizes = _save(model, tokenizer, out, merged=True)
    trend = reward_trend(trainer.state.log_history)  # window means, as notebook 4 reports them
    for name, result in (("before", eval_before), ("after warm-up", eval_warm), ("after GRPO", eval_after)):
        print(f"held-out {name:14s}: accuracy {result['accuracy']:.1%}, strict format "
              f"{result['strict_format']:.1%}, soft format {result['soft_format']:.1%}")
    strip = ("completions",)
    return {**summary, **sizes, "reward_start": trend[1] if trend else None, "reward_end": trend[2] if trend else None,
            **{f"eval_{k}": {x: v for x, v in r.items() if x not in strip}
               for k, r in (("before", eval_before), ("warmup", eval_warm), ("after", eval_after))}}


def run_cpt(recipe: Recipe, out: Path, model_name: str | None = None,
            options: RunOptions = RunOptions()) -> dict[str, Any]:
    from . import data
    from .evaluation import perplexity

    model, tokenizer = _load(recipe, model_name=model_name)
    model = _add_lora(model, recipe)
    code = data.load_python_code(recipe.n_train_rows, recipe.n_eval_rows, recipe.seed)
    train_set = data.add_eos(code["train"], tokenizer.eos_token)
    general = data.general_text_samples(tokenizer, recipe.n_eval_rows, recipe.seed)
    headers = list(CODE_HEADERS)

    def perplexities() -> dict[str, float]:  # held-out code, and general text for the forgetting check
        return {"code": perplexity(model, tokenizer, code["test"]["text"], recipe.max_seq_length),
                "general": perplexity(model, tokenizer, general, recipe.max_seq_length)}

    ppl_before = options.evaluating(perplexities)
    before = options.evaluating(generate, model, tokenizer, headers, max_new_tokens=recipe.max_new_tokens)
    config = UnslothTrainingArguments(**common_args(recipe, str(out), **options.trainer_args()),
                                      embedding_learning_rate=recipe.embedding_learning_rate,
                                      max_length=recipe.max_seq_length, packing=recipe.packing,
                                      packing_strategy=recipe.packing_strategy,
                                      pad_to_multiple_of=recipe.pad_to_multiple_of,
                                      dataset_text_field="text")
    trainer = UnslothTrainer(model=model, processing_class=tokenizer, train_dataset=train_set, args=config,
                             callbacks=options.callback_list())
    summary = train(trainer, recipe, resume_from_checkpoint=options.resume_from)
    if options.train_only:
        return summary
    ppl_after = perplexities()
    after = generate(model, tokenizer, headers, max_new_tokens=recipe.max_new_tokens)
    sizes = _save(model, tokenizer, out, merged=True)
    print(f"code perplexity {ppl_before['code']:.2f} -> {ppl_after['code']:.2f}; "
          f"general text perplexity {ppl_before['general']:.2f} -> {ppl_after['general']:.2f}")
    return {**summary, **sizes, "perplexity_before": ppl_before, "perplexity_after": ppl_after,
            "answers": compare(headers, before, after).to_records()}


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
              "model_name": model_name}
    path = write_run_record(technique, record, runs_dir)
    if record_name:
        path = path.replace(path.with_name(f"{record_name}.json"))
    print(f"\nrun record: {path}")
    distributed.barrier()
    return result
