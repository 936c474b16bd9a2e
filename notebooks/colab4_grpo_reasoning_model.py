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
# **What this is.** Group Relative Policy Optimization (GRPO, from DeepSeekMath) is reinforcement learning without
# a value model. For each prompt the model **samples a group** of `num_generations` completions; **reward
# functions** score each one; a completion's **advantage** is its reward relative to its group,
# `(r − mean(group)) / (std(group) + 1e-4)`. Completions better than their siblings are made more likely, worse ones
# less likely. An optional **KL term** (weight `beta`) holds the policy near a reference model.
#
# **When to use it.** When you can *check* an answer (math, code that runs, a format, a schema) but have no good
# demonstrations to imitate. You write rewards instead of examples.
#
# **What this run shows.** Generated arithmetic problems with exact answers, five reward functions written in this
# notebook, a short supervised format warm-up, then GRPO. On **200 held-out problems** (quick mode: a few) we measure
# greedy accuracy and format compliance three times: the base model, after the warm-up, after GRPO, each with a 95%
# interval, so that the warm-up's contribution and GRPO's own are shown apart.
#
# **Hardware.** Colab T4 GPU (fp16). Generation dominates GRPO's time. Locally on a CPU with `UNSLOTH_COURSE_QUICK=1`
# it runs a few tiny steps: enough to see the machinery, not to learn.

# %% [markdown]
# ## Setup

# %%
# SETUP

# %% [markdown]
# `DATASET`: `None` generates problems (the default), or the path of your own `.json`/`.jsonl`/`.parquet`/`.csv`
# file (or a Hub id) with a `question` column and an integer `answer` column.

# %% tags=["parameters"]
DATASET = None

# %%
from unsloth_course import FastLanguageModel, backend_info, get_recipe  # first: imports Unsloth on a GPU

import matplotlib.pyplot as plt
import pandas as pd

from unsloth_course import data, evaluation, measurement, models, plots, records, trainers, training
from unsloth_course.inference import chat, compare

recipe = get_recipe("grpo", dataset=DATASET)
print(backend_info())
print(f"\nrecipe profile: {recipe.profile}; data: {recipe.dataset or 'generated problems'}")

# %% [markdown]
# ## Load the model
# LoRA on all projections, as in notebook 2. `fast_inference=True` would sample with vLLM; Unsloth raises an error
# when vLLM is not installed, so this notebook uses plain `generate`, which works everywhere.

# %%
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=recipe.model_name,          # SmolLM2-135M-Instruct (offline: the embedded copy)
    max_seq_length=recipe.max_seq_length,  # prompt + completion must fit
    dtype=None,                            # by hardware: bf16 / fp16 (T4) / fp32 (CPU)
    load_in_4bit=False,                    # 135M parameters need no quantization
    fast_inference=False,                  # True: vLLM sampling (must be installed)
)
model = FastLanguageModel.get_peft_model(
    model,
    r=recipe.lora_r,                       # adapter rank
    lora_alpha=recipe.lora_alpha,          # scale alpha/r = 1
    lora_dropout=recipe.lora_dropout,      # 0: no dropout mask
    target_modules=list(recipe.target_modules),  # all attention and MLP projections
    bias="none",
    use_gradient_checkpointing=trainers.checkpointing_mode(recipe),  # less activation memory for long samples
    random_state=recipe.seed,
)
print(measurement.parameter_line(model))

# %% [markdown]
# ## Data: math problems with exact answers
# The library generates arithmetic and word problems with exact integer answers at four levels of difficulty (no
# download, deterministic); this run uses levels 1-2. Each row has a chat `prompt` (system prompt + question) and the
# `answer` column the correctness reward compares against. The held-out problems share no question, and no
# computation, with the training problems.

# %%
problems = data.load_math_problems(recipe.n_train_rows, recipe.n_eval_rows, recipe.levels, recipe.seed,
                                   source=recipe.dataset)
train_set, held_out = problems["train"], problems["test"]
pd.DataFrame(train_set.select(range(6))).drop(columns=["prompt"], errors="ignore")

# %% [markdown]
# The system prompt asks for reasoning and a single integer answer in tags:

# %%
print(data.SYSTEM_PROMPT)
print("\n--- what the model sees ---")
print(tokenizer.apply_chat_template(train_set[0]["prompt"], tokenize=False, add_generation_prompt=True))

# %% [markdown]
# ## Reward functions
# TRL calls each one as `fn(prompts, completions, **kwargs) -> list[float]`; dataset columns (here `answer`) arrive as
# keyword arguments, and TRL **adds** the rewards. The functions are yours to change: they are defined right here.
# Reading the number is the delicate part, so they use the library's `answer_int`: the integer an `<answer>` block
# states, or `None` when the block says anything else ("not 42", "minus 7", "42 apples", two numbers). Model text is
# parsed, never evaluated. Each function's maximum is its weight: correctness dominates (2.0), the four format
# rewards (0.5 each) give partial credit a small model can earn early, which keeps a group's rewards from all being
# equal.

# %% tags=["reward-functions"]
import re

from unsloth_course.rewards import answer_int, completion_text


def correctness_reward(prompts, completions, answer, **kwargs):
    """2.0 when the <answer> block states exactly the right integer."""
    return [2.0 if answer_int(c) == int(a) else 0.0 for c, a in zip(completions, answer)]


def int_reward(prompts, completions, **kwargs):
    """0.5 when the <answer> block states an integer, right or wrong."""
    return [0.5 if answer_int(c) is not None else 0.0 for c in completions]


TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")


def strict_format_reward(prompts, completions, **kwargs):
    """0.5 for exactly <reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>, one block of each."""
    scores = []
    for text in map(completion_text, completions):
        text = text.removesuffix("\n") if text.endswith("</answer>\n") else text
        reasoning, middle, ans = text.partition("\n</reasoning>\n<answer>\n")
        ok = (middle and reasoning.startswith("<reasoning>\n") and ans.endswith("\n</answer>")
              and all(text.count(tag) == 1 for tag in TAGS))
        scores.append(0.5 if ok else 0.0)
    return scores


JOIN = re.compile(r"</reasoning>\s*<answer>")  # no ".*?": searching such patterns is quadratic on long text


def soft_format_reward(prompts, completions, **kwargs):
    """0.5 when some <reasoning>...</reasoning>, then only whitespace, then <answer>...</answer>."""
    scores = []
    for text in map(completion_text, completions):
        start = text.find("<reasoning>")
        join = JOIN.search(text, start + len("<reasoning>")) if start >= 0 else None
        scores.append(0.5 if join and "</answer>" in text[join.end():] else 0.0)
    return scores


def xml_count_reward(prompts, completions, **kwargs):
    """0.125 per tag (with its newlines) present exactly once, minus 0.001 per character after </answer>."""
    scores = []
    for text in map(completion_text, completions):
        score = sum(0.125 for tag in ("<reasoning>\n", "\n</reasoning>\n", "\n<answer>\n", "\n</answer>")
                    if text.count(tag) == 1)
        if "</answer>" in text:
            score -= min(0.001 * len(text.rsplit("</answer>", 1)[1].strip()), 0.5)
        scores.append(score)
    return scores


REWARDS = [correctness_reward, int_reward, strict_format_reward, soft_format_reward, xml_count_reward]

# %% [markdown]
# Before training anything, check the rewards on hand-written completions:

# %%
examples = {
    "correct": "<reasoning>\n12 + 7 = 19\n</reasoning>\n<answer>\n19\n</answer>",
    "wrong answer": "<reasoning>\n12 + 7 = 18\n</reasoning>\n<answer>\n18\n</answer>",
    "negated": "<reasoning>\n12 + 7 = 19\n</reasoning>\n<answer>\nnot 19\n</answer>",
    "no newlines": "<reasoning>12 + 7 = 19</reasoning><answer>19</answer>",
    "text after answer": "<reasoning>\n12 + 7 = 19\n</reasoning>\n<answer>\n19\n</answer>\nHope this helps!",
    "no tags": "The answer is 19.",
    "empty": "",
}
scores = {fn.__name__: fn(None, list(examples.values()), answer=["19"] * len(examples)) for fn in REWARDS}
table = pd.DataFrame(scores, index=list(examples))
table["total"] = table.sum(axis=1)
table.round(3)

# %% [markdown]
# ## Baseline: the model before training
# Greedy answers to the held-out problems, scored like the rewards: **accuracy** (the stated integer is right),
# **strict format** and **soft format** compliance, each with a 95% Wilson interval (with 200 problems an interval is
# about ±7 points wide).

# %%
eval_base = evaluation.math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
print(eval_base)
print("\nexample answer:\n" + eval_base.completions[0])

# %% [markdown]
# ## Why a warm-up? Making learning possible
# GRPO learns only from *differences* within a group. A 135M model almost never writes the exact tags on its own, so
# every completion of a group scores the same, all advantages are 0, and nothing is learned (the log column
# `frac_reward_zero_std` shows how often that happens). Three ways out: partial-credit format rewards (we have them),
# easy problems first (levels 1-2), and a **short SFT warm-up** on worked examples in the target format. We use all
# three, keeping the warm-up short so that GRPO still has to find correct answers itself. The warm-up is built by the
# same library function as `unsloth-course run grpo` uses:

# %%
warmup_set = data.messages_to_prompt_completion(data.to_format_warmup(train_set))
warmup = trainers.format_warmup_trainer(recipe, model, tokenizer, warmup_set, output_dir="outputs/grpo/warmup")
trainers.explain(warmup.args)

# %%
training.train(warmup, recipe, technique="grpo format warm-up")
eval_warm = evaluation.math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
print(eval_warm)

# %% [markdown]
# ## GRPO configuration
# `trainers.grpo_trainer` builds the trainer from the recipe and the reward functions above. What the key arguments
# do, as TRL 1.15 implements them:
# - **`num_generations`**: the group size. The completions per step (`per_device_train_batch_size` x accumulation)
#   must be a multiple of it: plain TRL raises an error otherwise; Unsloth's config resets the batch to
#   `num_generations` and says so.
# - **`temperature`**: sampling diversity within a group. 0.8 here: at 1.0 the samples of this small model carry more
#   noise than signal, and in a calibration run GRPO then learned to keep writing after `</answer>` (strict format
#   fell to 0%) while 0.8 raised both accuracy and format (docs/RECIPES.md).
# - **`scale_rewards="group"`**: advantages are divided by the group's standard deviation (Bessel-corrected, plus
#   1e-4); `"batch"` uses the whole batch's, `"none"` does not divide (the Dr. GRPO paper's choice).
# - **`loss_type="dapo"`** (TRL's default): the per-token losses of all completions are summed and divided by the
#   number of completion tokens in the batch, so a long completion weighs more than a short one. The loss therefore
#   does not start at 0: a batch whose longer completions have above-average reward starts below 0.
# - **`epsilon`** (0.2): PPO's clipping of the probability ratio. With one optimization step per generation, as here,
#   the ratio is exactly 1 and clipping does nothing.
# - **`beta`**: the weight of a KL term to a reference model. TRL's default is 0.0, and so is ours. *Which* model
#   is the reference depends on the backend: with Unsloth it is the base model with the adapter switched off, i.e.
#   the model **before** the warm-up, so a positive `beta` pulls against what the warm-up taught; with plain TRL it is
#   a frozen copy of the adapter taken when the trainer is created (after the warm-up). With `beta = 0` neither
#   computes a reference.
# - **`max_prompt_length`** is not an argument of TRL 1.x's `GRPOConfig` (plain TRL raises a TypeError; Unsloth's
#   wrapper drops it with a message). Prompts are never truncated: keep them short (ours are a system prompt and one
#   question).

# %%
trainer = trainers.grpo_trainer(recipe, model, tokenizer, train_set, REWARDS, output_dir="outputs/grpo",
                                callbacks=[plots.live_loss_callback(keys=("reward",))])
trainers.explain(trainer.args)

# %% [markdown]
# ## Training
# Each step logs the batch mean of each reward (`rewards/<name>/mean`), the total `reward`, its spread over the batch
# (`reward_std`), `frac_reward_zero_std` (the share of groups whose rewards were all equal: nothing learned from
# them) and `completions/mean_length`. The loss is not a quality measure (see `loss_type`); watch the rewards.

# %%
summary = training.train(trainer, recipe, technique="grpo")

# %%
history = trainer.state.log_history
reward_keys = [f"rewards/{fn.__name__}/mean" for fn in REWARDS]
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
plots.plot_metrics(history, reward_keys, "each reward (batch mean)", ax=axes[0])
plots.plot_metrics(history, ("reward",), "total reward", ax=axes[1])
plots.plot_metrics(history, ("completions/mean_length",), "completion length (tokens)", ax=axes[2])
fig.tight_layout()

# %%
k, reward_start, reward_end = measurement.reward_trend(history)  # means over the first and last quarter
print(f"mean total reward, first {k} steps: {reward_start:.3f}; last {k} steps: {reward_end:.3f}")

# %% [markdown]
# ## Result: held-out accuracy and format at each stage
# The same held-out problems, greedy, after each stage. The contributions compare stages **on the same problems**
# (paired), so their intervals are narrower than the accuracies'. A contribution whose interval contains 0 is not
# distinguishable from noise at this sample size.

# %%
eval_after = evaluation.math_accuracy(model, tokenizer, held_out, recipe.max_completion_length)
evaluation.math_table({"base model": eval_base, "after warm-up": eval_warm, "after GRPO": eval_after})

# %%
contributions = evaluation.stage_contributions(eval_base, eval_warm, eval_after)
contributions.to_frame()

# %% [markdown]
# The answers to the first held-out problems, before any training and after GRPO, with flags for loops, answers cut
# at `max_new_tokens` and empty ones:

# %%
shown = min(3, len(held_out))
compare([row["question"] for row in held_out.select(range(shown))],
        eval_base.generations[:shown], eval_after.generations[:shown])

# %% [markdown]
# ### Where it still fails
# Neat tags around a wrong number are common: the format reward is easy to earn, the arithmetic is not. Split the
# held-out accuracy by the kind of computation, read from each problem's worked step (`reasoning`, e.g.
# `28 - 97 = -69`), to see which kinds GRPO improved and which it did not. Each group is small, so read the 95%
# intervals: only differences larger than them are real.

# %%
from unsloth_course.statistics import rate_of

STEP = re.compile(r"\d+ ([-+×÷]) \d+ =")  # a worked step: operand, operator, operand, "="


def kind_of(row):
    """The operator of the problem's first step, and whether the final answer is below zero."""
    step = STEP.search(row.get("reasoning") or "")
    operator = step.group(1) if step else "?"
    return f"{operator}, answer < 0" if int(row["answer"]) < 0 else f"{operator}, answer >= 0"


kinds = [kind_of(row) for row in held_out]
pd.DataFrame({
    stage: {kind: str(rate_of([c for c, k in zip(result.correct, kinds) if k == kind])) for kind in sorted(set(kinds))}
    for stage, result in {"after warm-up": eval_warm, "after GRPO": eval_after}.items()
}).rename_axis("held-out problems: operator, answer sign")

# %% [markdown]
# ## Saving
# Save the LoRA adapter, reload it on the base model and check that it answers a held-out problem identically.

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
# Sample a group for one problem, score it with the reward functions above, and compute the advantages as TRL does
# with `scale_rewards="group"`: `(r − mean) / (std + 1e-4)`, with the Bessel-corrected standard deviation (pandas'
# default, `ddof=1`). Completions above the group mean get a positive advantage (made more likely), those below a
# negative one. If all rewards are equal, every advantage is 0: that prompt teaches nothing this step.

# %%
group_prompt = held_out[1]
group = chat(model, tokenizer, [group_prompt["prompt"]] * recipe.num_generations,
             max_new_tokens=recipe.max_completion_length, do_sample=True, temperature=recipe.temperature)
group_scores = pd.DataFrame({fn.__name__: fn(None, group, answer=[group_prompt["answer"]] * len(group))
                             for fn in REWARDS})
group_scores["total"] = group_scores.sum(axis=1)
group_scores["advantage"] = (group_scores["total"] - group_scores["total"].mean()) / (group_scores["total"].std()
                                                                                      + 1e-4)
group_scores["completion"] = [c[:80].replace("\n", " ") for c in group]
print(f"question: {group_prompt['question']}  (answer {group_prompt['answer']})")
group_scores.round(3)

# %% [markdown]
# ## Pitfalls and best practices
# - **All-zero advantages.** If every completion in a group gets the same reward, nothing is learned; watch
#   `frac_reward_zero_std`. Fix with partial-credit rewards, easier problems, or a short SFT warm-up.
# - **Reward hacking.** The model optimizes exactly what you reward: a format reward without a correctness reward
#   yields beautiful tags around wrong numbers; a lenient number parser rewards "not 42" as 42. Test your rewards on
#   adversarial completions before training, as above.
# - **Never `eval` model output** to check an answer: parse it.
# - **The reference model differs by backend** (see `beta` above). If you want a KL anchor at the warmed-up model
#   under Unsloth, merge the warm-up adapter, reload, and add a fresh LoRA before GRPO.
# - **Batch vs group.** Fewer, larger groups give better advantage estimates; more prompts per step give more diverse
#   updates.
# - **Length.** `max_completion_length` bounds time and memory. Completions cut off mid-answer get no correctness
#   reward but are still trained on (`mask_truncated_completions` is off by default).
# - **Judge on held-out problems.** The training reward rises on problems the model has seen; only held-out accuracy,
#   with its interval, says it learned arithmetic rather than answers.

# %% [markdown]
# ## Summary and exercises
# A short warm-up taught the format; GRPO, with rewards written in this notebook and no demonstrations, then raised
# held-out accuracy and format on its own. The stage table separates the two.
#
# Exercises:
# 1. Set `warmup_sft_steps=0` (`recipe = recipe.replace(warmup_sft_steps=0)`). Watch `frac_reward_zero_std` and the
#    reward curve.
# 2. Remove `correctness_reward` from `REWARDS`. What does the model learn?
# 3. Set `temperature=1.0` and compare the strict format after GRPO.
# 4. Add level 3 word problems (`levels=(1, 2, 3)`) and compare held-out accuracy per level.

# %%
records.write_run_record("grpo", {
    **summary, "recipe": recipe.to_dict(), "data": data.source_of(train_set),
    "model": models.model_source(recipe.model_name),
    "reward_start": reward_start, "reward_end": reward_end,
    "held_out": {"base": eval_base, "warmup": eval_warm, "after": eval_after, "contributions": contributions},
})
print(measurement.format_summary(summary))
