"""Resumable runs: a LoRA run (4 steps, a checkpoint every 2) is interrupted by an exception right after
checkpoint-2 is written, then resumed; it ends at step 4 with the first run's history, and its model works."""

import json

import pytest
from transformers import TrainerCallback

from unsloth_course import trainers
from unsloth_course.cli import run as runner
from unsloth_course.cli.run import NoCheckpointError, checkpoints, latest_checkpoint, run, verify_checkpoint
from unsloth_course.recipes import get_recipe


class Interrupted(RuntimeError):
    pass


class CrashAfterCheckpoint(TrainerCallback):
    """Raise once the checkpoint of `step` is on disk: the process dies mid-run, as on a preemption."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise Interrupted(f"interrupted after checkpoint-{state.global_step}")


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_step_count(tmp_path):
    recipe = get_recipe("lora", "quick", max_steps=4, max_new_tokens=12, n_train_rows=16)
    out, records = tmp_path / "lora", tmp_path / "runs"
    with pytest.raises(Interrupted):
        run("lora", recipe, out, save_steps=2, callbacks=[CrashAfterCheckpoint(2)], runs_dir=records)
    assert [p.name for p in checkpoints(out)] == ["checkpoint-2"]
    assert not (out / "merged").exists() and not (records / "lora.json").exists()  # the run never finished
    files = {p.name for p in (out / "checkpoint-2").iterdir()}
    # weights in safetensors, no pickled weights; optimizer/scheduler/RNG state are torch files that
    # transformers reads back with weights_only=True (training_args.bin is never read on resume)
    assert {"adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "optimizer.pt"} <= files
    assert not {"adapter_model.bin", "pytorch_model.bin", "model.safetensors"} & files
    assert not [f for f in files if f.endswith(".bin") and f != "training_args.bin"]
    first_history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]

    counter = CountSteps()
    result = run("lora", recipe, out, resume=True, callbacks=[counter], runs_dir=records)
    assert (result["steps"], result["resumed_from_step"], result["global_step"]) == (2, 2, 4)  # this run's own
    assert result["resumed_from"] == str(out / "checkpoint-2")
    assert counter.steps == [3, 4]  # only the missing steps were trained
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())  # save_steps kept from ckpt
    assert state["global_step"] == 4 and state["max_steps"] == 4
    # the resumed history starts with the interrupted run's logged steps, unchanged
    losses = {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
    assert sorted(losses) == [1, 2, 3, 4]
    assert all(losses[e["step"]] == e["loss"] for e in first_history if "loss" in e)
    assert [step for step, _ in result["loss_curve"]] == [1, 2, 3, 4]
    record = json.loads((records / "lora.json").read_text())
    assert record["steps"] == 2 and record["global_step"] == 4 and record["resumed_from"].endswith("checkpoint-2")

    from unsloth_course import FastLanguageModel
    from unsloth_course.inference import chat

    model, tokenizer = FastLanguageModel.from_pretrained(model_name=str(out / "merged"), max_seq_length=256)
    answer = chat(model, tokenizer, "What is the capital of France?", max_new_tokens=16)
    assert isinstance(answer, str) and answer.strip()


def test_resume_without_checkpoint_fails_before_loading_a_model(tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(trainers.FastLanguageModel, "from_pretrained", no_loading)
    out = tmp_path / "lora"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "checkpoint-3").mkdir()  # incomplete: no trainer_state.json
    (out / "checkpoint-3" / "adapter_model.safetensors").write_bytes(b"partial")
    before = _snapshot(tmp_path)
    recipe = get_recipe("lora", "quick", max_steps=4, max_new_tokens=12, n_train_rows=16)
    with pytest.raises(NoCheckpointError, match="--save-steps"):
        run("lora", recipe, out, resume=True, runs_dir=tmp_path / "runs")
    with pytest.raises(NoCheckpointError, match="does not exist"):
        run("lora", recipe, tmp_path / "missing", resume=True, runs_dir=tmp_path / "runs")
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora"]


def test_cli_resume_without_checkpoint(tmp_path, capsys):
    from unsloth_course.cli import main

    out = tmp_path / "empty"
    assert main(["run", "lora", "--quick", "--resume", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "run: error: cannot resume" in err and "--save-steps" in err
    assert not out.exists()


def fake_checkpoint(folder, step, full=False):
    """A small but complete checkpoint-N as a save with save_only_model=False writes it."""
    import torch
    from safetensors.torch import save_file

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / ("config.json" if full else "adapter_config.json")).write_text("{}")
    save_file({"lora_A": torch.ones(4, 2), "lora_B": torch.zeros(2, 4)},
              str(path / ("model.safetensors" if full else "adapter_model.safetensors")))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"state": torch.arange(64.0)}, path / name)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return path


def test_latest_checkpoint_picks_the_highest_complete_step(tmp_path, capsys):
    for step in (2, 10, 4):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-12").mkdir()  # being written when the run died
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-10"
    assert "checkpoint-12 has no trainer_state.json (its save was interrupted): skipped" in capsys.readouterr().out
    assert verify_checkpoint(fake_checkpoint(tmp_path, 20, full=True)) is None


def _truncate(path, keep=40):
    path.write_bytes(path.read_bytes()[:keep])


def _nan_weights(path):
    import torch
    from safetensors.torch import save_file

    save_file({"lora_A": torch.tensor([[1.0, float("nan")]])}, str(path))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: _truncate(p / "adapter_model.safetensors"),
         "adapter_model.safetensors: unreadable (SafetensorError: Error while deserializing header"),
        (lambda p: _nan_weights(p / "adapter_model.safetensors"),
         "adapter_model.safetensors: tensor lora_A holds NaN/inf values"),
        (lambda p: (p / "adapter_model.safetensors").unlink(), "adapter_model.safetensors is missing"),
        (lambda p: (p / "optimizer.pt").unlink(), "optimizer.pt is missing (saved with save_only_model=True?"),
        (lambda p: _truncate(p / "optimizer.pt", 300), "optimizer.pt: not a complete torch.save archive"),
        (lambda p: _truncate(p / "rng_state.pth", 0), "rng_state.pth: not a complete torch.save archive"),
        (lambda p: (p / "scheduler.pt").unlink(), "scheduler.pt is missing"),
        (lambda p: (p / "trainer_state.json").write_text('{"global_step": 4, "log'),
         "trainer_state.json is missing or unreadable"),
        (lambda p: (p / "trainer_state.json").write_text('{"global_step": 3}'),
         "trainer_state.json says global_step=3, not 4"),
    ],
)
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_used(tmp_path, capsys, damage, reason):
    fake_checkpoint(tmp_path, 2)
    damage(fake_checkpoint(tmp_path, 4))
    assert reason in verify_checkpoint(tmp_path / "checkpoint-4")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / 'checkpoint-4'} is damaged: {reason}" in out
    assert "resuming from checkpoint-2 instead" in out


def test_no_complete_checkpoint_stops_before_loading_a_model(tmp_path, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(trainers.FastLanguageModel, "from_pretrained", no_loading)
    _truncate(fake_checkpoint(tmp_path, 2) / "adapter_model.safetensors")
    _nan_weights(fake_checkpoint(tmp_path, 4) / "adapter_model.safetensors")
    recipe = get_recipe("lora", "quick", max_steps=4, max_new_tokens=12, n_train_rows=16)
    with pytest.raises(NoCheckpointError) as error:
        run("lora", recipe, tmp_path, resume=True, runs_dir=tmp_path / "runs")
    message = str(error.value)
    assert message.startswith(f"cannot resume: no complete checkpoint in {tmp_path} (checkpoint-4: "
                              "adapter_model.safetensors: tensor lora_A holds NaN/inf values; checkpoint-2: "
                              "adapter_model.safetensors: unreadable (SafetensorError")
    from unsloth_course.cli import main

    assert main(["run", "lora", "--quick", "--resume", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "run: error: cannot resume: no complete checkpoint" in err and err.count("\n") == 1


@pytest.mark.slow
def test_resume_skips_a_damaged_newest_checkpoint_and_continues_exactly(tmp_path, capsys):
    """Interrupted after checkpoint-3, whose adapter file is then cut: the resumed run starts from checkpoint-2
    and its step-3 loss is the interrupted run's, exactly; its summary counts the 2 steps it trained."""
    recipe = get_recipe("lora", "quick", max_steps=4, max_new_tokens=12, n_train_rows=16)
    out, records = tmp_path / "lora", tmp_path / "runs"
    with pytest.raises(Interrupted):
        run("lora", recipe, out, save_steps=1, callbacks=[CrashAfterCheckpoint(3)], runs_dir=records,
            train_only=True)
    interrupted = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    _truncate(out / "checkpoint-3" / "adapter_model.safetensors", 1000)
    counter = CountSteps()
    result = run("lora", recipe, out, resume=True, callbacks=[counter], runs_dir=records, train_only=True)
    assert "checkpoint-3 is damaged: adapter_model.safetensors: unreadable" in capsys.readouterr().out
    assert result["resumed_from"] == str(out / "checkpoint-2") and counter.steps == [3, 4]
    assert (result["steps"], result["resumed_from_step"], result["global_step"]) == (2, 2, 4)
    losses = dict(result["loss_curve"])
    assert [e["loss"] for e in interrupted if e.get("step") == 3] == [pytest.approx(losses[3], abs=1e-5)]
    assert verify_checkpoint(out / "checkpoint-4") is None  # the resumed run's own checkpoint is complete


def test_save_steps_must_be_positive(tmp_path):
    recipe = get_recipe("lora", "quick")
    with pytest.raises(ValueError, match="save_steps"):
        run("lora", recipe, tmp_path, save_steps=0)
    with pytest.raises(ValueError, match="unknown technique"):
        run("sft", recipe, tmp_path)
    assert runner.RunOptions(save_steps=5).trainer_args() == {
        "save_strategy": "steps", "save_steps": 5, "save_total_limit": 2, "save_only_model": False}
    assert runner.RunOptions().trainer_args() == {}
