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
# **What this is.** Full fine-tuning updates *every* weight of a pretrained model on new examples. It is the most
# expressive way to adapt a model and the most expensive: besides the weights, training keeps a gradient and
# optimizer state for each of them.
#
# **When to use it.** Small models (like this 135M-parameter one), a lot of data, or a change of behaviour so large
# that low-rank adapters (notebook 2) cannot express it. For 1B+ models on one GPU, LoRA is usually the better trade.
#
# **What this run shows.** We train SmolLM2-135M-Instruct on Alpaca instructions and measure what changed on
# **held-out rows that training never sees**: the loss of the model on their reference answers, before and after,
# with a confidence interval. We also read the model's own answers to a few prompts, watch the loss and memory, and
# see in numbers why full fine-tuning on a bf16 GPU needs fp32 master weights.
#
# **Hardware.** Colab: *Runtime → Change runtime type → T4 GPU* (free; fp16 only, no bf16). Locally it also runs on
# a CPU, offline, with smaller settings (`UNSLOTH_COURSE_QUICK=1`): the same code, smaller numbers.

# %% [markdown]
# ## Setup

# %%
# SETUP

# %% [markdown]
# `DATASET` is where the training rows come from: a Hugging Face Hub id (the default), or the path of your own
# `.json`, `.jsonl`, `.parquet` or `.csv` file with Alpaca's columns `instruction`, `input`, `output`. Everything
# below runs unchanged on your file.

# %% tags=["parameters"]
DATASET = "yahma/alpaca-cleaned"

# %% [markdown]
# `unsloth_course` is imported **before** TRL: on a GPU it imports Unsloth first, so that Unsloth can patch TRL and
# transformers. `backend_info()` says which backend runs here; without a GPU the course uses a stand-in with the
# same API (plain transformers + PEFT), and says so. The recipe holds every setting of this notebook.

# %%
from unsloth_course import FastLanguageModel, backend_info, get_recipe  # first: imports Unsloth on a GPU

import pandas as pd
import torch

from unsloth_course import data, evaluation, measurement, models, plots, records, trainers, training
from unsloth_course.inference import chat, chat_details, compare, model_device
from unsloth_course.prompts import SFT_PROMPTS

recipe = get_recipe("full", dataset=DATASET)  # the full profile, or the quick one when UNSLOTH_COURSE_QUICK=1
print(backend_info())
print(f"\nrecipe profile: {recipe.profile}; data: {recipe.dataset}")

# %% [markdown]
# ## Load the model
# `full_finetuning=True` is how Unsloth enables full fine-tuning. Three things people get wrong:
# - `r=0` in `get_peft_model` does **not** mean "full fine-tuning": Unsloth rejects it (rank must be > 0), and there
#   is no `to_full_finetune()` method. You simply never call `get_peft_model`.
# - Full fine-tuning switches 4-bit loading off: quantized weights cannot receive gradient updates.
# - **Precision.** `dtype=None` loads bf16 weights on Ampere or newer GPUs, fp16 on a T4, fp32 on a CPU. For full
#   fine-tuning Unsloth then trains fp16 models with fp32 weights (a T4 trains in fp32 with fp16 compute), but keeps
#   bf16 models in pure bf16 unless `float32_mixed_precision=True`. The next section shows why we set it.

# %%
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=recipe.model_name,          # HuggingFaceTB/SmolLM2-135M-Instruct (offline: the embedded copy)
    max_seq_length=recipe.max_seq_length,  # the model's context for this run (SFTConfig's max_length cuts rows)
    dtype=None,                            # None = by hardware: bf16 / fp16 (T4) / fp32 (CPU)
    load_in_4bit=False,                    # full fine-tuning trains the real weights: no quantization
    full_finetuning=True,                  # every parameter trainable (no LoRA adapters)
    float32_mixed_precision=recipe.float32_mixed_precision,  # fp32 master weights on bf16 GPUs (see below)
    use_gradient_checkpointing=trainers.checkpointing_mode(recipe),  # set here, not in the trainer (see below)
)
print(measurement.parameter_line(model))
print(f"weights stored as {next(model.parameters()).dtype}")
trainable, total = measurement.count_parameters(model)
assert trainable == total, "full fine-tuning: every parameter must be trainable"

# %% [markdown]
# ### Why fp32 master weights: an update that rounds away in bf16
# bf16 keeps 8 significant bits: around a weight of 0.02 the next representable bf16 number is about 0.0001 away.
# AdamW moves each weight by roughly the learning rate per step (its update is normalized). At full fine-tuning's
# learning rates that is far below the spacing, so in pure bf16 the weight does not change at all. Measured on this
# model's own weights (one attention matrix), for an update of exactly the learning rate:

# %%
weights = model.model.layers[0].self_attn.q_proj.weight.detach().float().flatten()[:200_000]
rows = []
for lr in (recipe.learning_rate, 2e-4, 1e-3):
    stuck_bf16 = ((weights + lr).to(torch.bfloat16) == weights.to(torch.bfloat16)).float().mean().item()
    stuck_fp32 = ((weights + lr) == weights).float().mean().item()
    rows.append({"update (learning rate)": f"{lr:g}", "unchanged in bf16": f"{stuck_bf16:.1%}",
                 "unchanged in fp32": f"{stuck_fp32:.1%}"})
pd.DataFrame(rows).set_index("update (learning rate)")

# %% [markdown]
# That is why full fine-tuning in pure bf16 barely trained in an earlier GPU run of this notebook (held-out answer
# loss 1.686 → 1.673, answers identical to the base model's). With `float32_mixed_precision=True` Unsloth keeps the
# weights in fp32 and computes in bf16, at twice the weight memory. LoRA (notebook 2) avoids the problem
# differently: its adapters are kept in fp32 while the frozen base stays 16-bit.

# %% [markdown]
# ## Data format
# [yahma/alpaca-cleaned](https://huggingface.co/datasets/yahma/alpaca-cleaned) has 52k rows of `instruction`,
# optional `input` and `output`. Without the Hub, the library generates rows of the same shape itself (arithmetic,
# unit conversion, string tasks, capitals, small Python functions, summaries), and says so. The line printed below
# names where the rows came from.

# %%
raw = data.load_alpaca(source=recipe.dataset, n_rows=recipe.n_train_rows + recipe.n_eval_rows, seed=recipe.seed)
raw.to_pandas().head(5)

# %% [markdown]
# **Held out.** `recipe.n_eval_rows` rows are set aside before anything trains: the model never sees them, so how
# well it predicts their answers after training measures what it learned, not what it memorized. We also remove
# from the training rows any row that repeats (exactly or nearly) one of the evaluation prompts: the three fixed
# prompts below and the held-out instructions.

# %%
train_rows, held_out_rows = data.held_out_split(raw, recipe.n_eval_rows, recipe.seed, fixed_prompts=SFT_PROMPTS)

# %% [markdown]
# The same row can be rendered in several **prompt formats**. What matters is that training and inference use the
# *same* one, and that every training example ends with the **end-of-sequence (EOS) token**: that is how the model
# learns to stop. Without it, a fine-tuned model rambles on until `max_new_tokens`.

# %%
row = train_rows[0]
for style in ("alpaca", "chatml", "llama3"):
    print(f"----- {style} " + "-" * 50)
    print(data.render_example(row, style))

# %% [markdown]
# We train with **ChatML**, SmolLM2-Instruct's own template (`<|im_start|>role … <|im_end|>`): the model was
# instruction-tuned with it, and `tokenizer.apply_chat_template` renders it at inference, so training and inference
# match. Alpaca's `### Response:` format would work too but would fight the model's habits; the Llama 3 tokens do not
# even exist in SmolLM2's vocabulary.
#
# Each row becomes a conversational **prompt / completion** pair. TRL's `SFTTrainer` renders it with the chat
# template and computes the loss on the completion only (the answer), not on the prompt we wrote ourselves.
#
# The answer ends with the EOS token `<|im_end|>`: learning to emit it is how the model learns to stop. On the Hub,
# SmolLM2 also *pads* with `<|im_end|>`. Unsloth replaces a pad token equal to EOS when it loads a model (from the Hub
# it prints that the pad token is "bad" and uses `<|endoftext|>`), for a reason worth knowing: a collator that masks
# padding **by token id**, like transformers' `DataCollatorForLanguageModeling` (`labels[labels == pad_token_id] =
# -100`), would also mask every real `<|im_end|>`, and the model would never learn to stop. TRL's collator, used
# here, pads the labels with -100 by *position*, so either pad trains correctly; the course uses `<|endoftext|>` on
# every backend, in the tokenizer and the model config alike (`models.fix_special_tokens`).

# %%
train_dataset = data.to_prompt_completion(train_rows)
held_out = data.to_prompt_completion(held_out_rows)
print("EOS token:", tokenizer.eos_token, "id", tokenizer.eos_token_id, "| pad token:", tokenizer.pad_token)
train_dataset[0]

# %% [markdown]
# ## Baseline: the model before training
# **Held-out answer loss**: for each held-out row, the chat template renders the question and the reference answer;
# the model scores every answer token given everything before it, and we average the negative log-likelihood over
# all answer tokens of all rows (the same quantity TRL trains on). Lower is better; `exp(loss)` is the perplexity,
# the number of equally likely tokens the model is "choosing between" on average. The interval is a 95% bootstrap
# interval over the held-out rows: with a few hundred rows, differences inside it are noise.

# %%
loss_before = evaluation.answer_loss(model, tokenizer, held_out, recipe.max_seq_length)
print(loss_before)

# %% [markdown]
# And the model's own answers (greedy decoding: deterministic for this model, precision and GPU) to the three fixed
# prompts and two held-out questions. The table flags answers that loop, stop at `max_new_tokens` or are empty.

# %%
answer_prompts = list(SFT_PROMPTS) + [row["prompt"] for row in held_out.select(range(min(2, len(held_out))))]
before = chat_details(model, tokenizer, answer_prompts, max_new_tokens=recipe.max_new_tokens)
for prompt, answer in zip(answer_prompts, before):
    print(f">>> {(prompt if isinstance(prompt, str) else prompt[-1]['content'])[:70]}\n{answer}\n")

# %% [markdown]
# ## Training configuration
# `trainers.sft_trainer` builds the trainer from the recipe: the same function builds it for
# `unsloth-course run full`, so the command line trains with exactly these settings. The table lists every argument
# the recipe sets, its value here and why. Two details:
# - `gradient_checkpointing` must agree with `use_gradient_checkpointing` at load: Unsloth restores the mode chosen
#   when the model was loaded, so the trainer argument alone switches nothing (the deep dive measures both modes).
# - bf16/fp16 are the mixed-precision flags for this hardware; for bf16 full fine-tuning without fp32 master weights
#   Unsloth switches both off (pure bf16, no autocast).

# %%
trainer = trainers.sft_trainer(recipe, model, tokenizer, train_dataset, output_dir="outputs/full",
                               callbacks=[plots.live_loss_callback()])
trainers.explain(trainer.args)

# %% [markdown]
# What the trainer actually sees: token ids and labels. Prompt positions carry the label -100, which the loss
# ignores, so only the answer tokens (and the closing `<|im_end|>` with its newline) are learned.

# %%
prompt_text, answer_text = data.split_trained_tokens(trainer.train_dataset[0], tokenizer)
print(f"prompt tokens (not trained): ...{prompt_text[-150:]!r}")
print(f"answer tokens (trained):     {answer_text!r}")

# %% [markdown]
# ## Training
# Watch the live loss curve: it falls quickly in the first steps (the model adapts to the answer style) and then
# flattens; each step sees different rows, so it is noisy. The summary reports time, tokens per second (prompt and
# answer tokens, padding excluded) and memory before and at peak.
#
# On real alpaca rows the summary may add `CHECK: loss is flat`: it compares the mean loss of the first and the last
# quarter of the steps, and this model was already instruction-tuned, so after the first few steps the training loss
# falls only a few percent, less than one batch's noise. That check cannot tell "learned a little" from "learned
# nothing"; the held-out loss below can (on an H200, this notebook's run: 1.788 -> 1.622 nats per answer token).

# %%
summary = training.train(trainer, recipe, technique="full")

# %%
plots.plot_loss(trainer.state.log_history, "Full fine-tuning: training loss");

# %% [markdown]
# ## Held-out evaluation: what training changed
# The same held-out rows, scored again. The difference is paired (same rows before and after), so its interval is
# narrower than either measurement's.

# %%
loss_after = evaluation.answer_loss(model, tokenizer, held_out, recipe.max_seq_length)
change = evaluation.compare_answer_loss(loss_before, loss_after)
print(change)
change.to_frame()

# %% [markdown]
# The answers, side by side. Read them: the loss says how well the model predicts good answers, not how well it
# writes its own. A 135M model often repeats itself; the flags point at that, and a one-token near-tie can turn a
# fluent answer into a loop (notebook 2 shows the same prompts with LoRA, but do not compare the two notebooks'
# answers token by token: full fine-tuning and LoRA run in different precisions and generation kernels, so even the
# untrained answers can differ at near-ties; compare their held-out losses instead).

# %%
after = chat_details(model, tokenizer, answer_prompts, max_new_tokens=recipe.max_new_tokens)
compare(answer_prompts, before, after)

# %% [markdown]
# ## Saving
# A full fine-tune is a complete model: save weights (safetensors) and tokenizer together, then reload the folder
# the way it was trained (`full_finetuning=True`, same precision) and check that it predicts like the trained model:
# the same next token at every position of the answers above (teacher forcing), which is what "the same model"
# means, and a greedy answer for comparison. Pushing to the Hub happens only when `HF_TOKEN` is set (environment
# variable, or Colab's *Secrets* panel); the token is never printed.

# %%
save_dir = "outputs/full/model"
model.save_pretrained(save_dir, safe_serialization=True)
tokenizer.save_pretrained(save_dir)
print(f"saved {measurement.folder_size_mb(save_dir):.0f} MB to {save_dir}")

reloaded, reloaded_tokenizer = FastLanguageModel.from_pretrained(
    model_name=save_dir, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False,
    full_finetuning=True, float32_mixed_precision=recipe.float32_mixed_precision)
texts = [tokenizer.apply_chat_template([{"role": "user", "content": p if isinstance(p, str) else p[-1]["content"]},
                                        {"role": "assistant", "content": str(a)}], tokenize=False)
         for p, a in zip(answer_prompts, after)]
agreement = evaluation.next_token_agreement(model, reloaded, tokenizer, texts)
print(f"reloaded vs trained: same next-token prediction at {agreement:.2%} of positions")
print("trained :", chat(model, tokenizer, SFT_PROMPTS[1], max_new_tokens=32))
print("reloaded:", chat(reloaded, reloaded_tokenizer, SFT_PROMPTS[1], max_new_tokens=32))
assert agreement >= 0.99, "the reloaded model must predict like the trained one"
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
# Full fine-tuning holds four things: the **weights**, one **gradient** per weight, the **optimizer state** and the
# **activations** saved for the backward pass. AdamW keeps two moments per weight: 8 bytes in fp32. 8-bit AdamW
# (bitsandbytes) stores them in 1 byte each with a scale per block, but transformers keeps embedding matrices in 32-bit
# state (and bitsandbytes small tensors): here the tied embedding is a fifth of the model, so the average is about
# 3.3 bytes per weight, not 2. Computed from this run's parameter count and precision:

# %%
bytes_weight = next(model.parameters()).element_size()
optim_name = getattr(trainer.args.optim, "value", trainer.args.optim)  # an enum in TrainingArguments
embedding = model.get_input_embeddings().weight.numel()
optimizer_bytes = embedding * 8 + (total - embedding) * 2 if "8bit" in optim_name else total * 8
memory_rows = {"weights": total * bytes_weight, "gradients": total * bytes_weight,
               f"optimizer ({optim_name})": optimizer_bytes}
for name, size in memory_rows.items():
    print(f"{name:28s} {size / 1e9:6.2f} GB")
print(f"{'sum of the three':28s} {sum(memory_rows.values()) / 1e9:6.2f} GB")
print(f"{'measured peak (' + summary['memory_device'] + ')':28s} {summary['memory_peak_gb']:6.2f} GB"
      "  <- includes activations, buffers and, on CPU, the Python process itself")

# %% [markdown]
# ### Gradient checkpointing, measured
# **Activations** grow with batch size x sequence length. Gradient checkpointing keeps only each layer's input and
# recomputes the rest during the backward pass: less memory for about a third more compute. Unsloth decides it when
# the model is loaded (`use_gradient_checkpointing`), so we load the model twice more and time one training step on
# the same batch, counting the bytes autograd saves for the backward pass (and, on a GPU, the step's peak memory):

# %%
batch = tokenizer([row["output"] for row in train_rows.select(range(recipe.per_device_train_batch_size))],
                  return_tensors="pt", padding="max_length", truncation=True, max_length=recipe.max_seq_length)
costs = {}
for mode in ("unsloth", False):
    probe_model, _ = FastLanguageModel.from_pretrained(
        model_name=recipe.model_name, max_seq_length=recipe.max_seq_length, dtype=None, load_in_4bit=False,
        full_finetuning=True, float32_mixed_precision=recipe.float32_mixed_precision,
        use_gradient_checkpointing=mode)
    input_ids = batch["input_ids"].to(model_device(probe_model))
    measurement.training_step_cost(probe_model, input_ids)  # a first step compiles kernels and warms the allocator
    costs[f"checkpointing {'on' if mode else 'off'}"] = measurement.training_step_cost(probe_model, input_ids)
    del probe_model
pd.DataFrame(costs).T.rename(columns={"seconds": "step time (s)",
                                      "saved_for_backward_mb": "saved for backward (MB)",
                                      "peak_step_memory_mb": "peak step memory (MB, GPU)"})

# %% [markdown]
# Read the memory columns first: with checkpointing on, autograd keeps a small fraction of the activations (on an H200
# in the full profile: 142 MB instead of 3,457 MB, and a step peak of 674 MB instead of 3,771 MB). The time column is
# one step each, not a benchmark: the recomputation costs time on a T4 or a CPU, but on a fast GPU and a model this
# small other costs can hide it (that H200 run timed 0.095 s with checkpointing and 0.134 s without). The saving in
# memory is what lets a bigger batch or longer rows fit; measure the time on your own GPU before trading it.

# %% [markdown]
# ## Pitfalls and best practices
# - **Learning rate.** Full fine-tuning wants ~1e-5 to 5e-5. LoRA's usual 2e-4 would wreck a fully trainable model
#   (loss spikes, repetitive output): the update touches every weight.
# - **Precision.** On a bf16 GPU, set `float32_mixed_precision=True` (or the loss stays flat, as measured above).
#   A T4 has no real bf16: `dtype=None` picks fp16 there, and Unsloth trains the full model in fp32 with fp16
#   compute, so weights, gradients and the saved checkpoint take 4 bytes per parameter.
# - **Catastrophic forgetting.** Every weight moves, so a long run on narrow data erodes general skills. Keep runs
#   short, mix in general data, or use LoRA.
# - **EOS and templates.** Train and infer with the same template; make sure each example ends with EOS. A model that
#   never stops talking was almost always trained without EOS.
# - **Evaluate on held-out rows.** Training loss falls on anything, including rows the model memorizes; only rows it
#   never saw tell you what it learned. Remove near-duplicates of your evaluation prompts from the training data.
# - **"r=0 means full fine-tuning"** is wrong for Unsloth: use `full_finetuning=True`.
# - **Memory.** On OOM: halve `per_device_train_batch_size` and double `gradient_accumulation_steps`, shorten
#   `max_seq_length`, keep gradient checkpointing (at load) and 8-bit AdamW on. The library prints these, with
#   values, when training runs out of memory.

# %% [markdown]
# ## Summary and exercises
# We fully fine-tuned a 135M model with fp32 master weights and measured the change on held-out rows; the run record
# below is what notebook 2 compares LoRA against.
#
# Exercises:
# 1. Load with `float32_mixed_precision=False` on a bf16 GPU and train again: compare the held-out answer loss.
# 2. Raise the learning rate to 2e-4 (`recipe = recipe.replace(learning_rate=2e-4)`) and watch the loss curve and
#    the answers. What breaks?
# 3. Load with `use_gradient_checkpointing=False` and `recipe.replace(gradient_checkpointing=False)`, and compare
#    the peak memory and tokens/s of the whole run with this one.
# 4. Point `DATASET` at a `.jsonl` file of your own rows (instruction, input, output) and run everything again.

# %%
record = records.write_run_record("full", {
    **summary, "recipe": recipe.to_dict(), "data": data.source_of(raw), "model": models.model_source(recipe.model_name),
    "checkpoint_mb": measurement.folder_size_mb(save_dir),
    "held_out": change,
    "answers": compare(answer_prompts, before, after).to_records()})
print(f"run record written to {record}")
print(measurement.format_summary(summary))
