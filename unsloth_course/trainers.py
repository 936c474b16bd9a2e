"""One builder per technique: its trainer arguments and its trainer, from a recipe; and the model it trains.

The notebooks, `unsloth-course run` and the bench all build their trainers here, so a GPU run of the command
line trains with exactly the settings a notebook shows. `explain(trainer.args)` lists every argument a recipe
sets, with its value and why. The notebooks call `FastLanguageModel` themselves, to show Unsloth's API, with
the values `load_model` and `add_lora` pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from unsloth_course.backend import FastLanguageModel, UnslothTrainer, UnslothTrainingArguments  # before TRL

import pandas as pd
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from unsloth_course.data.validation import report_dpo_lengths, report_sft_lengths
from unsloth_course.hardware import precision_args
from unsloth_course.recipes import CPTRecipe, DPORecipe, GRPORecipe, Recipe, SFTRecipe
from unsloth_course.training import resolve_optim

# Why each argument has its value: shown next to the value by explain().
NOTES: dict[str, str] = {
    "output_dir": "checkpoints and logs",
    "max_steps": "optimizer steps (a demo-sized run; num_train_epochs=1 is the usual choice for real data)",
    "per_device_train_batch_size": "rows per forward pass; halve it when out of memory",
    "gradient_accumulation_steps": "forward passes per optimizer step: effective batch = batch x accumulation",
    "learning_rate": "full fine-tuning ~1e-5 to 5e-5; LoRA ~1e-4 to 4e-4; DPO and GRPO lower still",
    "warmup_steps": "the rate ramps up from 0 over these steps: no destructive first update",
    "lr_scheduler_type": "decay after the warm-up (linear: to 0 at max_steps)",
    "weight_decay": "pulls weights towards 0; DPO and GRPO leave it to the reference model (0)",
    "optim": "8-bit AdamW (bitsandbytes, CUDA) keeps the optimizer state small; AdamW elsewhere",
    "logging_steps": "log the loss (and rewards) every step, for the curves",
    "logging_nan_inf_filter": "off: a NaN/inf loss is logged as it is, and training stops there with the cause",
    "seed": "same data order and initialization every run",
    "report_to": "no experiment tracker account needed",
    "save_strategy": "checkpoints only when asked (the notebooks save explicitly at the end)",
    "include_num_input_tokens_seen": "count real tokens (padding excluded) for an honest tokens/s",
    "dataloader_num_workers": "tokenized rows load in the main process: nothing to fork in a notebook",
    "bf16": "bf16 mixed precision on Ampere or newer GPUs",
    "fp16": "fp16 mixed precision on a T4 (no bf16 there); neither on a CPU (fp32)",
    "gradient_checkpointing": "recompute activations in the backward pass (less memory, ~30% more compute); "
                              "Unsloth keeps the mode chosen when the model was loaded",
    "max_length": "longest training sequence in tokens; longer ones are cut (lower it when out of memory)",
    "packing": "several examples per sequence instead of padding (notebook 5 explains it)",
    "packing_strategy": "bfd: whole examples fitted into rows, each attending only to itself",
    "pad_to_multiple_of": "pad each batch to a multiple of this many tokens (fewer shapes to compile)",
    "completion_only_loss": "learn the answers, not the prompts we wrote",
    "beta": "DPO: implicit-reward scale and pull towards the reference; GRPO: weight of the KL term (0: none)",
    "loss_type": "DPO: sigmoid is the paper's logistic loss; GRPO: how token losses are averaged",
    "truncation_mode": "cut over-long pairs at the end of the answer (prompts are filtered beforehand)",
    "num_generations": "GRPO group size: completions sampled per prompt, compared with each other",
    "max_completion_length": "tokens sampled per completion; longer is slower and uses more memory",
    "temperature": "sampling temperature of the completions: diversity within a group",
    "scale_rewards": "group: advantages divided by the group's standard deviation",
    "log_completions": "print sampled completions while training",
    "use_transformers_continuous_batching": "decode completions with transformers' continuous batching",
    "embedding_learning_rate": "embed_tokens and lm_head (tied here) train at their own, smaller rate",
    "dataset_text_field": "raw text: the next-token loss covers every token",
}


def checkpointing_mode(recipe: Recipe) -> str | bool:
    """use_gradient_checkpointing for FastLanguageModel: Unsloth's offloaded variant, or off."""
    return "unsloth" if recipe.gradient_checkpointing else False


def load_model(recipe: Recipe, model_name: str | None = None):
    """(model, tokenizer) for `recipe`: every weight trainable for technique "full", else a frozen base."""
    full = recipe.technique == "full"
    extra: dict[str, Any] = {}
    if recipe.attn_implementation:
        extra["attn_implementation"] = recipe.attn_implementation
    if full and getattr(recipe, "float32_mixed_precision", False):
        extra["float32_mixed_precision"] = True
    return FastLanguageModel.from_pretrained(
        model_name=model_name or recipe.model_name, max_seq_length=recipe.max_seq_length, dtype=None,
        load_in_4bit=recipe.load_in_4bit, full_finetuning=full, use_gradient_checkpointing=checkpointing_mode(recipe),
        **extra)


def _targets(target_modules: Sequence[str] | str) -> list[str] | str:
    """A list of module names, or PEFT's "all-linear" as the string it is."""
    return target_modules if isinstance(target_modules, str) else list(target_modules)


def add_lora(model, recipe: Recipe):
    """The recipe's LoRA adapters on `model` (embed_tokens/lm_head in target_modules train in full)."""
    return FastLanguageModel.get_peft_model(
        model, r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
        target_modules=_targets(recipe.target_modules), bias="none",
        use_gradient_checkpointing=checkpointing_mode(recipe),
        random_state=recipe.seed, use_rslora=recipe.use_rslora)


def common_args(recipe: Recipe, output_dir: str, **overrides: Any) -> dict[str, Any]:
    """The TrainingArguments every technique shares, from one recipe."""
    args = dict(
        output_dir=output_dir,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
        lr_scheduler_type=recipe.lr_scheduler_type,
        weight_decay=recipe.weight_decay,
        optim=resolve_optim(recipe.optim),
        logging_steps=recipe.logging_steps,
        seed=recipe.seed,
        report_to="none",
        # log a NaN/inf loss as it is (transformers' default logs it as 0 or the running mean): train()'s
        # NonFiniteGuard stops the run at that step
        logging_nan_inf_filter=False,
        save_strategy="no",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        gradient_checkpointing=recipe.gradient_checkpointing,
        **precision_args(),
    )
    args.update(overrides)
    return args


def sft_args(recipe: SFTRecipe, output_dir: str, **overrides: Any) -> SFTConfig:
    """Full fine-tuning and LoRA: conversational prompt/completion rows, loss on the completion only."""
    return SFTConfig(**common_args(recipe, output_dir, **overrides), max_length=recipe.max_seq_length,
                     packing=recipe.packing, packing_strategy=recipe.packing_strategy,
                     pad_to_multiple_of=recipe.pad_to_multiple_of, completion_only_loss=True)


def _report_lengths(train_dataset, tokenizer, args, name: str) -> None:
    """How many rows TRL will cut or drop for args.max_length (printed; see data.report_sft_lengths)."""
    if getattr(args, "max_length", None):
        report_sft_lengths(train_dataset, tokenizer, args.max_length, getattr(args, "packing", False),
                           getattr(args, "packing_strategy", "bfd"), name=name,
                           text_field=getattr(args, "dataset_text_field", None) or "text")


def sft_trainer(recipe: SFTRecipe, model, tokenizer, train_dataset, output_dir: str,
                callbacks: Sequence = (), **overrides: Any) -> SFTTrainer:
    """The SFTTrainer of notebooks 1 and 2 and of `unsloth-course run full|lora` (says how many rows TRL cuts
    or drops for max_length first)."""
    args = sft_args(recipe, output_dir, **overrides)
    _report_lengths(train_dataset, tokenizer, args, "SFT")
    return SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train_dataset, args=args,
                      callbacks=list(callbacks))


def dpo_args(recipe: DPORecipe, output_dir: str, **overrides: Any) -> DPOConfig:
    """DPO on prompt/chosen/rejected pairs, sigmoid loss, prompts filtered to max_prompt_length beforehand."""
    return DPOConfig(**common_args(recipe, output_dir, **overrides), beta=recipe.beta, loss_type=["sigmoid"],
                     max_length=recipe.max_seq_length, truncation_mode="keep_start",
                     pad_to_multiple_of=recipe.pad_to_multiple_of)


def dpo_trainer(recipe: DPORecipe, model, tokenizer, train_dataset, output_dir: str,
                callbacks: Sequence = (), **overrides: Any) -> DPOTrainer:
    """The DPOTrainer of notebook 3: LoRA, so `ref_model=None` (the reference is the model without the adapter).
    Says how many pairs TRL cuts or drops for max_length first."""
    args = dpo_args(recipe, output_dir, **overrides)
    if args.max_length:
        report_dpo_lengths(train_dataset, tokenizer, args.max_length)
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=train_dataset,
                      processing_class=tokenizer, callbacks=list(callbacks))


def format_warmup_args(recipe: GRPORecipe, output_dir: str, **overrides: Any) -> SFTConfig:
    """GRPO's short SFT warm-up on worked examples in the answer format."""
    warmup = dict(max_steps=recipe.warmup_sft_steps, learning_rate=recipe.warmup_learning_rate,
                  per_device_train_batch_size=recipe.warmup_batch_size, gradient_accumulation_steps=1,
                  warmup_steps=1, logging_steps=max(1, recipe.warmup_sft_steps // 10))
    return SFTConfig(**common_args(recipe, output_dir, **{**warmup, **overrides}),
                     max_length=recipe.max_seq_length, completion_only_loss=True)


def format_warmup_trainer(recipe: GRPORecipe, model, tokenizer, train_dataset, output_dir: str,
                          callbacks: Sequence = (), **overrides: Any) -> SFTTrainer:
    """The SFTTrainer of notebook 4's format warm-up."""
    args = format_warmup_args(recipe, output_dir, **overrides)
    _report_lengths(train_dataset, tokenizer, args, "format warm-up")
    return SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train_dataset, args=args,
                      callbacks=list(callbacks))


def grpo_args(recipe: GRPORecipe, output_dir: str, **overrides: Any) -> GRPOConfig:
    """GRPO: groups of sampled completions scored by reward functions."""
    base = common_args(recipe, output_dir, include_num_input_tokens_seen="no", **overrides)
    return GRPOConfig(**base, num_generations=recipe.num_generations,
                      max_completion_length=recipe.max_completion_length, temperature=recipe.temperature,
                      beta=recipe.beta, loss_type=recipe.loss_type, scale_rewards=recipe.scale_rewards,
                      use_transformers_continuous_batching=recipe.continuous_batching, log_completions=False)


def grpo_trainer(recipe: GRPORecipe, model, tokenizer, train_dataset, reward_funcs: Sequence[Callable],
                 output_dir: str, callbacks: Sequence = (), **overrides: Any) -> GRPOTrainer:
    """The GRPOTrainer of notebook 4; `reward_funcs` are summed into each completion's reward."""
    return GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=list(reward_funcs),
                       args=grpo_args(recipe, output_dir, **overrides), train_dataset=train_dataset,
                       callbacks=list(callbacks))


def cpt_args(recipe: CPTRecipe, output_dir: str, **overrides: Any):
    """Continued pretraining: raw text, packed, embeddings at their own learning rate."""
    return UnslothTrainingArguments(**common_args(recipe, output_dir, **overrides),
                                    embedding_learning_rate=recipe.embedding_learning_rate,
                                    max_length=recipe.max_seq_length, packing=recipe.packing,
                                    packing_strategy=recipe.packing_strategy,
                                    pad_to_multiple_of=recipe.pad_to_multiple_of, dataset_text_field="text")


def cpt_trainer(recipe: CPTRecipe, model, tokenizer, train_dataset, output_dir: str,
                callbacks: Sequence = (), **overrides: Any):
    """The UnslothTrainer of notebook 5 (two optimizer groups: adapters and embeddings)."""
    args = cpt_args(recipe, output_dir, **overrides)
    _report_lengths(train_dataset, tokenizer, args, "CPT")
    return UnslothTrainer(model=model, processing_class=tokenizer, train_dataset=train_dataset, args=args,
                          callbacks=list(callbacks))


def explain(args) -> pd.DataFrame:
    """The arguments a builder set, with their values and why (a table for the notebooks)."""
    rows = []
    for name, why in NOTES.items():
        if hasattr(args, name):
            value = getattr(args, name)
            rows.append({"argument": name, "value": getattr(value, "value", value), "why": why})
    return pd.DataFrame(rows).set_index("argument")


__all__ = ["NOTES", "add_lora", "checkpointing_mode", "common_args", "load_model", "cpt_args", "cpt_trainer",
           "dpo_args", "dpo_trainer", "explain", "format_warmup_args", "format_warmup_trainer", "grpo_args",
           "grpo_trainer", "sft_args", "sft_trainer"]
