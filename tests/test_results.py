"""docs/RESULTS.md is generated from run records, and says where each number came from."""

import json

from tools import update_results as results


def _record(technique, **extra):
    base = {"technique": technique, "profile": "full", "steps": 60, "runtime_s": 30.5, "tokens_per_s": 9000.0,
            "memory_peak_gb": 1.25, "first_loss": 2.1, "last_loss": 1.3, "time": "2026-11-23 13:00:00",
            "backend": {"device_name": "NVIDIA H100 80GB HBM3", "backend": "unsloth", "dtype": "bfloat16",
                        "versions": {"unsloth": "2026.10.9"}}}
    return {**base, **extra}


def test_render_table_and_headlines(tmp_path):
    records = {
        "lora": _record("lora", answers=[{"prompt": "Write a factorial function", "before training": "B",
                                          "after training": "A"}]),
        "dpo": _record("dpo", preference_before={"logp_accuracy": 0.5},
                       preference_after={"logp_accuracy": 0.75, "reward_accuracy": 0.8}),
        "grpo": _record("grpo", reward_start=0.5, reward_end=1.5, eval_before={"accuracy": 0.1, "strict_format": 0.0},
                        eval_after={"accuracy": 0.3, "strict_format": 0.9}),
        "cpt": _record("cpt", perplexity_before={"code": 4.0, "general": 3.0},
                       perplexity_after={"code": 3.0, "general": 3.1}),
    }
    for name, record in records.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    text = results.render(tmp_path)
    assert "NVIDIA H100 80GB HBM3 (unsloth backend, bfloat16)" in text
    assert "| full fine-tuning | no run record yet" in text
    assert "9,000" in text and "2.1 → 1.3" in text
    assert "50.0% → 75.0%" in text and "80.0%" in text
    assert "mean reward 0.50 → 1.50" in text and "10.0% → 30.0%" in text
    assert "code perplexity 4.00 → 3.00; general text 3.00 → 3.10" in text
    assert "Before:" in text and "\nA\n" in text


def test_render_without_records(tmp_path):
    assert "_No run records yet._" in results.render(tmp_path)


def test_committed_results_are_current():
    current = results.RESULTS_MD.read_text() if results.RESULTS_MD.exists() else ""
    assert results.render() == current, "run `python -m tools.update_results`"


def test_extra_sections_pipeline_planner_and_bench(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "pipeline.json").write_text(json.dumps({"stages": [
        {"index": 1, "stage": "cpt", "model_from": "base", "steps": 30, "wall_s": 123.2, "first_loss": 2.66,
         "last_loss": 2.2, "metric": "code perplexity 14.87 -> 13.78"}]}))
    (extra / "planner_verify.json").write_text(json.dumps({"tolerance": 0.2, "versions": {"torch": "2.11.0"},
        "rows": [{"case": "llama8b-qlora", "model": "meta-llama/Llama-3.1-8B", "technique": "qlora",
                  "gpu_gb_planned_for": 16, "batch": 8, "seq_len": 512, "planned_allocated_gb": 13.72,
                  "measured_peak_allocated_gb": 13.47, "error_allocated": 0.018, "within_tolerance": True,
                  "gpu": "NVIDIA H100 80GB HBM3"},
                 {"case": "broken", "error": "bitsandbytes is not installed"}]}))
    text = results.render(tmp_path)
    assert "| 1 | cpt | `base` | 30 | 123 | 2.66 → 2.2 | code perplexity 14.87 -> 13.78 |" in text
    assert "| 8 x 512 | 13.72 | 13.47 | +1.8% | yes |" in text and "| broken | failed:" in text
    assert "Not run on the GPU yet" in text
    (extra / "bench-lora.json").write_text(json.dumps({"technique": "lora", "profile": "throughput", "results": {
        "plain": {"step_time_s": 0.2, "tokens_per_s": 150000.0, "peak_memory_gb": 20.0},
        "unsloth": {"error": "CUDA out of memory"}}}))
    text = results.render(tmp_path)
    assert "| lora | - | plain | 0.2 | 150,000 | - | 20.00 |  | missed (50% of 300,000) |" in text
    assert "| lora | - | unsloth | failed: CUDA out of memory |" in text
    assert "no bench record for full, dpo, grpo, cpt" in text
    (extra / "bench-grpo.json").write_text(json.dumps({
        "technique": "grpo", "profile": "throughput", "overrides": ["max_completion_length=64"], "results": {
            "unsloth": {"step_time_s": 4.0, "tokens_per_s": 3000.0, "peak_memory_gb": 9.0,
                        "generated_tokens_per_step_s": 12000.0, "exit_note": "wrote its run record, then hung"},
            "plain": {"step_time_s": 8.0, "tokens_per_s": 1500.0, "peak_memory_gb": 25.0,
                      "generated_tokens_per_step_s": 4000.0}}}))
    (extra / "bench-notes.md").write_text("### Findings\n\nwritten by hand")
    text = results.render(tmp_path)
    # GRPO's ratio and target use generated tokens per second of a steady step; the grpo row comes after lora
    assert "| grpo | `max_completion_length=64` | unsloth | 4.0 | 3,000 | 12,000 | 9.00 | 3.00x | met |" in text
    assert "| grpo | `max_completion_length=64` | plain | 8.0 | 1,500 | 4,000 | 25.00 |  | missed (40% of 10,000) |" in text
    assert text.index("| lora |") < text.index("| grpo |")
    assert "- grpo, unsloth: wrote its run record, then hung." in text and "### Findings\n\nwritten by hand" in text


def test_scaling_section(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    assert "Not measured: no scaling record" in results.render(tmp_path)
    (extra / "scaling.json").write_text(json.dumps({"not_measured": "no 2-GPU machine was lent."}))
    assert "Not measured: no 2-GPU machine was lent." in results.render(tmp_path)
    (extra / "scaling.json").write_text(json.dumps({"runs": [{"gpus": 1, "tokens_per_s": 1000.0},
                                                             {"gpus": 2, "tokens_per_s": 1800.0}]}))
    assert "| 2 | 1,800 | 90% |" in results.render(tmp_path)


def test_an_undefined_implicit_reward_reads_n_a():
    """preference_metrics records reward_accuracy None when the adapter never moved (policy = reference)."""
    record = {"technique": "dpo", "preference_before": {"logp_accuracy": 0.5, "reward_accuracy": None},
              "preference_after": {"logp_accuracy": 0.5, "reward_accuracy": None}}
    assert results.headline(record).endswith("implicit-reward accuracy after n/a")
    record["preference_after"]["reward_accuracy"] = 0.8125
    assert results.headline(record).endswith("implicit-reward accuracy after 81.2%")
