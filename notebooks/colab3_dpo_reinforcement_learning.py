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
# # 3 · DPO: aligning SmolLM2-135M-Instruct with preference pairs
#
# **What this is.** Direct Preference Optimization (DPO) learns from pairs: for a prompt `x`, a preferred
# answer `y_w` (*chosen*) and a worse one `y_l` (*rejected*). The model being trained (the *policy* `π`)
# defines an **implicit reward** for any answer: how much more likely it makes that answer than the frozen
# *reference* model `π_ref` (the model before DPO), scaled by `beta`:
#
# `r(x, y) = beta · log( π(y|x) / π_ref(y|x) )`
#
# The loss is a logistic (sigmoid) loss on the reward **margin** between chosen and rejected:
#
# `L = -log σ( r(x, y_w) - r(x, y_l) )`
#
# Lowering it makes the chosen answer more likely *relative to the reference* and the rejected one less
# likely. `beta` sets how strongly the policy is held near the reference.
#
# **Why no reward model and no sampling.** Classic RLHF first fits a reward model to the pairs, then runs PPO,
# which samples answers from the policy at every step. The DPO paper shows that the optimum of that
# KL-regularized objective can be written with the policy itself, so the pair loss above optimizes it
# directly. Training is forward and backward passes over *fixed* pairs, like SFT, plus one no-gradient forward
# pass of the reference.
#
# **When to use it.** After SFT (notebooks 1 and 2), when you can say which of two answers is better: style,
# helpfulness, refusals, correctness, format. DPO shifts the model between behaviours it can already produce;
# it does not teach new knowledge. When answers can be checked automatically, GRPO (notebook 4) samples and
# scores its own answers instead of needing pairs.
#
# **What this run shows.** Preference pairs rendered with the chat template; LoRA, where the reference model
# costs no second copy of the model; DPO's training metrics (rewards of chosen and rejected answers, margins,
# accuracies); on **held-out pairs that training never sees**, the implicit-reward accuracy and margin after
# training and how often the model prefers the chosen answer before and after, each with a 95% interval; answers
# side by side; and a small `beta` experiment.
#
# **Hardware.** Colab T4 GPU (free; fp16 only), or locally on a CPU with `UNSLOTH_COURSE_QUICK=1`: same code,
# a few steps, small numbers.

# %% [markdown]
# ## Setup

# %%
# SETUP

# %% [markdown]
# `DATASET`: a Hub id, or your own `.json`/`.jsonl`/`.parquet`/`.csv` file with Intel/orca_dpo_pairs' columns
# `system` (may be empty), `question`, `chosen` and `rejected`.

# %% tags=["parameters"]
DATASET = "Intel/orca_dpo_pairs"

# %%
from unsloth_course import FastLanguageModel, backend_info, get_recipe  # first: imports Unsloth  # noqa: I001

import gc
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch

from unsloth_course import data, evaluation, measurement, models, plots, records, trainers, training
from unsloth_course.inference import chat, chat_details, compare

recipe = get_recipe("dpo", dataset=DATASET)
print(backend_info())
print(f"\nrecipe profile: {recipe.profile}; data: {recipe.dataset}")

# %% [markdown]
# ## Load the model and add LoRA adapters
# LoRA as in notebook 2. DPO also needs the **reference model** `π_ref`, the model as it was before training.
# With a LoRA model and `ref_model=None`, the frozen base weights already are that reference: a new adapter
# starts with `B = 0`, so base + adapter computes exactly the base model. The trainer gets the reference
# log-probabilities from the same model, without the trained adapter's changes, so no second copy of the
# model is loaded (DPO with full fine-tuning needs one). The configuration section shows how TRL does it.

# %%
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=recipe.model_name,          # HuggingFaceTB/SmolLM2-135M-Instruct (offline: the embedded copy)
    max_seq_length=recipe.max_seq_length,  # prompt + answer, in tokens
    dtype=None,                            # by hardware: bf16 / fp16 (T4) / fp32 (CPU)
    load_in_4bit=False,                    # QLoRA would set True: 4-bit frozen base, for 1B+ models
)


def add_lora(base_model):
    """LoRA adapters on every projection; the beta experiment reuses this on fresh copies of the base."""
    return FastLanguageModel.get_peft_model(
        base_model,
        r=recipe.lora_r,                       # rank of B·A: capacity of the update (8-64 typical; 16 here)
        lora_alpha=recipe.lora_alpha,          # scale alpha/r; alpha = r keeps the scale at 1
        lora_dropout=recipe.lora_dropout,      # 0 (TRL's DPO switches dropout off anyway: disable_dropout)
        target_modules=list(recipe.target_modules),  # all attention and MLP projections, as in notebook 2
        bias="none",                           # do not train biases (Llama-style models have none)
        use_gradient_checkpointing=trainers.checkpointing_mode(recipe),  # chosen here, not in DPOConfig
        random_state=recipe.seed,              # same adapter initialization every time
        use_rslora=recipe.use_rslora,          # rank-stabilized scaling alpha/sqrt(r): for large r only
    )


model = add_lora(model)
print(measurement.parameter_line(model))

# %% [markdown]
# ## Data format
# [Intel/orca_dpo_pairs](https://huggingface.co/datasets/Intel/orca_dpo_pairs) has about 13k rows of `system`,
# `question`, `chosen` and `rejected`; according to its dataset card the chosen answers come from
# GPT-4/GPT-3.5 (the Orca data) and the rejected ones from a weaker model. Offline, the library generates rows
# of the same shape: the chosen answer is correct; the rejected one is wrong, a refusal, off topic or cut
# short.
#
# DPO needs **pairs** because its only signal is a comparison: "for this prompt, this answer is better than
# that one". The pairs themselves play the role of the reward model.

# %%
raw = data.load_orca_dpo(source=recipe.dataset, n_rows=recipe.n_train_rows + recipe.n_eval_rows, seed=recipe.seed)
raw.to_pandas().head(4)

# %% [markdown]
# `data.to_dpo_conversations` converts each row into TRL's *conversational preference* format: a `prompt` (the
# system message, if any, and the user question) and two one-message continuations, `chosen` and `rejected`.

# %%
pairs = data.to_dpo_conversations(raw)
for key in ("prompt", "chosen", "rejected"):
    print(f"{key}: {pairs[0][key]}")

# %% [markdown]
# TRL renders the prompt with the chat template, ending with the assistant header
# (`add_generation_prompt=True`), and scores each answer as the continuation after it. Look at the end of both
# continuations: the template closes the answer with `<|im_end|>`, SmolLM2's end-of-turn (EOS) token, so the
# loss also covers *stopping*. The assertion checks what TRL relies on: the rendered prompt is a prefix of the
# rendered prompt + answer.

# %%
example = pairs[0]
prompt_text = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
print(prompt_text, end="")
print("-" * 60)
for key in ("chosen", "rejected"):
    full_text = tokenizer.apply_chat_template(example["prompt"] + example[key], tokenize=False)
    assert full_text.startswith(prompt_text), "the chat template must render the prompt identically"
    print(f"{key:9s} continuation: {full_text[len(prompt_text):]!r}")

# %% [markdown]
# **Prompt length.** Older tutorials pass `max_prompt_length` to `DPOConfig`. TRL 1.x's `DPOConfig` has no
# such argument (only `max_length` for prompt + answer, and `truncation_mode`): plain TRL raises a TypeError, and
# Unsloth's config wrapper drops it with a printed line. Either way nothing cuts prompts, and TRL silently drops a
# pair whose prompt alone fills `max_length`. So the course drops, and counts, the pairs whose templated prompt is
# longer than `recipe.max_prompt_length` tokens: a cut prompt would train on a question the model never fully saw.
# The check counts the prompt tokens independently.

# %%
pairs = data.filter_long_prompts(pairs, tokenizer, recipe.max_prompt_length)


def n_tokens(text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_text_of(row: dict) -> str:
    return tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)


prompt_tokens = [n_tokens(prompt_text_of(row)) for row in pairs]
print(f"{len(pairs)} pairs kept; longest prompt: {max(prompt_tokens)} tokens "
      f"(limit {recipe.max_prompt_length})")
assert max(prompt_tokens) <= recipe.max_prompt_length, "a prompt longer than max_prompt_length was kept"

# %% [markdown]
# **Length of chosen vs rejected.** DPO compares *summed* log-probabilities, and every token adds a negative
# term, so answer length matters (see the pitfalls). How often is the chosen answer the longer one here?

# %%
chosen_len = [n_tokens(row["chosen"][-1]["content"]) for row in pairs]
rejected_len = [n_tokens(row["rejected"][-1]["content"]) for row in pairs]
longer = sum(c > r for c, r in zip(chosen_len, rejected_len)) / len(pairs)
print(f"mean answer length: chosen {sum(chosen_len) / len(pairs):.1f} tokens, "
      f"rejected {sum(rejected_len) / len(pairs):.1f} tokens")
print(f"chosen is the longer answer in {longer:.1%} of the pairs")

# %% [markdown]
# A held-out split of `recipe.n_eval_rows` pairs is never trained on: every preference metric below is measured on
# it. Training pairs whose question repeats a held-out question (exactly or nearly) are removed too.

# %%
train_set, held_out = data.held_out_split(pairs, recipe.n_eval_rows, recipe.seed)
eval_prompts = [row["prompt"] for row in held_out.select(range(min(3, len(held_out))))]

# %% [markdown]
# ## Baseline: the model before DPO
# `evaluation.preference_metrics` scores every held-out pair without generating anything: it sums the
# log-probabilities of the chosen answer's tokens and of the rejected answer's tokens given the templated prompt,
# under the model and under the reference (the same model with its adapter switched off).
# - **implicit-reward accuracy**: the share of pairs whose DPO reward `beta · (log π − log π_ref)` is higher for
#   the chosen answer: exactly DPO's criterion, on pairs it never trained on. Before training the policy *is* the
#   reference and every reward is 0, so it is undefined ("n/a"), not 0%.
# - **mean reward margin**: the average of `r(chosen) − r(rejected)`; 0 before training by construction.
# - **log p accuracy**: how often `log p(chosen) > log p(rejected)` under the model itself. Summed log-probabilities
#   favour short answers (every token adds a negative term), so this mixes preference with length.
# - **length-normalized log p accuracy**: the same with the mean log-probability per token, which removes most of
#   the length effect.
#
# Each comes with a 95% interval (Wilson for the accuracies, bootstrap for the margin): with 64 pairs, one pair is
# 1.6 points and an interval is about ±12 points wide, so differences inside it are noise. The rewards are less
# exposed to length than log p: the reference pays the same per-token cost for the same answer, so "longer is less
# likely" cancels in the log-ratio.

# %%
pref_before = evaluation.preference_metrics(model, tokenizer, held_out, recipe.max_seq_length, recipe.beta)
print(pref_before)

# %% [markdown]
# Greedy answers to three held-out prompts, to compare after training:

# %%
before = chat_details(model, tokenizer, eval_prompts, max_new_tokens=recipe.max_new_tokens)
for prompt, answer in zip(eval_prompts, before):
    print(f">>> {prompt[-1]['content'][:70]}\n{answer}\n")

# %% [markdown]
# ## Training configuration
# What differs from SFT:
# - **`beta`** scales the implicit reward: a larger `beta` holds the policy closer to the reference (the loss
#   saturates after a smaller change), a smaller one lets it drift further. 0.1 is TRL's default; 0.01-0.5 is the
#   usual range.
# - **Learning rate.** DPO pushes on log-probability *differences* and degrades a model quickly; its rates are well
#   below SFT's (LoRA DPO around 5e-6 to 5e-5, full fine-tuning DPO around 5e-7 to 5e-6).
# - **Batch.** Each pair is two sequences (prompt + chosen, prompt + rejected), each through the policy with
#   gradients and through the reference without: a batch of 2 pairs costs more than an SFT batch of 4 rows.
# - **Lengths.** `max_length` bounds prompt + answer; there is no `max_prompt_length` (filtered above). Passing it
#   anyway shows what your TRL does with it:

# %%
print(f"learning rate: DPO {recipe.learning_rate:g}, LoRA SFT (notebook 2) "
      f"{get_recipe('lora', recipe.profile).learning_rate:g}")
try:  # the argument older tutorials pass
    trainers.dpo_args(recipe, "outputs/dpo", max_prompt_length=recipe.max_prompt_length)
    print("DPOConfig(max_prompt_length=...) accepted and dropped (Unsloth's wrapper; see its message above): "
          "TRL 1.x does not use it")
except TypeError as error:  # plain TRL 1.x
    print(f"DPOConfig(max_prompt_length=...) -> TypeError: {error}")

# %% [markdown]
# `trainers.dpo_trainer` builds the trainer from the recipe (the same function builds it for
# `unsloth-course run dpo`). With a LoRA model and `ref_model=None` no second model is loaded. Every argument the
# recipe sets, with its value and why:

# %%
trainer = trainers.dpo_trainer(recipe, model, tokenizer, train_set, output_dir="outputs/dpo",
                               callbacks=[plots.live_loss_callback()])
trainers.explain(trainer.args)

# %% [markdown]
# **Where the reference lives.** TRL keeps a frozen copy of the *starting* adapter, named `"ref"`, and
# switches to it for the reference pass (a new adapter's copy adds nothing to the base model; the deep dive
# checks it). It costs adapter-sized memory, not a second model: the parameter total below now counts this
# frozen copy, the trainable count is unchanged. If the list shows only `"default"`, this TRL version switches
# the adapter off for the reference pass instead, with the same result for a new adapter.

# %%
ref_params = sum(p.numel() for name, p in model.named_parameters() if ".ref." in name)
print(f"adapters on the model: {list(model.peft_config)}")
print(f"frozen reference adapter: {ref_params:,} parameters, "
      f"{sum(p.requires_grad for name, p in model.named_parameters() if '.ref.' in name)} of them trainable")
print(measurement.parameter_line(model))

# %% [markdown]
# ## Training
# What to look at in the plots below:
# - **loss** starts at `ln 2`: the policy equals the reference, every margin is 0 and `σ(0) = 1/2`.
# - **rewards/chosen** and **rewards/rejected** (mean `beta · log-ratio` of each answer): they should
#   separate, chosen above rejected. Both may fall below 0: DPO only constrains their difference.
# - **rewards/margins**: chosen minus rejected reward; it should grow.
# - **rewards/accuracies**: the share of the step's pairs whose chosen reward beats the rejected one (strictly:
#   it reads 0, not 50%, while every reward is still 0).
#
# Each logged value comes from that step's batch, measured before the step's update, so the rewards stay
# exactly 0 until the first update with a non-zero learning rate. A batch holds a few pairs: read trends, not
# single points. In quick mode the few small steps move the model very little, and the summary may flag the
# loss as flat.

# %%
summary = training.train(trainer, recipe, technique="dpo")

# %%
history = trainer.state.log_history
fig, axes = plt.subplots(2, 2, figsize=(12, 7))
plots.plot_metrics(history, ("loss",), "DPO loss", ax=axes[0, 0])
axes[0, 0].axhline(math.log(2), color="gray", linestyle="--", label="ln 2")
axes[0, 0].legend()
plots.plot_metrics(history, ("rewards/chosen", "rewards/rejected"), "implicit rewards", ax=axes[0, 1])
plots.plot_metrics(history, ("rewards/margins",), "reward margin (chosen - rejected)", ax=axes[1, 0])
plots.plot_metrics(history, ("rewards/accuracies",), "reward accuracy (training batches)", ax=axes[1, 1])
fig.tight_layout()

# %%
logs = pd.DataFrame([e for e in history if "rewards/margins" in e]).set_index("step")
k = max(1, len(logs) // 4)
print(f"first logged loss {logs['loss'].iloc[0]:.4f}; ln 2 = {math.log(2):.4f}")
last = logs.tail(k).mean()
print(f"mean of the last {k} logged step{'s' * (k > 1)}: margin {last['rewards/margins']:.4f}, "
      f"accuracy {last['rewards/accuracies']:.1%}, chosen reward {last['rewards/chosen']:.4f}, "
      f"rejected reward {last['rewards/rejected']:.4f}")

# %% [markdown]
# ## Evaluation: held-out preferences, before vs after
# The same held-out pairs, scored again. The implicit-reward accuracy is the headline: DPO's own criterion on pairs
# it never trained on. Read the log p accuracies with the lengths above in mind, and read every number with its
# interval.

# %%
pref_after = evaluation.preference_metrics(model, tokenizer, held_out, recipe.max_seq_length, recipe.beta)
evaluation.preference_table({"before DPO": pref_before, "after DPO": pref_after})

# %% [markdown]
# Then the answers, which a number cannot replace (after the few small steps of quick mode, greedy answers may not
# change at all). Flags mark answers that loop, stop at `max_new_tokens` or are empty.

# %%
after = chat_details(model, tokenizer, eval_prompts, max_new_tokens=recipe.max_new_tokens)
compare(eval_prompts, before, after)

# %% [markdown]
# What to expect here: DPO moved the implicit reward on nearly every held-out pair, yet greedy answers change little
# and do not become correct. The pairs teach *style* (the chosen answers of orca_dpo_pairs are shorter and skip the
# "Sure! I'd be happy to help" preamble that rejected ones often open with), not knowledge a 135M model lacks: in the
# full-profile run on an H200 the French translation looped before and after DPO, and the Challenger question was
# answered wrongly before and after. The reward accuracy says the model now *ranks* answers like the labels; whether
# it *writes* better answers needs more pairs, a bigger model, or an SFT stage first (the CPT -> SFT -> DPO pipeline).

# %% [markdown]
# ## Saving the adapter
# Save only the trained adapter (`selected_adapters=["default"]`; the frozen `"ref"` copy TRL added is not
# needed to use the model), reload it on the base model and check that it answers a held-out prompt exactly
# like the trained model.

# %%
adapter_dir = "outputs/dpo/adapter"
model.save_pretrained(adapter_dir, selected_adapters=["default"])  # adapter weights + adapter_config.json
tokenizer.save_pretrained(adapter_dir)
adapter_mb = measurement.folder_size_mb(adapter_dir)

probe = eval_prompts[0]
trained_answer = chat(model, tokenizer, probe, max_new_tokens=32)
reloaded, reloaded_tokenizer = FastLanguageModel.from_pretrained(
    model_name=adapter_dir, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False)
reloaded_answer = chat(reloaded, reloaded_tokenizer, probe, max_new_tokens=32)
print(f"trained : {trained_answer}\nreloaded: {reloaded_answer}")
assert trained_answer == reloaded_answer, "the reloaded adapter must answer like the trained model"
print(f"\nreloaded adapter from {adapter_dir}: identical answer ({adapter_mb:.1f} MB)")
del reloaded

# %% [markdown]
# ## Technical deep dive
# - **The loss, per pair.** With `Δ = [log π(y_w) - log π_ref(y_w)] - [log π(y_l) - log π_ref(y_l)]`, the loss
#   is `-log σ(beta · Δ)`. Its gradient is `-beta · σ(-beta · Δ) · ∇Δ`: pairs the policy already ranks
#   correctly by a wide margin get weight `σ(-beta · Δ) → 0`; wrongly ranked pairs get the most.
# - **Why `Z(x)` disappears.** The optimal policy of the KL-regularized reward objective is
#   `π*(y|x) = π_ref(y|x) · exp(r(x, y) / beta) / Z(x)`, so `r = beta · log(π*/π_ref) + beta · log Z(x)`. In a
#   *difference* of two answers to the same prompt, `Z(x)` cancels: that is why DPO needs pairs.
# - **The reference.** The `"ref"` adapter TRL added is a copy of the adapter at the start: all its `B`
#   matrices are zero, so it adds exactly nothing to the base model, while the trained adapter's `B` matrices
#   moved:

# %%
def max_abs(adapter: str, matrix: str = "lora_B") -> float:
    values = [p.detach().abs().max().item() for name, p in model.named_parameters()
              if f".{adapter}." in name and matrix in name]
    return max(values) if values else float("nan")


if "ref" in model.peft_config:
    print(f"largest |B| in the reference adapter 'ref': {max_abs('ref')}")
else:
    print("no 'ref' adapter: this TRL version switches the adapter off for the reference pass")
print(f"largest |B| in the trained adapter 'default': {max_abs('default'):.2e}")

# %% [markdown]
# ### Experiment: how `beta` changes the margins
# For each `beta` in `recipe.beta_sweep`: a fresh LoRA model on the same base (same seed, same data order),
# `recipe.beta_sweep_steps` steps without warm-up (so every step updates), then the held-out pairs scored with
# that `beta`. The reward margin is `beta · Δ`, so it grows with `beta` even when the policy moved equally;
# the log-ratio margin `Δ = margin / beta` says how far each policy actually moved away from the reference.
# Adam normalizes the gradient's scale, so in the first steps the policies move by similar amounts; `beta`'s
# real effect, how soon the loss saturates and the drift stops, needs longer runs (an exercise).

# %%
sweep_logs, sweep_rows = {}, []
for beta in recipe.beta_sweep:
    base, _ = FastLanguageModel.from_pretrained(
        model_name=recipe.model_name, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False)
    sweep_model = add_lora(base)
    sweep_recipe = recipe.replace(beta=beta, max_steps=recipe.beta_sweep_steps, warmup_steps=0)
    sweep_trainer = trainers.dpo_trainer(sweep_recipe, sweep_model, tokenizer, train_set,
                                         output_dir=f"outputs/dpo/beta_{beta}")
    training.train(sweep_trainer, sweep_recipe, verbose=False)
    sweep_logs[beta] = sweep_trainer.state.log_history
    held = evaluation.preference_metrics(sweep_model, tokenizer, held_out, recipe.max_seq_length, beta)
    sweep_rows.append({"beta": beta,
                       "last train margin": measurement.losses(sweep_logs[beta], "rewards/margins")[-1][1],
                       "held-out reward margin": held.mean_reward_margin.value,
                       "held-out log-ratio margin (margin / beta)": held.mean_reward_margin.value / beta,
                       "held-out reward accuracy": held.reward_accuracy.value})
    del sweep_trainer, sweep_model, base  # free each model before the next one
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for beta, log in sweep_logs.items():
    steps, margins = zip(*measurement.losses(log, "rewards/margins"))
    axes[0].plot(steps, margins, marker="o", label=f"beta={beta}")
    axes[1].plot(steps, [m / beta for m in margins], marker="o", label=f"beta={beta}")
for ax, title in zip(axes, ("reward margin (training batches)", "log-ratio margin = margin / beta")):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_xticks(range(1, recipe.beta_sweep_steps + 1))
    ax.grid(alpha=0.3)
    ax.legend()
fig.tight_layout()

# %%
sweep_table = pd.DataFrame(sweep_rows).set_index("beta")
sweep_table.style.format({"held-out reward accuracy": "{:.1%}"}, precision=4).format_index("{:g}")

# %% [markdown]
# ## Pitfalls and best practices
# - **`max_prompt_length` is gone.** TRL 1.x's `DPOConfig` rejects it; Unsloth's wrapper accepts it and drops
#   it with a warning (shown above): either way nothing cuts prompts, and TRL drops pairs whose prompt alone fills
#   `max_length`. Filter long prompts, as here, and set `max_length` for prompt + answer.
# - **Chat template mismatch.** TRL renders conversational pairs with the tokenizer's chat template. If you
#   pre-render text with another template, or chat with a different one afterwards, the model learns
#   preferences in a format it never sees at inference. Keep pairs conversational; the prefix check in the
#   data section is what TRL needs (it warns when the rendered prompt is not a prefix of prompt + answer).
# - **EOS.** The template closes every answer with `<|im_end|>`, so the loss includes stopping. With
#   plain-text pairs TRL appends `tokenizer.eos_token`: it must be the template's end-of-turn token
#   (`<|im_end|>` for SmolLM2, set by the course's loader), or the model learns to stop on a token chat never
#   expects.
# - **Too high a learning rate collapses the outputs.** The margin can keep growing while both
#   log-probabilities fall and the answers turn repetitive or empty. Watch `logps/chosen` in
#   `trainer.state.log_history` and read the answers, not only the margin; lower the rate 2-10x if the chosen
#   log-probability keeps dropping.
# - **Length bias.** Summed log-probabilities make length matter: where chosen answers are usually longer (see
#   the data section), DPO can learn "longer is better". Compare answer lengths before and after and the
#   length-normalized accuracy above; counter with length-balanced data, `ld_alpha` (LD-DPO) or a length-normalized
#   loss (`loss_type="sigmoid_norm"` or `"ipo"` in TRL).
# - **Reward accuracy is not quality.** It is measured on the pairs' own answers, by the model's own reference;
#   always read generated answers. And report it on held-out pairs with its interval: on the training pairs it
#   climbs to 100% by memorization.
# - **Reference.** With LoRA, pass `ref_model=None` (no second model). Do not pass the same object as `model`
#   and `ref_model`: TRL refuses it.

# %% [markdown]
# ## Summary and exercises
# DPO turned preference pairs into a classification-like loss on implicit rewards, with the frozen base as the
# reference and no reward model; the table above says what it changed on held-out pairs, and the answers show
# how that reads.
#
# Exercises:
# 1. Run the beta experiment longer, with a third value:
#    `recipe = get_recipe("dpo", beta_sweep=(0.05, 0.1, 0.5), beta_sweep_steps=30)`. Does the log-ratio margin
#    now depend on `beta`?
# 2. Multiply the learning rate by 10. Plot `logps/chosen` and `logps/rejected` and read the answers.
# 3. Train with the length-normalized loss (`trainers.dpo_args(recipe, "outputs/dpo", loss_type=["sigmoid_norm"])`
#    as the trainer's `args`) and compare the length-normalized log p accuracy and the answer lengths.
# 4. Swap `chosen` and `rejected` in the training data. What happens to the held-out accuracies?

# %%
records.write_run_record("dpo", {
    **summary, "recipe": recipe.to_dict(), "data": data.source_of(raw), "model": models.model_source(recipe.model_name),
    "held_out": {"before": pref_before, "after": pref_after},
    "adapter_mb": adapter_mb, "beta_sweep": sweep_table.reset_index().to_dict("records"),
    "answers": compare(eval_prompts, before, after).to_records(),
})
print(measurement.format_summary(summary))
