"""unsloth_course.measurement (parameters, loss checks, memory, summaries), plots, records (run records) and
unsloth_course.evaluation (perplexity, log-probabilities, preference and math accuracy)."""

import copy
import json
import math
import os
import random
from pathlib import Path
from types import SimpleNamespace

from unsloth_course.backend import FastLanguageModel

import matplotlib.pyplot as plt
import pytest
import torch

from unsloth_course import measurement, plots, records, settings
from unsloth_course.evaluation import completion_logprob, perplexity

SMOLLM2_PARAMETERS = 134_515_008


# ---------------------------------------------------------------- parameters
def test_count_parameters_counts_tied_weights_once(tiny_model):
    model, _ = tiny_model
    assert measurement.count_parameters(model) == (SMOLLM2_PARAMETERS, SMOLLM2_PARAMETERS)
    with_duplicates = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert with_duplicates == SMOLLM2_PARAMETERS + model.get_input_embeddings().weight.numel()
    assert measurement.parameter_line(model) == (
        f"trainable parameters: {SMOLLM2_PARAMETERS:,} of {SMOLLM2_PARAMETERS:,} (100.00%)")


def test_count_parameters_of_a_partly_frozen_module():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2, bias=False))
    module[0].requires_grad_(False)
    assert measurement.count_parameters(module) == (8, 24)


def test_lora_parameter_count_matches_peft(tiny_model):
    model, _ = tiny_model
    expected = measurement.lora_parameter_count(model, 8, ["q_proj", "v_proj"])
    assert expected == 30 * 8 * ((576 + 576) + (576 + 192))
    lora = FastLanguageModel.get_peft_model(copy.deepcopy(model), r=8, target_modules=["q_proj", "v_proj"])
    assert measurement.count_parameters(lora)[0] == expected


# ---------------------------------------------------------------- loss checks
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([2.0, 2.1, 2.3, 2.5], "loss rose (2.000 -> 2.500)"),
        ([2.0, 2.0, 2.01, 2.0], "loss is flat (2.000 -> 2.000, mean of the first and last quarter"),
        ([2.0, 1.9, 1.8, float("nan")], "loss is NaN/inf"),
        ([2.0, 1.9, 1.8, float("inf")], "loss is NaN/inf"),
        ([2.5, 2.2, 1.9, 1.6, 1.5, 1.4, 1.3, 1.2], None),
        ([2.0, 3.0, 4.0], None),  # too few points to judge
        ([], None),
    ],
)
def test_loss_trend_check(values, expected):
    result = measurement.loss_trend_check(values)
    if expected is None:
        assert result is None
    else:
        assert result.startswith(expected)


def test_losses_reads_logged_steps():
    history = [{"step": 1, "loss": 2.0}, {"step": 2, "grad_norm": 1.0}, {"step": 3, "loss": 1.5}, {"loss": 9.0}]
    assert measurement.losses(history) == [(1, 2.0), (3, 1.5)]


# ---------------------------------------------------------------- memory
def test_memory_snapshot_on_cpu():
    snapshot = measurement.memory_snapshot()
    assert snapshot.device == "cpu"
    assert 0 < snapshot.current_gb <= snapshot.peak_gb * 1.01
    assert snapshot.total_gb > snapshot.current_gb


def test_memory_report():
    start = measurement.MemorySnapshot("cpu", 1.0, 1.5, 16.0)
    end = measurement.MemorySnapshot("cpu", 1.2, 2.25, 16.0)
    assert measurement.memory_report(start, end) == (
        "process memory (RSS): start 1.00 GB, peak 2.25 GB of 16.0 GB, training added +1.25 GB")
    gpu = measurement.MemorySnapshot("cuda", 3.0, 4.0, None)
    assert measurement.memory_report(start, gpu).startswith("GPU memory reserved: start 1.00 GB, peak 4.00 GB,")


# ---------------------------------------------------------------- training summary
def fake_trainer(tokens_seen=600, log_history=None):
    history = log_history or [{"step": s, "loss": v} for s, v in [(1, 2.0), (2, 1.8), (3, 1.5), (4, 1.2)]]
    state = SimpleNamespace(log_history=history, global_step=4, num_input_tokens_seen=tokens_seen)
    model = torch.nn.Linear(10, 10)  # 110 parameters
    model.bias.requires_grad_(False)
    return SimpleNamespace(state=state, model=model)


def test_training_summary_and_format():
    output = SimpleNamespace(metrics={"train_runtime": 3.0, "train_samples_per_second": 2.6667})
    start = measurement.MemorySnapshot("cpu", 1.0, 1.0, 8.0)
    end = measurement.MemorySnapshot("cpu", 1.1, 1.5, 8.0)
    summary = measurement.training_summary(fake_trainer(), output, start, end, "lora", profile="quick")
    assert summary["tokens_per_s"] == 200.0
    assert (summary["steps"], summary["tokens"], summary["runtime_s"]) == (4, 600, 3.0)
    assert (summary["first_loss"], summary["last_loss"], summary["loss_check"]) == (2.0, 1.2, None)
    assert (summary["trainable_params"], summary["total_params"]) == (100, 110)
    assert summary["trainable_pct"] == pytest.approx(90.909, abs=1e-3)
    assert summary["loss_curve"] == [[1, 2.0], [2, 1.8], [3, 1.5], [4, 1.2]]
    assert summary["profile"] == "quick" and summary["memory_peak_gb"] == 1.5
    text = measurement.format_summary(summary)
    assert "time        : 3.0 s for 4 steps" in text
    assert "2.667 samples/s, 200 tokens/s (non-padding)" in text
    assert "loss        : 2.0 -> 1.2" in text
    assert "100 trainable of 110 (90.909%)" in text
    assert "CHECK" not in text


def test_training_summary_tokens_from_the_log_and_a_loss_check():
    history = [{"step": s, "loss": 2.0, "num_tokens": 100.0 * s} for s in range(1, 5)]
    output = SimpleNamespace(metrics={"train_runtime": 2.0})
    snapshot = measurement.MemorySnapshot("cpu", 1.0, 1.0, None)
    summary = measurement.training_summary(fake_trainer(0, history), output, snapshot, snapshot, "dpo")
    assert (summary["tokens"], summary["tokens_per_s"]) == (400, 200.0)
    assert summary["loss_check"].startswith("loss is flat")
    assert "CHECK       : loss is flat" in measurement.format_summary(summary)
    no_runtime = measurement.training_summary(fake_trainer(0, history), SimpleNamespace(metrics={}), snapshot,
                                          snapshot, "grpo")
    assert no_runtime["tokens_per_s"] is None
    assert "tokens/s" not in measurement.format_summary(no_runtime)


def test_a_non_finite_loss_is_never_summarized_as_a_number():
    history = [{"step": 1, "loss": 1.7528, "grad_norm": 2.0}, {"step": 2, "loss": 1.5, "grad_norm": math.nan},
               {"step": 3, "loss": math.nan, "grad_norm": math.nan}]
    snapshot = measurement.MemorySnapshot("cpu", 1.0, 1.0, None)
    summary = measurement.training_summary(fake_trainer(600, history), SimpleNamespace(metrics={}), snapshot,
                                           snapshot, "lora")
    assert (summary["first_loss"], summary["last_loss"]) == (1.7528, None)
    assert summary["loss_curve"] == [[1, 1.7528], [2, 1.5]]  # plots and tables get numbers only
    assert summary["non_finite"] == [[2, "grad_norm", "nan"], [3, "loss", "nan"], [3, "grad_norm", "nan"]]
    assert summary["loss_check"].startswith("not finite: grad_norm nan at step 2, loss nan at step 3")
    text = measurement.format_summary(summary)
    assert "loss        : 1.7528 -> n/a" in text and "CHECK       : not finite" in text
    json.dumps(summary, allow_nan=False)  # a strict JSON run record: no NaN anywhere


def test_a_resumed_run_counts_only_what_it_trained():
    """Resumed at step 2 of 4 (300 tokens seen before): 2 steps, 300 tokens, half the samples transformers
    reports (it counts max_steps' samples); the curve keeps the whole history."""
    trainer = fake_trainer(600)
    trainer.state.max_steps = 4
    output = SimpleNamespace(metrics={"train_runtime": 3.0, "train_samples_per_second": 2.6667})
    snapshot = measurement.MemorySnapshot("cpu", 1.0, 1.0, None)
    summary = measurement.training_summary(trainer, output, snapshot, snapshot, "lora", start_step=2,
                                           start_tokens=300)
    assert (summary["steps"], summary["tokens"], summary["tokens_per_s"]) == (2, 300, 100.0)
    assert (summary["resumed_from_step"], summary["global_step"]) == (2, 4)
    assert summary["samples_per_s"] == pytest.approx(1.333, abs=1e-3)
    assert (summary["first_loss"], summary["last_loss"]) == (1.5, 1.2)  # this run's steps 3-4
    assert summary["loss_curve"] == [[1, 2.0], [2, 1.8], [3, 1.5], [4, 1.2]]
    assert "3.0 s for 2 steps (resumed at step 2, now at step 4)" in measurement.format_summary(summary)
    history = [{"step": s, "loss": 2.0, "num_tokens": 100.0 * s} for s in range(1, 5)]  # GRPO/DPO: logged tokens
    logged = measurement.training_summary(fake_trainer(0, history), output, snapshot, snapshot, "grpo",
                                          start_step=3)
    assert (logged["steps"], logged["tokens"]) == (1, 100)
    fresh = measurement.training_summary(fake_trainer(600), output, snapshot, snapshot, "lora")
    assert "resumed_from_step" not in fresh and fresh["steps"] == 4 and fresh["tokens"] == 600


# ---------------------------------------------------------------- plots and live callback
def test_plot_metrics_one_line_per_key():
    history = [{"step": s, "loss": 2.0 / s, "reward": 0.1 * s} for s in range(1, 6)] + [{"step": 6, "kl": 0.1}]
    fig = plots.plot_metrics(history, ("loss", "reward", "missing"), title="t")
    try:
        (ax,) = fig.axes
        assert [line.get_label() for line in ax.lines] == ["loss", "reward"]
        assert list(ax.lines[0].get_xdata()) == [1, 2, 3, 4, 5]
        assert ax.get_title() == "t" and ax.get_legend() is not None
    finally:
        plt.close(fig)
    fig = plots.plot_loss(history)
    assert len(fig.axes[0].lines) == 1
    plt.close(fig)


def test_live_loss_callback_is_a_no_op_outside_ipython():
    callback = plots.live_loss_callback()
    figures = plt.get_fignums()
    state = SimpleNamespace(log_history=[{"step": 1, "loss": 1.0}], global_step=1, max_steps=2)
    assert callback.on_log(None, state, None, logs={"loss": 1.0}) is None
    assert callback.handle is None and callback.last_draw == 0.0
    callback.on_train_end(None, state, None)
    assert callback.handle is None
    assert plt.get_fignums() == figures


# ---------------------------------------------------------------- run records
def test_runs_dir_is_the_test_folder(runs_dir):
    assert settings.runs_dir() == Path(runs_dir) == Path(os.environ["UNSLOTH_COURSE_RUNS"])
    assert Path(runs_dir).resolve() != Path("runs").resolve()


def test_run_record_round_trip(tmp_path):
    path = records.write_run_record("lora", {"steps": 2, "loss_curve": [[1, 2.0]], "where": tmp_path},
                                    runs_dir=tmp_path / "runs")
    assert path == tmp_path / "runs" / "lora.json"
    records.write_run_record("dpo", {"steps": 3}, runs_dir=tmp_path / "runs")
    saved = records.read_run_records(tmp_path / "runs")
    assert sorted(saved) == ["dpo", "lora"]
    lora = saved["lora"]
    assert (lora["technique"], lora["steps"], lora["loss_curve"]) == ("lora", 2, [[1, 2.0]])
    assert lora["where"] == str(tmp_path)  # default=str for values JSON cannot hold
    assert lora["backend"]["backend"] == "plain" and lora["backend"]["versions"]["transformers"] == "5.17.0"
    assert json.loads(path.read_text()) == lora
    assert records.read_run_records(tmp_path / "nothing") == {}


def test_folder_size_mb(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"0" * 1_500_000)
    (tmp_path / "y.bin").write_bytes(b"0" * 500_000)
    assert measurement.folder_size_mb(tmp_path) == pytest.approx(2.0)


# ---------------------------------------------------------------- evaluation
def test_perplexity_prefers_natural_text(tiny_model):
    model, tokenizer = tiny_model
    rng = random.Random(0)
    noise = tokenizer.decode([rng.randrange(100, 49000) for _ in range(20)])
    natural = perplexity(model, tokenizer, ["The cat sat on the mat and looked out of the window at the birds."])
    assert math.isfinite(natural) and 1 < natural < 200
    assert perplexity(model, tokenizer, [noise]) > 10 * natural
    texts = ["Hello there, my friend.", "The sun rises in the east every day, and sets in the west."]
    padded = perplexity(model, tokenizer, texts, batch_size=2)
    assert padded == pytest.approx(perplexity(model, tokenizer, texts, batch_size=1), rel=1e-4)  # pads excluded
    with pytest.raises(ValueError, match="at least one text"):
        perplexity(model, tokenizer, [])


def test_completion_logprob_prefers_the_right_capital(tiny_model):
    model, tokenizer = tiny_model
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    paris = completion_logprob(model, tokenizer, prompt, "Paris.")
    assert paris < 0
    assert paris > completion_logprob(model, tokenizer, prompt, "Berlin.")


def test_batched_completion_logprobs_match_one_at_a_time(tiny_model):
    from unsloth_course.evaluation import completion_logprob, completion_logprobs

    model, tokenizer = tiny_model
    items = [("Question: 2+2?\\nAnswer:", " 4"), ("Q:", " a much longer completion with several tokens"),
             ("The capital of France is", " Paris.")]
    batched = completion_logprobs(model, tokenizer, items, batch_size=2)
    single = [completion_logprob(model, tokenizer, p, c) for p, c in items]
    assert batched == pytest.approx(single, abs=1e-4)
    assert all(score < 0 for score in batched)


def test_no_loss_trend_check_for_grpo():
    history = [{"step": i, "loss": value} for i, value in enumerate([-0.3, -0.2, -0.1, 0.0, 0.05, 0.1], 1)]
    trainer = SimpleNamespace(state=SimpleNamespace(log_history=history, global_step=6, num_input_tokens_seen=0),
                              model=torch.nn.Linear(2, 2))
    output = SimpleNamespace(metrics={"train_runtime": 1.0})
    snap = measurement.memory_snapshot()
    assert measurement.training_summary(trainer, output, snap, snap, "grpo")["loss_check"] is None
    assert measurement.training_summary(trainer, output, snap, snap, "lora")["loss_check"].startswith("loss rose")


def test_reward_trend_means_over_the_first_and_last_quarter():
    history = [{"step": i, "reward": r} for i, r in enumerate([0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0], 1)]
    assert measurement.reward_trend(history + [{"loss": 0.1}]) == (2, 0.5, 3.5)
    assert measurement.reward_trend([{"step": 1, "reward": 0.7}]) == (1, 0.7, 0.7)
    assert measurement.reward_trend([{"loss": 1.0}]) is None
