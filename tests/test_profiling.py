"""Generation timing and the torch-profiler window, on CPU without a trainer."""

import types

import pytest
import torch

from unsloth_course.cli.profiling import (
    GenerationTimer,
    TorchProfileCallback,
    format_generation_split,
    profile_callback_from_env,
)


class FakeGRPOTrainer:
    def _generate(self, prompts):
        completions = [[1, 2, 3]] * len(prompts)
        return [[0]] * len(prompts), completions, None


def test_generation_timer_counts_completion_tokens_and_time():
    trainer = FakeGRPOTrainer()
    timer = GenerationTimer()
    assert timer.attach(trainer)
    prompt_ids, completions, _ = trainer._generate(["a", "b"])  # the wrapped method returns the same output
    trainer._generate(["c"])
    assert completions == [[1, 2, 3]] * 2 and timer.calls == 2 and timer.tokens == 9
    summary = timer.summary(train_runtime_s=timer.seconds * 4)
    assert summary["generated_tokens"] == 9 and summary["generation_share"] == pytest.approx(0.25, abs=0.01)
    assert "9 completion tokens" in format_generation_split(summary)


def test_generation_timer_on_a_trainer_without_generate():
    timer = GenerationTimer()
    assert not timer.attach(object())
    assert timer.summary(10.0) == {}
    assert "not measured" in format_generation_split({})


def test_torch_profile_callback_records_the_window(capsys):
    callback = TorchProfileCallback(start_step=1, steps=1, top=5)
    state = types.SimpleNamespace(global_step=0, is_world_process_zero=True)
    callback.on_step_begin(None, state, None)
    assert callback.profiler is None  # not yet at the start step
    state.global_step = 1
    callback.on_step_begin(None, state, None)
    torch.randn(64, 64) @ torch.randn(64, 64)
    state.global_step = 2
    callback.on_step_end(None, state, None)
    assert "aten::" in callback.table
    assert "torch.profiler: steps 2-2" in capsys.readouterr().out


def test_profile_callback_from_env(monkeypatch):
    monkeypatch.delenv("UNSLOTH_COURSE_TORCH_PROFILE", raising=False)
    assert profile_callback_from_env() is None
    monkeypatch.setenv("UNSLOTH_COURSE_TORCH_PROFILE", "3")
    assert profile_callback_from_env().steps == 3
    monkeypatch.setenv("UNSLOTH_COURSE_TORCH_PROFILE", "two")
    with pytest.raises(ValueError, match="UNSLOTH_COURSE_TORCH_PROFILE"):
        profile_callback_from_env()


def test_step_clock_median_skips_the_first_steps():
    from unsloth_course.measurement import StepClock

    clock = StepClock(skip_steps=2)
    # step 1 is slow (compilation), then 0.5 s and 1,000 tokens per step, with one slow step (profiled)
    for step, seconds, tokens in [(1, 10.0, 1000), (2, 10.5, 2000), (3, 11.0, 3000), (4, 11.5, 4000),
                                  (5, 14.0, 5000), (6, 14.5, 6000), (7, 15.0, 7000)]:
        clock.marks.append((step, seconds, tokens))
    summary = clock.summary()
    assert summary["step_time_median_s"] == 0.5 and summary["steady_tokens_per_s"] == 2000.0
    assert summary["steady_steps"] == 4
    assert StepClock().summary() == {}


def test_torch_profile_window_moves_to_the_last_steps_of_a_short_run():
    callback = TorchProfileCallback(start_step=3, steps=1)
    callback.on_train_begin(None, types.SimpleNamespace(max_steps=3), None)
    assert callback.start_step == 2
    long_run = TorchProfileCallback(start_step=3, steps=2)
    long_run.on_train_begin(None, types.SimpleNamespace(max_steps=20), None)
    assert long_run.start_step == 3
