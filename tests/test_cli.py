"""unsloth_course.cli: argument checks, `info`, and one end-to-end quick LoRA run."""

import json
from pathlib import Path

import pytest

from unsloth_course.cli import build_parser, main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "sft"], "invalid choice: 'sft'"),
        (["run", "lora", "--max-steps", "0"], "argument --max-steps: '0' is not a positive integer (must be >= 1)"),
        (["run", "lora", "--max-steps", "-3"], "argument --max-steps: '-3' is not a positive integer"),
        (["run", "lora", "--max-steps", "abc"], "argument --max-steps: 'abc' is not a positive integer"),
        (["run", "lora", "--save-steps", "1.5"], "argument --save-steps: '1.5' is not a positive integer"),
        (["bench", "lora", "--timeout", "x"], "argument --timeout: 'x' is not a positive integer"),
        (["plan", "--seq-len", "x"], "argument --seq-len: 'x' is not a positive integer"),
        ([], "the following arguments are required: command"),
    ],
)
def test_parser_rejects(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        build_parser().parse_args(argv)
    assert error.value.code == 2
    assert message in capsys.readouterr().err
    assert "_positive_int" not in capsys.readouterr().err  # no internal function name


def _no_model_loading(monkeypatch):
    from unsloth_course import trainers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(trainers.FastLanguageModel, "from_pretrained", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "./no/such/model"], "model_name='./no/such/model': no such folder"),
        (["--model", "outputs/missing/merged"], "model_name='outputs/missing/merged': no such folder"),
        (["--model", "not a repo"], "is neither an existing folder nor a Hub repo id"),
        (["--set", "optim=bogus"], "optim='bogus' is not an optimizer transformers knows (OptimizerNames); "
                                   "allowed: adamw_torch,"),
        (["--set", "optim=galore_adamw"], "optim='galore_adamw' needs optim_target_modules"),
        (["--set", "lr_scheduler_type=cosine_with_min_lr"], "needs min_lr in lr_scheduler_kwargs"),
        (["--set", "lr_scheduler_type=wavy"], "lr_scheduler_type='wavy' is not a learning-rate schedule"),
        (["--set", "target_modules=[]"], "target_modules is empty"),
        (["--set", "target_modules=['q_proj', 'qproj']"], "unknown module(s) 'qproj'; expected a list of q_proj"),
        (["--set", "target_modules=q_proj"], "target_modules='q_proj' is not allowed; expected a list of"),
        (["--set", "learning_rate=fast"], "learning_rate='fast' must be a number"),
        (["--set", "packing=yes"], "packing='yes' must be True or False"),
        (["--set", "attn_implementation=fast"], "attn_implementation='fast' is not supported"),
    ],
)
def test_bad_values_are_one_line_errors_before_any_model_loads(argv, message, monkeypatch, capsys):
    _no_model_loading(monkeypatch)
    assert main(["run", "lora", "--quick", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unsloth-course run: error: lora recipe: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_repo_id_that_cannot_load_offline_fails_before_loading(monkeypatch, tmp_path, capsys):
    _no_model_loading(monkeypatch)
    out = tmp_path / "out"
    assert main(["run", "lora", "--quick", "--model", "someone/not-downloaded", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot load model someone/not-downloaded: HF_HUB_OFFLINE=1 and someone/not-downloaded is not in the " \
        "Hugging Face cache" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main(["pipeline", "lora", "--quick", "--model", "./gone", "--output-dir", str(out)]) == 2
    assert "model_name='./gone': no such folder" in capsys.readouterr().err


def test_an_output_folder_that_is_a_file_fails_before_loading(monkeypatch, tmp_path, capsys):
    _no_model_loading(monkeypatch)
    (tmp_path / "taken").write_text("a file")
    assert main(["run", "lora", "--quick", "--output-dir", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert f"run: error: output folder {str(tmp_path / 'taken')!r} is a file" in err and err.count("\n") == 1


def test_a_non_finite_loss_is_a_one_line_error(monkeypatch, capsys):
    from unsloth_course.cli import run as runner
    from unsloth_course.training import NonFiniteTrainingError

    def diverge(*args, **kwargs):
        raise NonFiniteTrainingError(7, "loss", float("nan"), "fp16", 2e-4)

    monkeypatch.setattr(runner, "run", diverge)
    assert main(["run", "lora", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unsloth-course run: error: training stopped at step 7: the loss is nan (fp16); "
                          "likely an fp16 overflow")
    assert "learning_rate=5e-05 (now 0.0002)" in err and "bf16 GPU" in err and err.count("\n") == 1


def test_parser_accepts_a_run():
    args = build_parser().parse_args(["run", "dpo", "--quick", "--max-steps", "3", "--output-dir", "x"])
    assert (args.command, args.technique, args.quick, args.max_steps, args.output_dir, args.model) == (
        "run", "dpo", True, 3, "x", None)


def test_info_prints_the_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backend : plain (")
    assert "dtype   : float32" in out and "transformers 5.17.0" in out


@pytest.mark.slow
def test_run_lora_quick_end_to_end(tmp_path, runs_dir, capsys):
    out_dir = tmp_path / "lora"
    assert main(["run", "lora", "--quick", "--max-steps", "2", "--output-dir", str(out_dir)]) == 0
    stdout = capsys.readouterr().out
    assert "backend : plain" in stdout and "technique lora, profile quick" in stdout
    assert "--- before training:" in stdout and "--- after training:" in stdout

    record_path = Path(runs_dir) / "lora.json"
    assert f"run record: {record_path}" in stdout
    record = json.loads(record_path.read_text())
    assert (record["technique"], record["profile"], record["steps"]) == ("lora", "quick", 2)
    assert record["recipe"]["max_steps"] == 2 and record["output_dir"] == str(out_dir)
    assert record["tokens_per_s"] > 0 and record["trainable_pct"] == pytest.approx(3.50, abs=0.05)
    assert len(record["answers"]) == 5 and all(row["after training"] for row in record["answers"])  # 3 fixed + 2
    held_out = record["held_out"]  # the held-out answer loss before and after, paired
    assert held_out["before"]["rows"] == held_out["after"]["rows"] == 8 and held_out["loss_change_ci"]
    assert record["data"]["kind"] == "generated" and record["model"]["kind"] == "embedded gguf"

    assert (out_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (out_dir / "adapter" / "tokenizer_config.json").is_file()
    assert (out_dir / "merged" / "model.safetensors").is_file()
    assert (out_dir / "merged" / "config.json").is_file()
    assert 0 < record["adapter_mb"] < record["merged_mb"]


@pytest.mark.slow
@pytest.mark.parametrize("technique", ["dpo", "grpo", "cpt"])
def test_train_only_runs_train_and_skip_evaluation_and_saving(technique, tmp_path, runs_dir, capsys):
    out_dir = tmp_path / technique
    argv = ["run", technique, "--quick", "--max-steps", "1", "--output-dir", str(out_dir), "--train-only"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "train only (no answers, evaluation or saving)" in stdout and "--- before training:" not in stdout
    record = json.loads((Path(runs_dir) / f"{technique}.json").read_text())
    assert record["train_only"] is True and record["steps"] == 1 and record["loss_curve"]
    skipped = {"dpo": "preference_before", "grpo": "eval_before", "cpt": "perplexity_before"}[technique]
    assert skipped not in record and "answers" not in record and "adapter_mb" not in record
    assert not (out_dir / "adapter").exists() and not (out_dir / "warmup").exists()
    if technique == "grpo":
        assert record["generated_tokens_per_s"] > 0  # the generation split is still measured


def test_throughput_profile_on_a_cpu_says_it_is_for_a_big_gpu(monkeypatch, capsys):
    from unsloth_course.cli import run as runner

    seen = {}
    monkeypatch.setattr(runner, "run", lambda technique, recipe, *args, **kwargs: seen.update(recipe=recipe))
    assert main(["run", "lora", "--profile", "throughput", "--max-steps", "1"]) == 0
    assert seen["recipe"].profile == "throughput" and seen["recipe"].max_steps == 1
    assert "sized for a big GPU (micro-batch 32 x 2048 tokens)" in capsys.readouterr().out  # the LoRA profile


def test_load_in_4bit_reaches_the_recipe_and_full_fine_tuning_refuses_it(monkeypatch, capsys):
    from unsloth_course.cli import run as runner

    seen = {}
    monkeypatch.setattr(runner, "run", lambda technique, recipe, *args, **kwargs: seen.update(recipe=recipe))
    assert main(["run", "lora", "--quick", "--load-in-4bit", "--model", "Qwen/Qwen2.5-1.5B-Instruct"]) == 0
    assert seen["recipe"].load_in_4bit and seen["recipe"].model_name == "Qwen/Qwen2.5-1.5B-Instruct"
    seen.clear()
    assert main(["run", "full", "--quick", "--load-in-4bit"]) == 2
    assert not seen and "load_in_4bit=True cannot be fully fine-tuned" in capsys.readouterr().err


def test_set_changes_recipe_fields_and_refuses_unknown_ones(monkeypatch, capsys):
    from unsloth_course.cli import run as runner

    seen = {}
    monkeypatch.setattr(runner, "run", lambda technique, recipe, *args, **kwargs: seen.update(recipe=recipe))
    assert main(["run", "lora", "--quick", "--set", "per_device_train_batch_size=3", "--set", "packing=True"]) == 0
    assert seen["recipe"].per_device_train_batch_size == 3 and seen["recipe"].packing is True
    seen.clear()
    assert main(["run", "lora", "--quick", "--set", "lora_rank=8"]) == 2
    assert not seen and "--set lora_rank: not a field of the lora recipe" in capsys.readouterr().err


def test_bench_checks_set_before_starting_any_child(monkeypatch, capsys):
    from unsloth_course.cli import bench

    monkeypatch.setattr(bench, "run_backend", lambda *args, **kwargs: pytest.fail("a child was started"))
    assert main(["bench", "lora", "--profile", "quick", "--set", "lora_dropout=2"]) == 2
    assert "lora_dropout=2 is out of range" in capsys.readouterr().err
    assert main(["bench", "lora", "--profile", "quick", "--backends", "unsloth"]) == 2
    assert "backend unsloth cannot run here" in capsys.readouterr().err


def test_bench_passes_set_to_every_backend(monkeypatch, capsys):
    from unsloth_course.cli import bench

    calls = []

    def fake_backend(technique, backend, profile, steps, workdir, torch_profile=None, timeout=None, overrides=()):
        calls.append((backend, list(overrides)))
        return {"steps": 1, "runtime_s": 1.0, "tokens_per_s": 5.0, "memory_peak_gb": 1.0, "memory_device": "cpu",
                "loss_curve": [[1, 2.0]]}

    monkeypatch.setattr(bench, "run_backend", fake_backend)
    assert main(["bench", "lora", "--profile", "quick", "--set", "packing=True"]) == 0
    assert calls == [("plain", ["packing=True"])]
    assert "recipe changes: packing=True" in capsys.readouterr().out
