"""Run one technique end to end, headless: load, data, answers before, train, answers after, save, record.

The notebooks walk through the same steps one cell at a time; this is the CLI's version of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .backend import FastLanguageModel, UnslothTrainer, UnslothTrainingArguments, backend_info
from .inference import chat, compare, generate
from .metrics import folder_size_mb, live_loss_callback, write_run_record
from .prompts import CODE_HEADERS, SFT_PROMPTS
from .recipes import Recipe
from .training import common_args, train


def _load(recipe: Recipe, full_finetuning: bool = False, model_name: str | None = None):
    return FastLanguageModel.from_pretrained(
        model_name=model_name or recipe.model_name, max_seq_length=recipe.max_seq_length, dtype=None,
        load_in_4bit=False, full_finetuning=full_finetuning,
    )


def _add_lora(model, recipe: Recipe):
    return FastLanguageModel.get_peft_model(
        model, r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
        target_modules=list(recipe.target_modules), bias="none", use_gradient_checkpointing="unsloth",
        random_state=recipe.seed, use_rslora=recipe.use_rslora,
    )


def _save(model, tokenizer, out: Path, merged: bool) -> dict[str, float]:
    """Adapter (LoRA) or full model, plus a merged 16-bit copy for LoRA; returns sizes in MB."""
    if not merged:
        model.save_pretrained(out / "model", safe_serialization=True)
        tokenizer.save_pretrained(out / "model")
        return {"model_mb": folder_size_mb(out / "model")}
    model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "adapter")
    model.save_pretrained_merged(str(out / "merged"), tokenizer, save_method="merged_16bit")
    return {"adapter_mb": folder_size_mb(out / "adapter"), "merged_mb": folder_size_mb(out / "merged")}


def run_sft(recipe: Recipe, out: Path, model_name: str | None = None) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    from . import data

    full = recipe.technique == "full"
    model, tokenizer = _load(recipe, full_finetuning=full, model_name=model_name)
    if not full:
        model = _add_lora(model, recipe)
    train_set = data.to_prompt_completion(data.load_alpaca(recipe.n_train_rows, recipe.seed))
    prompts = list(SFT_PROMPTS)
    before = chat(model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)
    config = SFTConfig(**common_args(recipe, str(out)), max_length=recipe.max_seq_length, packing=False,
                       completion_only_loss=True, gradient_checkpointing=recipe.gradient_checkpointing)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train_set, args=config,
                         callbacks=[live_loss_callback()])
    summary = train(trainer, recipe)
    after = chat(model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)
    sizes = _save(model, tokenizer, out, merged=not full)
    return {**summary, **sizes, "answers": compare(prompts, before, after).to_records()}


def run_dpo(recipe: Recipe, out: Path, model_name: str | None = None) -> dict[str, Any]:
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
    acc_before = preference_accuracy(model, tokenizer, held_out, recipe.max_seq_length, recipe.beta)
    before = chat(model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)
    config = DPOConfig(**common_args(recipe, str(out)), beta=recipe.beta, max_length=recipe.max_seq_length,
                       truncation_mode="keep_end", gradient_checkpointing=recipe.gradient_checkpointing)
    trainer = DPOTrainer(model=model, ref_model=None, args=config, train_dataset=split["train"],
                         processing_class=tokenizer, callbacks=[live_loss_callback()])
    summary = train(trainer, recipe)
    acc_after = preference_accuracy(model, tokenizer, held_out, recipe.max_seq_length, recipe.beta)
    after = chat(model, tokenizer, prompts, max_new_tokens=recipe.max_new_tokens)
    sizes = _save(model, tokenizer, out, merged=True)
    print(f"held-out preference accuracy (log p chosen > log p rejected): "
          f"{acc_before['logp_accuracy']:.1%} -> {acc_after['logp_accuracy']:.1%}")
    return {**summary, **sizes, "preference_before": acc_before, "preference_after": acc_after,
            "answers": compare(prompts, before, after).to_records()}


def run_grpo(recipe: Recipe, out: Path, model_name: str | None = None) -> dict[str, Any]:
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    from . import data, rewards
    from .evaluation import math_accuracy

    model, tokenizer = _load(recipe, model_name=model_name)
    model = _add_lora(model, recipe)
    problems = data.load_math_problems(recipe.n_train_rows, recipe.n_eval_rows, recipe.levels, recipe.seed)
    held_out = problems["test"]
    eval_before = math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
    if recipe.warmup_sft_steps:
        warm = SFTConfig(**common_args(recipe, str(out / "warmup"), max_steps=recipe.warmup_sft_steps,
                                       learning_rate=recipe.warmup_learning_rate,
                                       per_device_train_batch_size=recipe.warmup_batch_size,
                                       gradient_accumulation_steps=1),
                         max_length=recipe.max_seq_length, completion_only_loss=True)
        warm_set = data.messages_to_prompt_completion(data.to_format_warmup(problems["train"]))
        SFTTrainer(model=model, processing_class=tokenizer, train_dataset=warm_set, args=warm).train()
    eval_warm = math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
    config = GRPOConfig(**common_args(recipe, str(out), include_num_input_tokens_seen="no"),
                        num_generations=recipe.num_generations,
                        max_completion_length=recipe.max_completion_length, temperature=recipe.temperature,
                        beta=recipe.beta, gradient_checkpointing=recipe.gradient_checkpointing,
                        log_completions=False)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=rewards.DEFAULT_REWARDS,
                          args=config, train_dataset=problems["train"], callbacks=[live_loss_callback()])
    summary = train(trainer, recipe)
    eval_after = math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
    sizes = _save(model, tokenizer, out, merged=True)
    reward_curve = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    for name, result in (("before", eval_before), ("after warm-up", eval_warm), ("after GRPO", eval_after)):
        print(f"held-out {name:14s}: accuracy {result['accuracy']:.1%}, strict format "
              f"{result['strict_format']:.1%}, soft format {result['soft_format']:.1%}")
    strip = ("completions",)
    return {**summary, **sizes, "reward_first": reward_curve[0] if reward_curve else None,
            "reward_last": reward_curve[-1] if reward_curve else None,
            **{f"eval_{k}": {x: v for x, v in r.items() if x not in strip}
               for k, r in (("before", eval_before), ("warmup", eval_warm), ("after", eval_after))}}


def run_cpt(recipe: Recipe, out: Path, model_name: str | None = None) -> dict[str, Any]:
    from . import data
    from .evaluation import perplexity

    model, tokenizer = _load(recipe, model_name=model_name)
    model = _add_lora(model, recipe)
    code = data.load_python_code(recipe.n_train_rows, recipe.n_eval_rows, recipe.seed)
    train_set = data.add_eos(code["train"], tokenizer.eos_token)
    general = data.general_text_samples(tokenizer, recipe.n_eval_rows, recipe.seed)
    ppl_before = {"code": perplexity(model, tokenizer, code["test"]["text"], recipe.max_seq_length),
                  "general": perplexity(model, tokenizer, general, recipe.max_seq_length)}
    headers = list(CODE_HEADERS)
    before = generate(model, tokenizer, headers, max_new_tokens=recipe.max_new_tokens)
    config = UnslothTrainingArguments(**common_args(recipe, str(out)),
                                      embedding_learning_rate=recipe.embedding_learning_rate,
                                      max_length=recipe.max_seq_length, packing=recipe.packing,
                                      dataset_text_field="text")
    trainer = UnslothTrainer(model=model, processing_class=tokenizer, train_dataset=train_set, args=config,
                             callbacks=[live_loss_callback()])
    summary = train(trainer, recipe)
    ppl_after = {"code": perplexity(model, tokenizer, code["test"]["text"], recipe.max_seq_length),
                 "general": perplexity(model, tokenizer, general, recipe.max_seq_length)}
    after = generate(model, tokenizer, headers, max_new_tokens=recipe.max_new_tokens)
    sizes = _save(model, tokenizer, out, merged=True)
    print(f"code perplexity {ppl_before['code']:.2f} -> {ppl_after['code']:.2f}; "
          f"general text perplexity {ppl_before['general']:.2f} -> {ppl_after['general']:.2f}")
    return {**summary, **sizes, "perplexity_before": ppl_before, "perplexity_after": ppl_after,
            "answers": compare(headers, before, after).to_records()}


RUNNERS = {"full": run_sft, "lora": run_sft, "dpo": run_dpo, "grpo": run_grpo, "cpt": run_cpt}


def run(technique: str, recipe: Recipe, output_dir: str | Path, model_name: str | None = None) -> dict:
    """Run `technique` with `recipe`, print before/after answers and the summary, write runs/<technique>.json."""
    out = Path(output_dir)
    print(backend_info())
    print(f"technique {technique}, profile {recipe.profile}, output {out}")
    started = time.time()
    result = RUNNERS[technique](recipe, out, model_name=model_name)
    result["wall_s"] = round(time.time() - started, 1)
    for row in result.get("answers", []):
        print(f"\n=== {row['prompt'][:100]}")
        print(f"--- before training:\n{row['before training']}")
        print(f"--- after training:\n{row['after training']}")
    path = write_run_record(technique, {**result, "recipe": recipe.to_dict(), "output_dir": str(out)})
    print(f"\nrun record: {path}")
    return result
