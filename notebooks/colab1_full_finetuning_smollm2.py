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
# # 1 · Full fine-tuning of SmolLM2-135M-Instruct with Unsloth
#
# **What this is.** Full fine-tuning updates *every* weight of a pretrained model on new examples.
# It is the most expressive way to adapt a model and the most expensive one: besides the weights, training
# keeps a gradient and optimizer state for each of them.
#
# **When to use it.** Small models (like this 135M-parameter one), a lot of data, or a change of behaviour so
# large that low-rank adapters (notebook 2) cannot express it. For 1B+ models on one GPU, LoRA is usually the
# better trade.
#
# **What this run shows.** We train SmolLM2-135M-Instruct on Alpaca-style instructions, watch the loss fall,
# measure time, tokens per second and memory, and compare the model's answers before and after training.
#
# **Hardware.** Colab: *Runtime → Change runtime type → T4 GPU* (free; fp16 only, no bf16). Locally it also
# runs on a CPU, offline, with smaller settings (`UNSLOTH_COURSE_QUICK=1`): same code, smaller numbers.

# %% [markdown]
# ## Setup
# The next cell installs the pinned GPU stack when it runs on Colab and makes the course's small library,
# `unsloth_course`, importable. Locally (venv, VS Code, Jupyter) it installs nothing.

# %%
# SETUP

# %% [markdown]
# `unsloth_course` must be imported **before** TRL: on a GPU it imports Unsloth first, so that Unsloth can patch
# TRL and transformers. `backend_info()` says which backend runs here; on a machine without a GPU the course
# uses a stand-in with the same API (plain transformers + PEFT), and says so.

# %%
from unsloth_course import FastLanguageModel, backend_info, get_recipe  # first: imports Unsloth on a GPU

from trl import SFTConfig, SFTTrainer

from unsloth_course import data, hardware, measurement, plots, records, training
from unsloth_course.inference import chat, compare
from unsloth_course.prompts import SFT_PROMPTS

recipe = get_recipe("full")  # the full profile, or the quick one when UNSLOTH_COURSE_QUICK=1
print(backend_info())
print(f"\nrecipe profile: {recipe.profile}")

# %% [markdown]
# ## Load the model
# `full_finetuning=True` is how Unsloth enables full fine-tuning. Two things people get wrong:
# - `r=0` in `get_peft_model` does **not** mean "full fine-tuning": Unsloth rejects it (rank must be > 0), and
#   there is no `to_full_finetune()` method. You simply never call `get_peft_model`.
# - Full fine-tuning switches 4-bit loading off: quantized weights cannot receive gradient updates.
#
# `dtype=None` picks the precision from the hardware: bf16 on Ampere or newer GPUs, fp16 on a T4, fp32 on CPU.

# %%
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=recipe.model_name,          # HuggingFaceTB/SmolLM2-135M-Instruct (offline: the embedded copy)
    max_seq_length=recipe.max_seq_length,  # longest training row, in tokens; longer rows are truncated
    dtype=None,                            # None = by hardware: bf16 / fp16 (T4) / fp32 (CPU)
    load_in_4bit=False,                    # full fine-tuning trains the real weights: no quantization
    full_finetuning=True,                  # every parameter trainable (no LoRA adapters)
)
print(measurement.parameter_line(model))
trainable, total = measurement.count_parameters(model)
assert trainable == total, "full fine-tuning: every parameter must be trainable"

# %% [markdown]
# ## Data format
# [yahma/alpaca-cleaned](https://huggingface.co/datasets/yahma/alpaca-cleaned) has 52k rows of
# `instruction`, optional `input` and `output`. Offline, the library generates rows of the same shape itself
# (arithmetic, unit conversion, string tasks, capitals, small Python functions, summaries), and says so.

# %%
raw = data.load_alpaca(n_rows=recipe.n_train_rows, seed=recipe.seed)
raw.to_pandas().head(5)

# %% [markdown]
# The same row can be rendered in several **prompt formats**. What matters is that training and inference use
# the *same* one, and that every training example ends with the **end-of-sequence (EOS) token**: that is how
# the model learns to stop. Without it, a fine-tuned model rambles on until `max_new_tokens`.

# %%
row = raw[0]
for style in ("alpaca", "chatml", "llama3"):
    print(f"----- {style} " + "-" * 50)
    print(data.render_example(row, style))

# %% [markdown]
# We train with **ChatML**, SmolLM2-Instruct's own template (`<|im_start|>role … <|im_end|>`): the model was
# instruction-tuned with it, and `tokenizer.apply_chat_template` renders it at inference, so training and
# inference match. Alpaca's `### Response:` format would work too but would fight the model's habits; the
# Llama 3 tokens do not even exist in SmolLM2's vocabulary.
#
# Each row becomes a conversational **prompt / completion** pair. TRL's `SFTTrainer` renders it with the chat
# template and computes the loss on the completion only (the answer), not on the prompt we wrote ourselves.
# The template closes the answer with `<|im_end|>`, which is this tokenizer's EOS token.

# %%
train_dataset = data.to_prompt_completion(raw)
print("EOS token:", tokenizer.eos_token, "id", tokenizer.eos_token_id, "| pad token:", tokenizer.pad_token)
train_dataset[0]

# %% [markdown]
# ## Baseline: answers before training
# The same three prompts are answered before and after training (greedy decoding, so the answers are
# reproducible). Notebook 2 uses the same prompts, so the two techniques compare directly.

# %%
before = chat(model, tokenizer, list(SFT_PROMPTS), max_new_tokens=recipe.max_new_tokens)
for prompt, answer in zip(SFT_PROMPTS, before):
    print(f">>> {prompt[:70]}\n{answer}\n")

# %% [markdown]
# ## Training configuration
# Every argument, and what to change when memory or time runs short. The values come from the recipe
# (`unsloth_course/recipes.py`), the one place that the notebooks and the CLI read.

# %%
config = SFTConfig(
    output_dir="outputs/full",            # checkpoints and logs
    max_steps=recipe.max_steps,           # optimizer steps; a demo-sized run (use num_train_epochs=1 for real runs)
    per_device_train_batch_size=recipe.per_device_train_batch_size,  # rows per forward pass; halve it on OOM
    gradient_accumulation_steps=recipe.gradient_accumulation_steps,  # effective batch = batch x accumulation
    learning_rate=recipe.learning_rate,   # 2e-5: full FT moves every weight, so 10x lower than LoRA's 2e-4
    warmup_steps=recipe.warmup_steps,     # ramp the learning rate up to avoid a destructive first step
    lr_scheduler_type=recipe.lr_scheduler_type,  # linear decay to 0 over max_steps
    weight_decay=recipe.weight_decay,     # mild regularization of the weights
    optim=training.resolve_optim(recipe.optim),  # 8-bit AdamW on GPU (bitsandbytes): 4x smaller optimizer state
    max_length=recipe.max_seq_length,     # truncate longer rows; lower it on OOM
    packing=False,                        # one row per sequence: simple and exact (notebook 5 packs)
    completion_only_loss=True,            # learn the answers, not our prompts
    gradient_checkpointing=recipe.gradient_checkpointing,  # recompute activations in backward: less memory
    logging_steps=recipe.logging_steps,   # log the loss every step for the live curve
    include_num_input_tokens_seen="non_padding",  # count real tokens, for an honest tokens/s
    seed=recipe.seed,                     # reproducible shuffling and initialization
    report_to="none",                     # no W&B / TensorBoard account needed
    save_strategy="no",                   # we save explicitly below
    **hardware.precision_args(),          # bf16 on Ampere+, fp16 on a T4, fp32 on CPU
)
trainer = SFTTrainer(
    model=model,
    processing_class=tokenizer,
    train_dataset=train_dataset,
    args=config,
    callbacks=[plots.live_loss_callback()],  # redraws the loss curve while training
)

# %% [markdown]
# What the trainer actually sees: token ids and labels. Prompt positions carry the label -100, which the loss
# ignores, so only the answer tokens (and the closing `<|im_end|>`) are learned.

# %%
split = data.split_trained_tokens(trainer.train_dataset[0], tokenizer)
if split is None:
    print("this trainer masks the prompt in its data collator, at batch time")
else:
    print(f"prompt tokens (not trained): ...{split[0][-150:]!r}")
    print(f"answer tokens (trained):     {split[1]!r}")

# %% [markdown]
# ## Training
# Watch the live loss curve: it should fall quickly in the first steps (the model learns the answer style) and
# then flatten. The summary reports time, tokens per second (padding excluded), and memory before and at peak.

# %%
summary = training.train(trainer, recipe, technique="full")

# %%
plots.plot_loss(trainer.state.log_history, "Full fine-tuning: training loss");

# %% [markdown]
# ## Inference: before vs after
# The same prompts, greedy decoding, side by side.

# %%
after = chat(model, tokenizer, list(SFT_PROMPTS), max_new_tokens=recipe.max_new_tokens)
compare(list(SFT_PROMPTS), before, after)

# %% [markdown]
# ## Saving
# A full fine-tune is a complete model: save weights (safetensors) and tokenizer together, then reload the
# folder and check that it gives the same greedy answer. Pushing to the Hub happens only when `HF_TOKEN` is set
# (environment variable, or Colab's *Secrets* panel); the token is never printed.

# %%
save_dir = "outputs/full/model"
model.save_pretrained(save_dir, safe_serialization=True)
tokenizer.save_pretrained(save_dir)
print(f"saved {measurement.folder_size_mb(save_dir):.0f} MB to {save_dir}")

reloaded, reloaded_tokenizer = FastLanguageModel.from_pretrained(
    model_name=save_dir, max_seq_length=recipe.max_seq_length, dtype=model.dtype, load_in_4bit=False,
)
probe = SFT_PROMPTS[1]
original_answer = chat(model, tokenizer, probe, max_new_tokens=32)
reloaded_answer = chat(reloaded, reloaded_tokenizer, probe, max_new_tokens=32)
print("trained :", original_answer)
print("reloaded:", reloaded_answer)
assert original_answer == reloaded_answer, "the reloaded model must answer exactly like the trained one"
del reloaded

# %%
from unsloth_course.hub import hf_token  # noqa: E402

if hf_token():
    repo = "smollm2-135m-alpaca-full"  # becomes <your user>/<repo> on the Hub
    model.push_to_hub(repo, token=hf_token(), private=True)
    tokenizer.push_to_hub(repo, token=hf_token(), private=True)
    print(f"pushed to the Hub as a private repo: {repo}")
else:
    print("HF_TOKEN is not set: not pushing to the Hub (set it to share the model)")

# %% [markdown]
# ## Technical deep dive: where the memory goes
# For full fine-tuning, memory holds four things: the **weights**, one **gradient** per weight, the
# **optimizer state** (AdamW keeps two moments per weight: 8 bytes/param in fp32, about 2 bytes in 8-bit AdamW),
# and the **activations** saved for the backward pass (they grow with batch size x sequence length, and
# gradient checkpointing trades them for recomputation). Below, the first three are computed from this model's
# parameter count and the precision used in this run; the measured peak comes from the training summary.

# %%
bytes_weight = next(model.parameters()).element_size()
optim_name = getattr(config.optim, "value", config.optim)  # an enum in TrainingArguments
optimizer_bytes = 2 if "8bit" in optim_name else 8
rows = {
    "weights": total * bytes_weight,
    "gradients": total * bytes_weight,
    f"optimizer ({optim_name})": total * optimizer_bytes,
}
for name, size in rows.items():
    print(f"{name:28s} {size / 1e9:6.2f} GB")
print(f"{'sum of the three':28s} {sum(rows.values()) / 1e9:6.2f} GB")
print(f"{'measured peak (' + summary['memory_device'] + ')':28s} {summary['memory_peak_gb']:6.2f} GB"
      "  <- includes activations, buffers and, on CPU, the Python process itself")

# %% [markdown]
# ## Pitfalls and best practices
# - **Learning rate.** Full fine-tuning wants ~1e-5 to 5e-5. LoRA's usual 2e-4 would wreck a fully trainable
#   model (loss spikes, repetitive output): the update touches every weight.
# - **Catastrophic forgetting.** Every weight moves, so a long run on narrow data erodes general skills. Keep
#   runs short, mix in general data, or use LoRA.
# - **EOS and templates.** Train and infer with the same template; make sure each example ends with EOS.
#   A model that never stops talking was almost always trained without EOS.
# - **"r=0 means full fine-tuning"** is wrong for Unsloth: use `full_finetuning=True`.
# - **Precision.** A T4 has no bf16: forcing `bf16=True` there fails. `precision_args()` chooses by hardware.
# - **Memory.** On OOM: halve `per_device_train_batch_size` and double `gradient_accumulation_steps`, shorten
#   `max_seq_length`, keep gradient checkpointing and 8-bit AdamW on. The library prints these, with values,
#   when training runs out of memory.

# %% [markdown]
# ## Summary and exercises
# We fully fine-tuned a 135M model: every parameter trained, at a low learning rate, and the run record below
# is what notebook 2 compares LoRA against.
#
# Exercises:
# 1. Raise the learning rate to 2e-4 and watch the loss curve and the answers. What breaks?
# 2. Train with the Alpaca template instead (`data.to_alpaca_text`) and ask in ChatML afterwards. What happens?
# 3. Turn `gradient_checkpointing` off and compare peak memory and tokens/s.

# %%
record = records.write_run_record("full", {**summary, "recipe": recipe.to_dict(),
                                           "checkpoint_mb": measurement.folder_size_mb(save_dir),
                                           "answers": compare(list(SFT_PROMPTS), before, after).to_records()})
print(f"run record written to {record}")
print(measurement.format_summary(summary))
