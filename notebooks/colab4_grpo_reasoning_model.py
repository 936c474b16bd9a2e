# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · GRPO: teaching SmolLM2 to reason with reward functions
#
# **What this is.** Group Relative Policy Optimization (GRPO, from DeepSeekMath) is reinforcement learning
# without a value model. For each prompt the model **samples a group** of `num_generations` completions;
# **reward functions** score each one; a completion's **advantage** is its reward relative to its group,
# `(r - mean(group)) / std(group)`. Completions better than their siblings are made more likely, worse ones
# less likely. A **KL term** (weight `beta`) keeps the policy near the reference model.
#
# **When to use it.** When you can *check* an answer (math, code that runs, a format, a schema) but have no
# good demonstrations to imitate. You write rewards instead of examples.
#
# **What this run shows.** Generated arithmetic problems with exact answers, five reward functions, a short
# format warm-up, and GRPO. We measure held-out accuracy and format compliance before and after, and plot each
# reward over training.
#
# **Hardware.** Colab T4 GPU (fp16). Generation dominates GRPO's time. Locally on a CPU with
# `UNSLOTH_COURSE_QUICK=1` it runs a few tiny steps: enough to see the machinery, not to learn.

# %% [markdown]
# ## Setup

# %%
# SETUP

# %%
from unsloth_course import FastLanguageModel, backend_info, get_recipe  # first: imports Unsloth on a GPU

import inspect

import matplotlib.pyplot as plt
import pandas as pd
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from unsloth_course import data, hardware, measurement, plots, records, rewards, training
from unsloth_course.evaluation import math_accuracy
from unsloth_course.inference import chat, compare

recipe = get_recipe("grpo")
print(backend_info())
print(f"\nrecipe profile: {recipe.profile}")

# %% [markdown]
# ## Load the model
# LoRA on all projections, as in notebook 2. GRPO needs no second model for its KL reference: given a LoRA
# model, TRL's `GRPOTrainer` copies the adapter *as it is when the trainer is created* into a frozen adapter
# named `"ref"` (a few MB) and computes reference log-probabilities with it. Here that is after the format
# warm-up, so the KL term keeps GRPO close to the warmed-up model, not to the original base model.

# %%
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=recipe.model_name,          # SmolLM2-135M-Instruct (offline: the embedded copy)
    max_seq_length=recipe.max_seq_length,  # prompt + completion must fit
    dtype=None,                            # by hardware: bf16 / fp16 (T4) / fp32 (CPU)
    load_in_4bit=False,                    # 135M parameters need no quantization
    fast_inference=False,                  # True would use vLLM where installed; plain generate works everywhere
)
model = FastLanguageModel.get_peft_model(
    model,
    r=recipe.lora_r,                       # adapter rank
    lora_alpha=recipe.lora_alpha,          # scale alpha/r = 1
    lora_dropout=recipe.lora_dropout,      # 0: fastest, fine for short runs
    target_modules=list(recipe.target_modules),  # all attention and MLP projections
    bias="none",
    use_gradient_checkpointing="unsloth",  # saves activation memory for the long sampled completions
    random_state=recipe.seed,
)
print(measurement.parameter_line(model))

# %% [markdown]
# ## Data: generated math problems
# The library generates arithmetic and word problems with exact integer answers at four difficulty levels
# (no download, deterministic). Each row has a chat `prompt` (system prompt + question) and the `answer`
# column that the correctness reward compares against. A held-out split measures the result.

# %%
problems = data.load_math_problems(recipe.n_train_rows, recipe.n_eval_rows, recipe.levels, recipe.seed)
train_set, held_out = problems["train"], problems["test"]
pd.DataFrame(train_set.select(range(6)))[["level", "question", "answer"]]

# %% [markdown]
# The system prompt asks for reasoning and a single integer answer in tags:

# %%
print(data.SYSTEM_PROMPT)
print("\n--- what the model sees ---")
print(tokenizer.apply_chat_template(train_set[0]["prompt"], tokenize=False, add_generation_prompt=True))

# %% [markdown]
# ## Reward functions
# Each has TRL's signature `fn(prompts, completions, **kwargs) -> list[float]`; dataset columns (here
# `answer`) arrive as keyword arguments. Numbers are parsed with regular expressions; model text is never
# evaluated. Here is the correctness reward's code:

# %%
print(inspect.getsource(rewards.correctness_reward))
print(inspect.getsource(rewards.xml_count_reward))

# %% [markdown]
# Before training anything, check the rewards on hand-written completions. TRL **adds** the rewards, so each
# function's maximum is its weight: correctness dominates (2.0); the four format rewards (0.5 each) give
# partial credit that a small model can earn early, which keeps the group's rewards from all being equal.

# %%
answer = "19"
examples = {
    "correct": "<reasoning>\n12 + 7 = 19\n</reasoning>\n<answer>\n19\n</answer>",
    "wrong answer": "<reasoning>\n12 + 7 = 18\n</reasoning>\n<answer>\n18\n</answer>",
    "no newlines": "<reasoning>12 + 7 = 19</reasoning><answer>19</answer>",
    "text after answer": "<reasoning>\n12 + 7 = 19\n</reasoning>\n<answer>\n19\n</answer>\nHope this helps!",
    "no tags": "The answer is 19.",
    "empty": "",
}
scores = rewards.score_completions(list(examples.values()), answer)
pd.DataFrame(scores, index=list(examples)).round(3)

# %% [markdown]
# ## Baseline: the model before training
# Greedy answers to the held-out problems: accuracy, and how often the output follows the format.

# %%
eval_before = math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
print({k: v for k, v in eval_before.items() if k != "completions"})
print("\nexample answer:\n" + eval_before["completions"][0])

# %% [markdown]
# ## Why a warm-up? Making learning possible
# GRPO learns only from *differences* within a group. A 135M model almost never writes the exact tags on its
# own, so every completion of a group scores the same, all advantages are 0, and nothing is learned (the log
# column `frac_reward_zero_std` shows how often that happens). Three ways out: partial-credit format rewards
# (we have them: `xml_count_reward`), a curriculum of easy problems (levels 1-2 here), and a **short SFT
# warm-up** on a few worked examples in the target format. We use all three, keeping the warm-up short so that
# GRPO still has to find correct answers itself.

# %%
warmup_set = data.messages_to_prompt_completion(data.to_format_warmup(train_set))
warmup_config = SFTConfig(
    output_dir="outputs/grpo/warmup",
    max_steps=recipe.warmup_sft_steps,            # a few dozen steps: learn the format, not the answers
    per_device_train_batch_size=recipe.warmup_batch_size,  # small batches of worked examples
    gradient_accumulation_steps=1,
    learning_rate=recipe.warmup_learning_rate,    # the usual LoRA SFT rate
    warmup_steps=1,
    optim=training.resolve_optim(recipe.optim),   # 8-bit AdamW on GPU
    max_length=recipe.max_seq_length,
    completion_only_loss=True,                    # learn the answer format, not the prompt
    logging_steps=max(1, recipe.warmup_sft_steps // 10),
    report_to="none",
    save_strategy="no",
    seed=recipe.seed,
    **hardware.precision_args(),
)
warmup = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=warmup_set, args=warmup_config)
warmup.train()
eval_warm = math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
print({k: v for k, v in eval_warm.items() if k != "completions"})

# %% [markdown]
# ## GRPO configuration
# The generation batch (`per_device_train_batch_size x gradient_accumulation_steps`) must be a multiple of
# `num_generations`: each prompt's group is generated together. Here that means
# `per_device_train_batch_size / num_generations` prompts per step.
#
# Older tutorials also set `max_prompt_length`: TRL 1.x's `GRPOConfig` has no such argument any more (passing it
# is an error). Prompts are not truncated; keep them short (ours are a system prompt and one question).

# %%
config = GRPOConfig(
    output_dir="outputs/grpo",
    max_steps=recipe.max_steps,                   # GRPO steps (each generates, scores, then updates)
    per_device_train_batch_size=recipe.per_device_train_batch_size,  # completions per step (prompts x group)
    gradient_accumulation_steps=recipe.gradient_accumulation_steps,
    num_generations=recipe.num_generations,       # group size: more = better advantage estimates, slower
    max_completion_length=recipe.max_completion_length,  # sampled tokens per completion; long = slow
    temperature=recipe.temperature,               # sampling diversity; too low and the group is all alike
    beta=recipe.beta,                             # KL weight to the reference; 0 disables the KL term
    learning_rate=recipe.learning_rate,           # RL updates are small: ~10x below SFT for LoRA
    warmup_steps=recipe.warmup_steps,
    lr_scheduler_type=recipe.lr_scheduler_type,
    weight_decay=recipe.weight_decay,
    optim=training.resolve_optim(recipe.optim),   # 8-bit AdamW on GPU
    logging_steps=recipe.logging_steps,           # rewards are logged every step
    log_completions=False,                        # True prints sampled completions to the log
    seed=recipe.seed,
    report_to="none",
    save_strategy="no",
    **hardware.precision_args(),                  # bf16 on Ampere+, fp16 on a T4, fp32 on CPU
)
trainer = GRPOTrainer(
    model=model,
    processing_class=tokenizer,
    reward_funcs=rewards.DEFAULT_REWARDS,         # summed: correctness 2.0 + four format rewards 0.5 each
    args=config,
    train_dataset=train_set,
    callbacks=[plots.live_loss_callback(keys=("reward",))],  # live total reward
)

# %% [markdown]
# ## Training
# Each step logs, per reward function, the group mean (`rewards/<name>/mean`), the total `reward`, its
# spread `reward_std`, the KL to the reference, and `completions/mean_length`. The loss of GRPO is not a
# quality measure (it starts at 0 by construction); watch the rewards.

# %%
summary = training.train(trainer, recipe, technique="grpo")

# %%
history = trainer.state.log_history
reward_keys = [f"rewards/{f.__name__}/mean" for f in rewards.DEFAULT_REWARDS]
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
plots.plot_metrics(history, reward_keys, "each reward (group mean)", ax=axes[0])
plots.plot_metrics(history, ("reward",), "total reward", ax=axes[1])
plots.plot_metrics(history, ("completions/mean_length",), "completion length (tokens)", ax=axes[2])
fig.tight_layout()

# %%
k, reward_start, reward_end = measurement.reward_trend(history)  # means over the first and last quarter of the run
print(f"mean total reward, first {k} steps: {reward_start:.3f}; last {k} steps: {reward_end:.3f}")

# %% [markdown]
# ## Result: held-out accuracy and format, before and after

# %%
eval_after = math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
stages = {"before": eval_before, "after warm-up": eval_warm, "after GRPO": eval_after}
table = pd.DataFrame({name: {key: result[key] for key in ("accuracy", "strict_format", "soft_format")}
                      for name, result in stages.items()})
table.style.format("{:.1%}")

# %%
shown = min(3, len(held_out))
compare([row["question"] for row in held_out.select(range(shown))],
        eval_before["completions"][:shown], eval_after["completions"][:shown])

# %% [markdown]
# ## Saving
# Save the LoRA adapter, reload it on the base model and check it answers a held-out problem identically.

# %%
adapter_dir = "outputs/grpo/adapter"
model.save_pretrained(adapter_dir)
tokenizer.save_pretrained(adapter_dir)
reloaded, reloaded_tokenizer = FastLanguageModel.from_pretrained(
    model_name=adapter_dir, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False)
probe = held_out[0]["prompt"]
trained_answer = chat(model, tokenizer, probe, max_new_tokens=recipe.max_completion_length)
reloaded_answer = chat(reloaded, reloaded_tokenizer, probe, max_new_tokens=recipe.max_completion_length)
print(trained_answer)
assert trained_answer == reloaded_answer, "the reloaded adapter must answer like the trained model"
print(f"\nreloaded adapter from {adapter_dir}: identical answer ({measurement.folder_size_mb(adapter_dir):.1f} MB)")
del reloaded

# %% [markdown]
# ## Technical deep dive: one group, by hand
# Sample a group for one problem, score it, and compute the advantages exactly as GRPO does. Completions
# above the group mean get a positive advantage (made more likely), those below a negative one. If all
# rewards are equal, every advantage is 0: that prompt teaches nothing this step.

# %%
group_prompt = held_out[1]
group = chat(model, tokenizer, [group_prompt["prompt"]] * recipe.num_generations,
             max_new_tokens=recipe.max_completion_length, do_sample=True, temperature=recipe.temperature)
group_scores = pd.DataFrame(rewards.score_completions(group, group_prompt["answer"]))
std = group_scores["total"].std(ddof=0)
group_scores["advantage"] = (group_scores["total"] - group_scores["total"].mean()) / (std + 1e-4)
group_scores["completion"] = [c[:80].replace("\n", " ") for c in group]
print(f"question: {group_prompt['question']}  (answer {group_prompt['answer']})")
group_scores.round(3)

# %% [markdown]
# ## Pitfalls and best practices
# - **All-zero advantages.** If every completion in a group gets the same reward, nothing is learned; watch
#   `frac_reward_zero_std`. Fix with partial-credit rewards, easier problems, or a short SFT warm-up.
# - **Reward hacking.** The model optimizes exactly what you reward: a format reward without a correctness
#   reward yields beautiful tags around wrong numbers; trailing-text penalties stop padding.
# - **Never `eval` model output** to check an answer: parse it (see `rewards.parse_int`).
# - **Batch vs group.** The generation batch must be divisible by `num_generations`; fewer, larger groups give
#   better advantage estimates, more prompts per step give more diverse updates.
# - **Length.** `max_completion_length` bounds time and memory; completions cut off mid-answer get no
#   correctness reward.
# - **vLLM is optional.** `fast_inference=True` speeds up sampling where vLLM is installed; this notebook does
#   not depend on it.

# %% [markdown]
# ## Summary and exercises
# We trained a reasoning format and arithmetic with rewards instead of demonstrations, and measured accuracy
# and format compliance on held-out problems.
#
# Exercises:
# 1. Set `warmup_sft_steps=0` in the recipe. Watch `frac_reward_zero_std` and the reward curve.
# 2. Remove `correctness_reward` from `reward_funcs`. What does the model learn?
# 3. Add level 3 word problems (`levels=(1, 2, 3)`) and compare held-out accuracy per level.

# %%
records.write_run_record("grpo", {
    **summary, "recipe": recipe.to_dict(), "reward_start": reward_start, "reward_end": reward_end,
    **{key: {k: v for k, v in result.items() if k != "completions"}
       for key, result in (("eval_before", eval_before), ("eval_warmup", eval_warm), ("eval_after", eval_after))},
})
print(measurement.format_summary(summary))
