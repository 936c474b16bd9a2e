"""The benchmark on CPU: plain backend only (and it says why), tiny settings, output checked (not speed)."""

import json

import pytest

from unsloth_course.cli import bench
from unsloth_course.recipes import get_recipe


def test_available_backends_on_cpu():
    backends, note = bench.available_backends()
    assert backends == ["plain"] and "no CUDA GPU" in note


def test_format_table_with_both_backends():
    curve = [[1, 2.0], [2, 1.5], [3, 1.2]]
    row = {"steps": 3, "step_time_s": 0.5, "tokens_per_s": 1000.0, "peak_memory_gb": 2.0,
           "memory_device": "cuda", "loss_curve": curve, "backend_reason": "x"}
    table = bench.format_table("lora", {"unsloth": {**row, "tokens_per_s": 1500.0, "peak_memory_gb": 1.0},
                                        "plain": row}, "both")
    assert "loss @1 | loss @2 | loss @3" in table
    assert "Unsloth / plain tokens/s: 1.50x; peak memory: 0.50x" in table


@pytest.mark.slow
def test_bench_lora_quick_on_cpu(tmp_path, capsys):
    report = bench.bench("lora", "quick", steps=2, json_path=str(tmp_path / "bench.json"),
                         workdir=str(tmp_path / "work"))
    out = capsys.readouterr().out
    assert "bench lora: no CUDA GPU" in out and "plain |" in out
    saved = json.loads((tmp_path / "bench.json").read_text())
    plain = saved["results"]["plain"]
    assert list(saved["results"]) == ["plain"] and report["results"] == saved["results"]
    assert plain["steps"] == 2 and plain["step_time_s"] > 0 and plain["tokens_per_s"] > 0
    assert [step for step, _ in plain["loss_curve"]] == [1, 2]
    record = json.loads((tmp_path / "work" / "runs-plain" / "lora.json").read_text())
    assert record["train_only"] is True and "answers" not in record  # the bench times training alone
    assert not (tmp_path / "work" / "out-plain" / "adapter").exists()


def test_format_table_reports_a_failed_backend_and_keeps_the_other():
    row = {"steps": 2, "step_time_s": 0.5, "tokens_per_s": 900.0, "peak_memory_gb": 3.0, "memory_device": "cuda",
           "loss_curve": [[1, 2.0], [2, 1.9]], "backend_reason": "x", "generated_tokens_per_s": 1234.0,
           "generation_share": 0.8, "generated_tokens_per_step_s": 1100.0, "generated_tokens_per_run_s": 987.0}
    table = bench.format_table("grpo", {"unsloth": row, "plain": {"error": "CUDA out of memory"}}, "both")
    assert ("generated tokens/s (while generating) | generated tokens/s (steady step) | "
            "generated tokens/s (whole run)") in table
    assert "unsloth | 0.500 | 900 | 3.00 (cuda) | 1,234 | 1,100 | 987 | 80%" in table
    assert "plain | failed: CUDA out of memory" in table
    assert "Unsloth / plain" not in table  # no ratio against a failed run


def test_error_line_names_out_of_memory():
    assert bench._error_line(RuntimeError("...\ntorch.OutOfMemoryError: CUDA out of memory. Tried")) == \
        "CUDA out of memory"
    assert bench._error_line(RuntimeError("first\nValueError: bad value\n")) == "ValueError: bad value"


def test_a_backend_run_past_its_timeout_is_killed_and_named(tmp_path):
    with pytest.raises(RuntimeError, match="every backend failed: plain: plain run timed out after 1 s"):
        bench.bench("lora", "quick", steps=1, workdir=str(tmp_path), timeout=1)
    assert (tmp_path / "lora-plain.log").is_file()  # the child's output so far


def test_a_plain_out_of_memory_on_packed_rows_is_explained():
    row = {"steps": 2, "step_time_s": 0.2, "tokens_per_s": 190000.0, "peak_memory_gb": 18.7, "memory_device": "cuda",
           "loss_curve": [[1, 1.5], [2, 1.4]], "backend_reason": "x"}
    results = {"unsloth": row, "plain": {"error": "CUDA out of memory"}}
    table = bench.format_table("full", results, "both", "throughput", ["attn_implementation=sdpa"])
    assert "plain: plain ran out of memory on packed rows" in table and "padding-free" in table
    # unpacked settings (the full profile), or the throughput profile's flex attention: no such explanation
    assert "packed rows" not in bench.format_table("full", results, "both", "full")
    assert "packed rows" not in bench.format_table("full", results, "both", "throughput")


def test_a_plain_out_of_memory_at_a_large_dpo_or_grpo_batch_is_explained():
    note = bench.failure_note("grpo", "throughput", "plain", "CUDA out of memory")
    batch = get_recipe("grpo", "throughput").per_device_train_batch_size
    assert f"at {batch} completions a step" in note and f"per_device_train_batch_size={batch // 2}" in note
    assert "64 pairs" in bench.failure_note("dpo", "throughput", "plain", "CUDA out of memory",
                                            ["per_device_train_batch_size=64"])
    assert bench.failure_note("grpo", "throughput", "unsloth", "CUDA out of memory") is None
    assert bench.failure_note("grpo", "full", "plain", "CUDA out of memory") is None


def test_a_run_that_recorded_its_training_and_then_hung_is_used(tmp_path, monkeypatch):
    import subprocess

    def child(command, env, timeout, **kwargs):  # writes its record, then never exits
        runs = tmp_path / "runs-plain"
        runs.mkdir(parents=True, exist_ok=True)
        (runs / "grpo.json").write_text(json.dumps({"steps": 3, "runtime_s": 9.0, "tokens_per_s": 10.0,
                                                       "memory_peak_gb": 1.0, "memory_device": "cpu"}))
        raise subprocess.TimeoutExpired(command, timeout)

    monkeypatch.setattr(subprocess, "run", child)
    record = bench.run_backend("grpo", "plain", "quick", 3, tmp_path, timeout=5)
    assert record["steps"] == 3 and "did not exit within the 5 s limit" in record["exit_note"]
    table = bench.format_table("grpo", {"plain": bench.measurements(record)}, "cpu")
    assert "plain: wrote its run record, then did not exit within the 5 s limit." in table


def test_a_stale_record_does_not_pass_for_a_run_that_timed_out(tmp_path, monkeypatch):
    import subprocess

    (tmp_path / "runs-plain").mkdir()
    (tmp_path / "runs-plain" / "grpo.json").write_text("{}")  # left by an earlier run

    def child(command, env, timeout, **kwargs):
        raise subprocess.TimeoutExpired(command, timeout)

    monkeypatch.setattr(subprocess, "run", child)
    with pytest.raises(bench.BackendTimeout, match="plain run timed out after 5 s"):
        bench.run_backend("grpo", "plain", "quick", 3, tmp_path, timeout=5)


def test_bench_rejects_unknown_or_unavailable_backends():
    with pytest.raises(ValueError, match="allowed unsloth, plain"):
        bench.bench("lora", "quick", backends=["vllm"])
    with pytest.raises(ValueError, match="backend unsloth cannot run here: no CUDA GPU"):
        bench.bench("lora", "quick", backends=["unsloth"])


def test_grpo_measure_is_generated_tokens_of_a_steady_step():
    record = {"steps": 6, "runtime_s": 104.5, "step_time_median_s": 2.5, "generated_tokens": 51_600,
              "loss_curve": [[1, 3.1e-5], [6, 3.0e-5]]}
    m = bench.measurements(record)
    assert m["generated_tokens_per_step_s"] == pytest.approx(51_600 / 6 / 2.5, abs=0.1)  # 3,440
    assert m["generated_tokens_per_run_s"] == pytest.approx(51_600 / 104.5, abs=0.1)
    assert bench.TARGETS["grpo"][0] == "generated_tokens_per_step_s"
    assert bench.target_verdict("grpo", m) == "missed (34% of 10,000)"
    assert "3.1e-05" in bench.format_table("grpo", {"unsloth": {**m, "peak_memory_gb": 9.0, "memory_device": "cuda"}},
                                           "x")  # tiny GRPO losses are not shown as 0.0000
