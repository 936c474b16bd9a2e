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
# # 5 · Continued pretraining of SmolLM2 on Python code
#
# **What this is.** Continued pretraining (CPT) trains a pretrained model further on **raw text** of a new
# domain, with the objective of pretraining itself: predict the next token, with the loss on **every** token.
# There is no chat template, no instruction / answer split and no completion mask: a document is its text,
# closed by the EOS token so that the model learns where documents end.
#
# **What it is not.** It is not instruction tuning. CPT teaches what the domain *looks like* (vocabulary,
# idioms, facts); it does not teach the model to follow requests, and on an instruction model it can wear
# the chat behaviour down. That is why CPT is usually followed by SFT (notebooks 1-2) and alignment (3-4).
#
# **When to use it.** A domain the base model saw little of (a programming language, law, medicine, your
# company's documents), a new human language, or knowledge more recent than the pretraining data. The risk
# is **catastrophic forgetting**: pulling the model towards the new text can degrade what it knew. So we
# measure it: perplexity on real general English prose before and after, next to perplexity on held-out code.
#
# **What this run shows.** LoRA on SmolLM2-135M-Instruct **plus the embeddings and output head trained in
# full, at their own smaller learning rate** (Unsloth's `UnslothTrainer` with `embedding_learning_rate`);
# packing of raw functions; on functions training never sees, code perplexity before and after, and how the model
# continues their first lines; the perplexity of general prose (forgetting); what tied embeddings mean for training
# and merging, and a check that the merged checkpoint still holds what was trained.
#
# **Hardware.** Colab T4 GPU (free; fp16 only), or locally on a CPU with `UNSLOTH_COURSE_QUICK=1`: a few tiny
# steps, enough to see every mechanism, with changes to match.

# %% [markdown]
# ## Setup

# %%
# SETUP

# %% [markdown]
# `DATASET`: a Hub id, or your own `.jsonl`/`.parquet`/`.json`/`.csv` file in CodeSearchNet's schema (at least
# `whole_func_string` and `func_name`). `GENERAL_DATASET`: where the general prose for the forgetting check comes
# from (the answers of an Alpaca-style dataset, or your own file with an `output` column).

# %% tags=["parameters"]
DATASET = "claudios/code_search_net"
GENERAL_DATASET = "yahma/alpaca-cleaned"

# %%
from unsloth_course import FastLanguageModel, backend_info, get_recipe  # first: imports Unsloth on a GPU

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from datasets import Dataset
from safetensors import safe_open
from transformers import TrainerCallback
from trl import pack_dataset

from unsloth_course import data, evaluation, measurement, models, plots, records, trainers, training
from unsloth_course.inference import compare, generate_details

recipe = get_recipe("cpt", dataset=DATASET, general_dataset=GENERAL_DATASET)
print(backend_info())
print(f"\nrecipe profile: {recipe.profile}; data: {recipe.dataset}; general prose: {recipe.general_dataset}")
print(f"learning_rate {recipe.learning_rate:g} (LoRA), "
      f"embedding_learning_rate {recipe.embedding_learning_rate:g} (embeddings), "
      f"packing={recipe.packing}, max_seq_length={recipe.max_seq_length}, r={recipe.lora_r}")
print(f"target_modules: {', '.join(recipe.target_modules)}")

# %% [markdown]
# ## Load the model

# %%
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=recipe.model_name,          # HuggingFaceTB/SmolLM2-135M-Instruct (offline: the embedded copy)
    max_seq_length=recipe.max_seq_length,  # length of each packed training sequence, in tokens
    dtype=None,                            # by hardware: bf16 / fp16 (T4) / fp32 (CPU)
    load_in_4bit=False,                    # 135M parameters need no quantization
)
print(measurement.parameter_line(model))

# %% [markdown]
# ### One matrix, two jobs: tied embeddings
# The input embedding `embed_tokens` turns a token id into a vector (one row per vocabulary entry); the output
# head `lm_head` turns the last hidden state into one score per vocabulary entry. Both are
# `vocabulary x hidden` matrices, and SmolLM2 **ties** them (`tie_word_embeddings`): one matrix does both
# jobs.
# Look at `same storage` and at the share of all parameters this one matrix holds.

# %%
embed, head = model.get_input_embeddings(), model.get_output_embeddings()
_, total_params = measurement.count_parameters(model)
print(f"tie_word_embeddings: {model.config.tie_word_embeddings}")
print(f"embed_tokens {tuple(embed.weight.shape)}, lm_head {tuple(head.weight.shape)}, "
      f"same storage: {embed.weight.data_ptr() == head.weight.data_ptr()}")
print(f"that matrix: {embed.weight.numel():,} parameters, {100 * embed.weight.numel() / total_params:.1f}% "
      "of the model (tied weights counted once)")
base_embeddings = embed.weight.detach().float().cpu().clone()  # kept to check the merged checkpoint later

# %% [markdown]
# ### Adding LoRA, and training the embeddings
# `target_modules` lists the seven projections **and** `embed_tokens` and `lm_head`. Unsloth trains those two
# in full rather than with LoRA: it moves them to `modules_to_save`, where PEFT keeps the frozen original and
# trains a **full copy**. For a tied model it keeps only `embed_tokens` there and sets PEFT's
# `ensure_weight_tying=True`, which makes `lm_head` compute with that same trainable copy. Two separate copies
# would drift apart during training, and a merge could keep only one of them. (The CPU stand-in does the
# same.)
#
# Every argument of `get_peft_model`:

# %%
model = FastLanguageModel.get_peft_model(
    model,
    r=recipe.lora_r,                        # rank of the adapters on the seven projections
    lora_alpha=recipe.lora_alpha,           # update scale alpha/r
    lora_dropout=recipe.lora_dropout,       # 0: no dropout mask
    target_modules=list(recipe.target_modules),  # 7 projections (LoRA) + embed_tokens, lm_head (full copies)
    bias="none",                            # Llama-style models have no biases
    use_gradient_checkpointing=trainers.checkpointing_mode(recipe),  # long raw documents in little memory
    random_state=recipe.seed,               # reproducible adapter initialization
    use_rslora=recipe.use_rslora,           # rank-stabilized scaling alpha/sqrt(r); helps at large r
)
print(measurement.parameter_line(model))

# %% [markdown]
# Which parameters train, and how: the LoRA matrices `A` and `B` on the projections, and the trainable
# embedding copy, listed once. (The total above grew by more than the LoRA matrices: the frozen original
# embedding matrix stays next to its trainable copy.) Look at whether `lm_head` computes with that copy: it
# must, or the head would silently stop following the embeddings.

# %%
trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
lora_params = [param for name, param in trainable if "lora_" in name]
print(f"LoRA adapters: {len(lora_params)} tensors, {sum(p.numel() for p in lora_params):,} parameters")
input_weight, output_weight = model.get_input_embeddings().weight, model.get_output_embeddings().weight
head_uses_copy = output_weight.data_ptr() == input_weight.data_ptr()
print(f"lm_head computes with the trainable embedding copy: {head_uses_copy}")
assert head_uses_copy, "lm_head must stay tied to the trainable embed_tokens copy"
pd.DataFrame([{"trained in full": name, "shape": tuple(param.shape), "parameters": f"{param.numel():,}"}
              for name, param in trainable if "lora_" not in name])

# %% [markdown]
# ## Data: Python functions as raw text
# CodeSearchNet's Python functions (offline: documented functions from this Python's standard library, taken by
# the library from its source files), split into training functions and held-out functions that training never
# sees. A row is just code:

# %%
code = data.load_python_code(source=recipe.dataset, n_train=recipe.n_train_rows, n_eval=recipe.n_eval_rows,
                             seed=recipe.seed, max_seq_length=recipe.max_seq_length)
print(code["train"][0]["text"])
first_rows = code["train"].select(range(5))
pd.DataFrame({"name": first_rows["name"], "first line": [text.split("\n")[0] for text in first_rows["text"]],
              "characters": [len(text) for text in first_rows["text"]]})

# %% [markdown]
# Each function gets the EOS token appended (`<|im_end|>` for SmolLM2-Instruct): without it, packed
# functions would run into each other and the model would never learn where one ends. Look at the end of a
# row:

# %%
train_set = data.add_eos(code["train"], tokenizer.eos_token)
print(repr(train_set[0]["text"][-70:]))

# %% [markdown]
# ### Token lengths
# How long the functions are, in tokens, against `max_seq_length` (the red line). Rows longer than it lose
# their tail in training.

# %%
lengths = data.token_lengths(train_set, tokenizer)
too_long = [n for n in lengths if n > recipe.max_seq_length]
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.hist(lengths, bins=30)
ax.axvline(recipe.max_seq_length, color="red", linestyle="--",
           label=f"max_seq_length = {recipe.max_seq_length}")
ax.set_xlabel("tokens per function (with EOS)")
ax.set_ylabel("functions")
ax.legend()
plt.show()
print(f"{len(lengths)} functions, {sum(lengths):,} tokens; median {sorted(lengths)[len(lengths) // 2]}, "
      f"longest {max(lengths)}; {len(too_long)} longer than max_seq_length "
      f"({sum(n - recipe.max_seq_length for n in too_long):,} tokens beyond it)")

# %% [markdown]
# ### Packing
# Most functions are shorter than `max_seq_length`. Padding each one to the batch's longest row wastes
# compute; **packing** instead fills each training sequence with several whole functions. TRL's default
# strategy, best-fit decreasing (`"bfd"`), places the longest functions first and fills the gaps with
# shorter ones; a function longer than `max_seq_length` is cut. This is what the trainer will do with
# `packing=True`, shown with TRL's own `pack_dataset`:

# %%
token_ids = tokenizer(list(train_set["text"]), add_special_tokens=False)["input_ids"]
tokenized = Dataset.from_dict({"input_ids": token_ids})
packed = pack_dataset(tokenized, recipe.max_seq_length, strategy="bfd")
packed_tokens = sum(len(ids) for ids in packed["input_ids"])
pd.DataFrame({
    "sequences": {"rows (one function each)": len(tokenized), "packed sequences": len(packed)},
    "tokens": {"rows (one function each)": sum(lengths), "packed sequences": packed_tokens},
    "mean tokens per sequence": {"rows (one function each)": round(sum(lengths) / len(lengths), 1),
                                 "packed sequences": round(packed_tokens / len(packed), 1)},
    "functions per sequence (max)": {"rows (one function each)": 1,
                                     "packed sequences": max(len(n) for n in packed["seq_lengths"])},
})

# %% [markdown]
# Inside a packed sequence, the EOS token separates the functions. Here is the boundary between the first two
# functions of a packed sequence (`seq_lengths` gives each function's length):

# %%
example = next(row for row in packed if len(row["seq_lengths"]) > 1)
cut = example["seq_lengths"][0]
print(f"seq_lengths: {example['seq_lengths']}")
print(tokenizer.decode(example["input_ids"][cut - 20:cut + 20]))

# %% [markdown]
# ## Baseline: perplexity and completions before training
# **Perplexity** is `exp(mean next-token loss)` over every token of a text: the lower, the less surprised the model
# is. Two held-out sets, both raw text like the training data:
# - **held-out Python functions**: what we train for;
# - **general English prose**: answers of Alpaca-style instructions that contain no code (offline: the library's
#   generated answers), as plain text. It is the kind of text the model handled before CPT and CPT never shows it;
#   if CPT pulls the model towards code at the expense of everything else (forgetting), this perplexity rises.
#
# Each perplexity comes with a 95% bootstrap interval over the texts. Here is the start of one prose sample:

# %%
held_out_code = list(code["test"]["text"])
general_prose = data.load_general_prose(source=recipe.general_dataset, n=recipe.n_eval_rows, seed=recipe.seed)
print(general_prose[0][:400])

# %%
ppl_before = {"code": evaluation.perplexity_report(model, tokenizer, held_out_code, recipe.max_seq_length),
              "prose": evaluation.perplexity_report(model, tokenizer, general_prose, recipe.max_seq_length)}
for name, result in ppl_before.items():
    print(f"{name:5s}: {result}")

# %% [markdown]
# **Completions.** The first lines of up to 16 held-out functions (signature, docstring and the first line of the
# body) are continued before and after training. Given only a signature and a docstring, an instruction model tends to
# close the code block and explain the function in prose; with the first body line it continues inside the function.
# `generate` continues raw text (no chat template: a CPT model is a text continuer), greedily; `completion_is_code`
# checks whether the continuation is Python.

# %%
heads = data.code_completion_prompts(held_out_code)[:16]  # up to 16 held-out functions
before = generate_details(model, tokenizer, heads, max_new_tokens=recipe.max_new_tokens)
for head, completion in list(zip(heads, before))[:3]:
    print(f"{head}{completion}\n{'-' * 70}")
print("continuations that are Python:", evaluation.code_rate(heads, [str(c) for c in before]))

# %% [markdown]
# ## Training configuration
# `UnslothTrainingArguments` is TRL's `SFTConfig` plus `embedding_learning_rate`, and `UnslothTrainer` builds an
# optimizer with separate parameter groups: the LoRA adapters at `learning_rate`, the embeddings (here the one tied
# matrix) at `embedding_learning_rate`. `dataset_text_field="text"` with no prompt column means plain language
# modeling: the loss covers every token. `trainers.cpt_trainer` builds both from the recipe (as for
# `unsloth-course run cpt`); a callback records each group's learning rate at every step.

# %%
class LearningRates(TrainerCallback):
    """Records the learning rate of every optimizer group at the start of each step."""

    def __init__(self):
        self.steps = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.steps.append([group["lr"] for group in optimizer.param_groups])


learning_rates = LearningRates()
trainer = trainers.cpt_trainer(recipe, model, tokenizer, train_set, output_dir="outputs/cpt",
                               callbacks=[plots.live_loss_callback(), learning_rates])
print(f"the trainer packed {len(train_set)} functions into {len(trainer.train_dataset)} sequences")
trainers.explain(trainer.args)

# %% [markdown]
# ### Two learning rates in one optimizer
# Build the optimizer now and look inside it: one row per parameter group. Look at the learning rate of the
# group that holds the embedding matrix against the LoRA groups.

# %%
embedding_ids = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}


def group_name(group) -> str:
    holds_embeddings = any(id(param) in embedding_ids for param in group["params"])
    return "embeddings (embed_tokens = lm_head)" if holds_embeddings else "LoRA adapters"


optimizer = trainer.create_optimizer()
groups = [{"group": group_name(group), "tensors": len(group["params"]),
           "parameters": sum(param.numel() for param in group["params"]),
           "learning rate": group["lr"], "weight decay": group["weight_decay"]}
          for group in optimizer.param_groups]
lrs = {(row["group"] == "LoRA adapters", row["learning rate"]) for row in groups}
assert lrs == {(True, recipe.learning_rate), (False, recipe.embedding_learning_rate)}, lrs
pd.DataFrame(groups)

# %% [markdown]
# ## Training
# Loss is the mean next-token loss over every token of the packed functions. Each step sees different
# functions, so the per-step loss is noisy; over a handful of steps (the quick profile) its trend says little,
# and the summary's automatic trend `CHECK` can fire on that noise. The held-out perplexity below is the
# measurement that counts.

# %%
summary = training.train(trainer, recipe, technique="cpt")

# %%
plots.plot_loss(trainer.state.log_history, "continued pretraining: training loss");

# %% [markdown]
# ### Did each group really train at its own rate?
# The plot: each group's learning rate at every step, as the callback recorded it (warm-up, then linear
# decay; the scheduler scales both groups alike). The table, measured on the weights: AdamW moves a weight by
# at most about its learning rate per step, so a group's largest change should be close to the sum of its
# learning rates over the steps. LoRA's `B` starts at zero, so its largest entry is its largest change.

# %%
names = [group_name(group) for group in trainer.optimizer.param_groups]
schedule = pd.DataFrame(learning_rates.steps, columns=[f"{i}: {name}" for i, name in enumerate(names)])
schedule.index.name = "step"
embedding_change = (model.get_input_embeddings().weight.detach().float().cpu() - base_embeddings).abs().max()
lora_b_change = max(float(p.detach().abs().max()) for n, p in model.named_parameters() if "lora_B" in n)
embeddings_lr = schedule[next(c for c in schedule if "embeddings" in c)]
lora_lr = schedule[next(c for c in schedule if "LoRA" in c)]
fig, ax = plt.subplots(figsize=(7, 3.2))
schedule.plot(ax=ax, marker=".", title="learning rate per optimizer group")
plt.show()
pd.DataFrame({
    "peak learning rate": {"embeddings": embeddings_lr.max(), "LoRA": lora_lr.max()},
    "sum over the steps": {"embeddings": embeddings_lr.sum(), "LoRA": lora_lr.sum()},
    "largest weight change": {"embeddings": float(embedding_change), "LoRA": lora_b_change},
    "measured on": {"embeddings": "embedding matrix", "LoRA": "B matrices"},
})

# %% [markdown]
# ## Evaluation: what changed, what was forgotten
# The same held-out sets as before training, with the change on the same texts (paired) and its interval. A falling
# code perplexity is the point of CPT. For the prose, a rise is forgetting; a fall is possible too and not a
# contradiction: CPT trains the instruction model on raw text without a chat template, which also makes it better
# at continuing plain text in general, until the pull towards code wins (a longer or faster run shows it turning).

# %%
ppl_after = {"code": evaluation.perplexity_report(model, tokenizer, held_out_code, recipe.max_seq_length),
             "prose": evaluation.perplexity_report(model, tokenizer, general_prose, recipe.max_seq_length)}
perplexity_changes = {
    f"held-out Python code ({len(held_out_code)} functions)": evaluation.compare_perplexity(ppl_before["code"],
                                                                                            ppl_after["code"]),
    f"general English prose ({len(general_prose)} texts)": evaluation.compare_perplexity(ppl_before["prose"],
                                                                                         ppl_after["prose"]),
}
evaluation.loss_table(perplexity_changes)

# %% [markdown]
# The completions, before and after, with flags for loops and continuations cut at `max_new_tokens`. A greedy
# completion changes only when training moves the top-ranked token somewhere; a handful of small steps (the quick
# profile) often leaves them identical.

# %%
after = generate_details(model, tokenizer, heads, max_new_tokens=recipe.max_new_tokens)
print("continuations that are Python, after:", evaluation.code_rate(heads, [str(c) for c in after]))
compare(heads[:3], before[:3], after[:3])

# %% [markdown]
# How to read these. The share of continuations that are Python hardly moves: the instruct model already continues
# code once it sees the first body line (in the full profile on an H200, real functions: 68.8% before, 62.5% after, of
# 16, each with an interval about 20 points wide, so no measurable change). What changes is *how* it continues: in
# that run the base model often restarted the function from `def` or drifted into `# Test` lines, while after training
# it carried on from the given line, sometimes after a stray `#`. Sixteen greedy completions are illustrations; the
# perplexity table above, on all held-out functions, is the measurement.

# %% [markdown]
# ## Saving, and checking that the merge kept the training
# - The **adapter** (`save_pretrained`): the LoRA matrices **and the trained embedding matrix**, in the
#   training precision. A CPT adapter is therefore not a few MB like notebook 2's.
# - A **merged** model (`save_pretrained_merged(..., save_method="merged_16bit")`): LoRA folded into the
#   projections, the trained embeddings in place of the old ones, all in 16 bits.

# %%
adapter_dir, merged_dir = "outputs/cpt/adapter", "outputs/cpt/merged"
model.save_pretrained(adapter_dir)   # LoRA matrices + trained embedding copy + adapter_config.json
tokenizer.save_pretrained(adapter_dir)
model.save_pretrained_merged(merged_dir, tokenizer, save_method="merged_16bit")
sizes = {"adapter": measurement.folder_size_mb(adapter_dir), "merged 16-bit": measurement.folder_size_mb(merged_dir)}
pd.DataFrame({"size (MB)": sizes}).round(1)

# %% [markdown]
# Which full matrices each folder stores (LoRA's small `A`/`B` left out), with their dtype. A tied model's
# merged checkpoint should store the embedding matrix **once** and say `tie_word_embeddings: true` in its
# config, so that loading rebuilds `lm_head` from it. Look also at the adapter: PEFT may write the tied matrix
# under both names, which is most of its size.


# %%
def stored_matrices(folder: str) -> dict[str, str]:
    """Name -> dtype of the embedding / output-head tensors in a folder's safetensors files."""
    found = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as checkpoint:
            names = checkpoint.keys()
            for key in names:
                if "embed_tokens" in key or "lm_head" in key:
                    found[key] = checkpoint.get_slice(key).get_dtype()
    return found


stored = stored_matrices(merged_dir)
print(f"adapter          : {stored_matrices(adapter_dir)}")
print(f"merged checkpoint: {stored}")
merged_model, merged_tokenizer = FastLanguageModel.from_pretrained(
    model_name=merged_dir, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False)
print(f"reloaded config tie_word_embeddings: {merged_model.config.tie_word_embeddings}")

# %% [markdown]
# ### Check 1: the embedding matrix
# The reloaded matrix must be the trained one, up to 16-bit rounding: **exactly** the trained fp32 matrix
# rounded to the checkpoint's dtype, i.e. within half a 16-bit step of it (at most `2^-8 = 0.39%` of each
# value for bfloat16, `2^-11` for float16). It must also still differ from the base model's matrix (the
# training was kept), and input and output embeddings must still be one matrix.

# %%
trained_embeddings = model.get_input_embeddings().weight.detach().float().cpu()
reloaded_in = merged_model.get_input_embeddings().weight
reloaded_out = merged_model.get_output_embeddings().weight
dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
saved_dtype = dtypes[stored["model.embed_tokens.weight"]]
reloaded = reloaded_in.detach().float().cpu()
rounded = trained_embeddings.to(saved_dtype).to(reloaded_in.dtype).float()  # trained, as the file can hold it
nonzero = trained_embeddings != 0
relative = ((reloaded - trained_embeddings).abs()[nonzero] / trained_embeddings.abs()[nonzero]).max()
tied_after = reloaded_in.data_ptr() == reloaded_out.data_ptr() or torch.equal(reloaded_in, reloaded_out)
differs_from_base = reloaded != base_embeddings
_, exponent = torch.frexp(base_embeddings[base_embeddings != 0])  # value = mantissa in [0.5, 1) x 2^exponent
half_step = torch.finfo(saved_dtype).eps * torch.exp2(exponent.float() - 2)  # half a 16-bit step there
embedding_check = {
    "input and output embeddings tied after reload": tied_after,
    f"reloaded == trained rounded to {saved_dtype}": torch.equal(reloaded, rounded),
    "max |reloaded - trained|": f"{(reloaded - trained_embeddings).abs().max():.3g}",
    "max relative difference": f"{relative:.3%}",
    "largest change training made": f"{(trained_embeddings - base_embeddings).abs().max():.3g}",
    f"half a {saved_dtype} step at the base values (median)": f"{half_step.median():.3g}",
    "entries that differ from the base model": f"{differs_from_base.float().mean():.2%}",
    "token vectors (rows) that differ from the base model": f"{int(differs_from_base.any(dim=1).sum()):,} "
                                                            f"of {differs_from_base.shape[0]:,}",
}
for name, value in embedding_check.items():
    print(f"{name:55s}: {value}")
assert tied_after, "the merged model's lm_head is no longer the embedding matrix"
assert torch.equal(reloaded, rounded), "the merged embeddings are not the trained ones"
assert differs_from_base.any(), "the merged embeddings are the base model's: the embedding training was lost"

# %% [markdown]
# A 16-bit file keeps a change only where it is larger than half a 16-bit step at that value's size
# (bfloat16 keeps 8 significant bits, float16 11). Compare `largest change training made` with the median half
# step: where training moved weights by less, the file holds the base value again. That is why only part of
# the entries differ from the base model, and it applies to the LoRA updates merged into the projections too.

# %% [markdown]
# ### Check 2: the LoRA updates in the projections
# Merging writes `W + (alpha/r)·B·A` into each adapted projection. For every adapted matrix, the trained
# `W + ΔW` rounded to the checkpoint's dtype is what the file should hold. Look at how many entries the merge
# should change (where that rounded sum differs from `W`) and whether the file changed them: a merge that
# dropped the adapters would leave them all at `W`.

# %%
counts = {"adapted matrices": 0, "entries": 0, "entries equal to W + ΔW rounded": 0,
          "entries the merge should change": 0, "of those, changed in the file": 0}
for name, module in model.named_modules():
    if not (hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")):
        continue  # only LoRA-wrapped projections
    base_weight = module.base_layer.weight.detach().float()
    delta = module.get_delta_weight(module.active_adapters[0]).detach().float()  # (alpha/r)·B·A
    expected = (base_weight + delta).to(saved_dtype).float().cpu()
    in_file = merged_model.get_submodule(name.removeprefix("base_model.model.")).weight.detach().float().cpu()
    should_change = expected != base_weight.cpu()
    counts["adapted matrices"] += 1
    counts["entries"] += expected.numel()
    counts["entries equal to W + ΔW rounded"] += int((in_file == expected).sum())
    counts["entries the merge should change"] += int(should_change.sum())
    counts["of those, changed in the file"] += int((in_file != base_weight.cpu())[should_change].sum())
for label, value in counts.items():
    print(f"{label:35s}: {value:,}")
changed_share = counts["of those, changed in the file"] / max(counts["entries the merge should change"], 1)
print(f"share of the merge's changes found in the file: {changed_share:.2%}")
assert counts["adapted matrices"] > 0, "no LoRA projection found"
assert counts["entries equal to W + ΔW rounded"] >= 0.99 * counts["entries"], "projections differ from W + ΔW"
assert changed_share >= 0.9, "the merged projections are the base weights: the LoRA training was lost"

# %% [markdown]
# ### Check 3: perplexity of the reloaded model
# Held-out code perplexity of the reloaded merged model against the trained model in memory. Checks 1 and 2
# proved the file holds exactly the trained weights rounded to 16 bits; this check measures what that
# rounding costs. `share of the gain kept` says how much of training's improvement the 16-bit checkpoint
# holds: updates smaller than half a 16-bit step round away. In fp32 on a CPU (the quick run) almost all of
# it survives; in bf16 on a GPU the trained model in memory still adds the LoRA update in higher precision,
# and the merged file can lose a visible part of the gain (the H100 run of this notebook kept about three
# quarters). So the test is: the reloaded model must keep most of the gain (at least half) and stay within
# 10% of the trained model's perplexity; a broken merge (an untied or random output head, lost weights)
# fails it by far.
#
# One detail: the padding side depends on the job. `generate` pads on the left (generation continues after the
# last real token), scoring pads on the right; the library's `generate` and `perplexity` set the side they need
# themselves. Unsloth sets it too: left after `from_pretrained` and in inference mode, right in training mode.
# The library saves tokenizers padding on the right, as the base model does (transformers 5 would otherwise
# reload the direction of the last padded call, kept in tokenizer.json). So the side printed below is `left`
# with Unsloth and `right` on the plain backend; both are fine here.

# %%
print(f"reloaded tokenizer padding side: {merged_tokenizer.padding_side}")
code_before, code_after = ppl_before["code"].perplexity.value, ppl_after["code"].perplexity.value
ppl_reloaded = evaluation.perplexity(merged_model, merged_tokenizer, held_out_code, recipe.max_seq_length)
gain = code_before - code_after
merge_check = pd.DataFrame({"held-out code perplexity": {
    "base model (before training)": code_before,
    "trained model (in memory)": code_after,
    "merged 16-bit, reloaded": ppl_reloaded,
}})
relative_gap = abs(ppl_reloaded / code_after - 1)
print(f"reloaded vs trained: {relative_gap:.3%} (tolerance 10%)")
kept = (code_before - ppl_reloaded) / gain if abs(gain) > 1e-9 else 1.0
print(f"share of the gain kept by the 16-bit checkpoint: {kept:.0%}")
assert relative_gap <= 0.10, "the reloaded merged model does not compute like the trained one"
if gain > 0.01 * code_before:  # a gain large enough to measure a share of it
    assert kept >= 0.5, "the 16-bit checkpoint lost most of what training gained"
del merged_model
merge_check.round(4)

# %% [markdown]
# ## Technical deep dive
# - **Tied embeddings in training.** With one matrix in both places, "training `lm_head`" and "training
#   `embed_tokens`" train the same weights: every step, the gradient is the sum of what the input side and
#   the output side want. PEFT keeps one trainable copy and re-ties `lm_head` to it (`ensure_weight_tying`);
#   listing both as separate copies would train two diverging matrices.
# - **Tied embeddings in merging.** The merged checkpoint must still say `tie_word_embeddings: true` and store
#   the **trained** matrix once; loading then rebuilds `lm_head` from it (Check 1). Save the untrained
#   original by mistake, or store an untied head, and the model silently loses what CPT taught the
#   embeddings, on one side or both.
# - **Why the embeddings get a smaller learning rate.** Through the output softmax, *every* row of the matrix
#   gets a gradient at every step (each wrong token is pushed down), and Adam normalizes step sizes, so even
#   rare tokens' vectors move by about the learning rate each step. These vectors are shared by every layer
#   and every prompt; moving them fast scrambles what the rest of the network expects and drives forgetting.
#   A common rule of thumb is an embedding learning rate 2-10x below the LoRA one (10x here).
# - **Why train them at all.** A new domain shifts which tokens matter and what they mean (a new language even
#   adds tokens whose rows start untrained); LoRA on the projections alone cannot change how tokens are
#   represented on the way in or scored on the way out.
# - **Packing and cross-contamination.** A packed sequence holds several functions. With ordinary causal attention,
#   the second function would attend to the first: the model would learn to predict code from an unrelated
#   neighbour. TRL's padding-free packing restarts `position_ids` at every function and passes the boundaries to the
#   attention (on GPU, Unsloth's varlen kernel where flash-attn, xformers or torch's `varlen_attn` provide one,
#   otherwise SDPA run once per function; on CPU, PyTorch attention with a block-diagonal mask that transformers
#   builds from the restarted positions), so attention stays inside each function. Measured below with a batch built
#   by the trainer's own collator: the second function of a packed sequence, in the packed batch and in a plain
#   causal pass over the same tokens, against running it alone.

# %%
row = next(row for row in trainer.train_dataset if len(row["seq_lengths"]) > 1)  # several functions
batch = trainer.data_collator([row])  # exactly what a training step receives
inputs = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
first, second = row["seq_lengths"][:2]
ids = inputs["input_ids"]
with torch.no_grad():  # use_cache=False: no KV cache, as in training
    packed_pass = model(**inputs, use_cache=False).logits[:, first:first + second].float()
    plain_causal = model(input_ids=ids, use_cache=False).logits[:, first:first + second].float()
    alone = model(input_ids=ids[:, first:first + second], use_cache=False).logits.float()
leak_packed = (packed_pass - alone).abs().max().item()
leak_plain = (plain_causal - alone).abs().max().item()
print(f"trainer batch: {sorted(batch)}")
print(f"second function ({second} tokens) after a first one of {first} tokens; "
      "largest logit difference to running it alone:")
print(f"  packed batch (as trained): {leak_packed:.3g}")
print(f"  plain causal attention   : {leak_plain:.3g}")
print("-> in the packed batch the second function " + ("does not see the first one on this backend"
      if leak_packed < 1e-2 * max(leak_plain, 1e-9) else "still sees the first one on this backend"))

# %% [markdown]
# ## Pitfalls and best practices
# - **Raw text, with EOS.** No chat template for CPT data, and an EOS after every document; without it, packed
#   documents run together.
# - **Embedding learning rate.** Same as the LoRA rate (or higher) and the general-text perplexity suffers;
#   keep it 2-10x lower.
# - **Tied models: one trainable copy.** Let Unsloth/PEFT tie (`ensure_weight_tying`); never train two
#   copies of a tied matrix.
# - **16-bit merges round.** Changes below half a 16-bit step vanish from a `merged_16bit` checkpoint; check
#   the reloaded model as above, and keep the adapter too: it stores the update in training precision.
# - **Long documents.** Packing with `"bfd"` cuts documents longer than `max_seq_length`;
#   `packing_strategy="bfd_split"` keeps the overflow as extra pieces. Raise `max_seq_length` if memory
#   allows.
# - **Packing speed depends on the attention kernel.** Padding-free packing is fast only with a varlen
#   kernel (flash-attn, xformers, or torch's `varlen_attn`). Unsloth takes torch's only when it accepts
#   `enable_gqa` (torch >= 2.12), and SmolLM2 uses grouped-query attention (9 query, 3 key/value heads). So
#   on an H100 with torch 2.11, Unsloth ran attention once per packed function: 3.5 s per CPT step, slower
#   than plain transformers with flex attention. torch 2.11's flash kernel handles GQA, so the course's command
#   line (`unsloth_course/cli/kernels.py`, not part of this notebook's library) gives its `varlen_attn` the
#   missing argument before Unsloth loads. The same step then took 0.25-0.30 s (`unsloth-course bench cpt
#   --profile throughput`, table in `docs/RESULTS.md`).
#   Check what your machine uses before trusting "packing is faster". `packing_strategy="wrapped"` (dense
#   rows, examples may see their neighbour) avoids the question for pretraining-style text.
# - **Forgetting.** Watch the general-prose perplexity. Remedies: fewer steps, lower learning rates, mixing
#   some general text into the CPT data ("replay"), and following CPT with SFT.
# - **Held-out data must be held out.** Evaluate on functions that training never saw (the split above), or
#   perplexity measures memorization.

# %% [markdown]
# ## Summary, exercises, and the multi-stage pipeline
# We continued the pretraining of SmolLM2 on raw Python functions with LoRA plus the tied embedding matrix at
# its own smaller learning rate, verified that the optimizer used both rates, measured code and general-text
# perplexity before and after, and checked that the merged 16-bit checkpoint still holds the trained, tied
# embeddings.
#
# **The pipeline this enables: CPT, then SFT, then DPO.** CPT teaches the domain; SFT then teaches the model
# to answer requests in it; DPO aligns its answers with preferences. Each stage starts from the previous
# stage's merged model (`--model FOLDER`):
#
# ```bash
# unsloth-course run cpt  --output-dir outputs/pipeline/cpt
# unsloth-course run lora --model outputs/pipeline/cpt/merged --output-dir outputs/pipeline/sft
# unsloth-course run dpo  --model outputs/pipeline/sft/merged --output-dir outputs/pipeline/dpo
# ```
#
# Add `--quick` to each command for a short CPU run. Each stage prints its before/after comparison and writes
# its run record to `runs/`.
#
# Exercises:
# 1. Set `embedding_learning_rate` equal to `learning_rate`. What happens to the general-prose perplexity?
# 2. Remove `embed_tokens` and `lm_head` from `target_modules` (and `embedding_learning_rate`, which then has
#    nothing to apply to). How much does the code perplexity still fall? (Check 1 then fails, as it should:
#    the embeddings did not train.)
# 3. Train with `packing=False`: compare the number of steps per epoch and the tokens/s.
# 4. Set `packing_strategy="bfd_split"`: how many more tokens train?

# %%
records.write_run_record("cpt", {
    **summary, "recipe": recipe.to_dict(), "data": data.source_of(code["train"]),
    "general_data": data.source_of(general_prose), "model": models.model_source(recipe.model_name),
    "adapter_mb": sizes["adapter"], "merged_mb": sizes["merged 16-bit"],
    "held_out": perplexity_changes,
    "perplexity_merged_reloaded": ppl_reloaded, "optimizer_groups": groups,
    "code_continuations": {"before": evaluation.code_rate(heads, before),
                           "after": evaluation.code_rate(heads, after)},
    "answers": compare(heads, before, after).to_records(),
})
print(measurement.format_summary(summary))
