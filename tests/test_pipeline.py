"""`unsloth-course pipeline cpt sft dpo --quick`: each stage starts from the previous stage's merged model,
records its run, and the pipeline prints one summary with every stage's metric."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from unsloth_course.cli import main, pipeline
from unsloth_course.cli.pipeline import PipelineError


@pytest.mark.slow
def test_pipeline_cpt_sft_dpo_quick(tmp_path, monkeypatch, capsys):
    runs_dir = tmp_path / "runs"  # a private runs/ folder: other tests write standalone records to the shared one
    monkeypatch.setenv("UNSLOTH_COURSE_RUNS", str(runs_dir))
    out = tmp_path / "pipeline"
    # The quick profile's code path, shortened for CI: 2 steps per stage, 24-token answers, 6 held-out rows.
    pipeline.run_pipeline(["cpt", "sft", "dpo"], quick=True, output_root=out, max_steps=2, max_new_tokens=24,
                          n_eval_rows=6)
    printed = capsys.readouterr().out

    record = json.loads((Path(runs_dir) / "pipeline.json").read_text())
    stages = record["stages"]
    assert [(s["stage"], s["technique"]) for s in stages] == [("cpt", "cpt"), ("sft", "lora"), ("dpo", "dpo")]
    assert record["profile"] == "quick" and record["final_model"] == str(out / "3-dpo" / "merged")
    # each stage trained from the previous stage's merged model
    assert stages[0]["model_from"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert stages[1]["model_from"] == str(out / "1-cpt" / "merged")
    assert stages[2]["model_from"] == str(out / "2-sft" / "merged")
    for s in stages:
        assert s["steps"] == 2 and s["last_loss"] is not None
        assert (Path(s["model_out"]) / "model.safetensors").is_file()
        run_record = json.loads(Path(s["record"]).read_text())  # runs/pipeline/<k>-<stage>.json
        assert run_record["technique"] == s["technique"] and run_record["model_name"] == s["model_from"]
    assert not (Path(runs_dir) / "lora.json").exists()  # stage records do not replace standalone run records

    # every stage's own metric, in the one summary
    assert stages[0]["held_out"]["code"]["after"]["perplexity"] > 1 and "code perplexity" in stages[0]["metric"]
    assert "held-out answer loss" in stages[1]["metric"] and stages[1]["held_out"]["loss_change_ci"]
    assert len(stages[1]["answers"]) == 5 and all(a["after training"] for a in stages[1]["answers"])
    assert "implicit-reward accuracy" in stages[2]["metric"] and "after" in stages[2]["held_out"]
    summary = printed[printed.index("pipeline summary"):]
    for text in ("| 1 | cpt | cpt |", "| 2 | sft | lora |", "| 3 | dpo | dpo |", "code perplexity",
                 "preference accuracy", "answers after stage 2 (sft)", "What is the capital of France?"):
        assert text in summary


@pytest.mark.parametrize("stages", [["cpt", "sft", "rlhf"], ["SFT", "ppo"], []])
def test_unknown_stages_fail_before_any_work(stages, tmp_path, monkeypatch):
    from unsloth_course.cli import run as runner

    def no_run(*args, **kwargs):
        raise AssertionError("a stage ran")

    monkeypatch.setattr(runner, "run", no_run)
    with pytest.raises(PipelineError, match="allowed: cpt, sft"):
        pipeline.run_pipeline(stages, quick=True, output_root=tmp_path / "out", runs_dir=tmp_path / "runs")
    assert list(tmp_path.iterdir()) == []


def test_cli_pipeline_arguments(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *args, **kwargs: calls.append((args, kwargs)))
    out = str(tmp_path / "out")
    assert main(["pipeline", "cpt", "sft", "dpo", "--quick", "--max-steps", "3", "--output-dir", out]) == 0
    assert calls == [((["cpt", "sft", "dpo"],), {"quick": True, "output_root": out, "max_steps": 3,
                                                  "model_name": None})]


def test_cli_unknown_stage(tmp_path, capsys):
    assert main(["pipeline", "cpt", "rlhf", "--quick", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pipeline: error: unknown pipeline stage(s) 'rlhf'" in err and "sft (= lora" in err
    assert list(tmp_path.iterdir()) == []


def test_stage_names_and_bad_overrides(tmp_path):
    assert pipeline.resolve_stages(["cpt", "SFT", "dpo"]) == [("cpt", "cpt"), ("sft", "lora"), ("dpo", "dpo")]
    assert pipeline.resolve_stages("full grpo") == [("full", "full"), ("grpo", "grpo")]
    with pytest.raises(PipelineError, match="max_steps"):
        pipeline.run_pipeline(["sft"], quick=True, max_steps=0, output_root=tmp_path / "o")
    with pytest.raises(PipelineError, match="invalid recipe override"):
        pipeline.run_pipeline(["sft"], quick=True, learning_rate=5.0, output_root=tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_stage_without_a_model_for_the_next(tmp_path):
    (tmp_path / "1-sft" / "adapter").mkdir(parents=True)
    with pytest.raises(PipelineError, match="no merged/"):
        pipeline.stage_model_dir(tmp_path / "1-sft")


def _value(v):
    return SimpleNamespace(value=v)


def test_stage_metrics_read_the_held_out_measurements():
    def ppl(before, after):
        return SimpleNamespace(before=SimpleNamespace(perplexity=_value(before)),
                               after=SimpleNamespace(perplexity=_value(after)))

    assert pipeline.stage_metric("cpt", {"held_out": {"code": ppl(4.0, 3.5), "prose": ppl(3.0, 3.1)}}) == \
        "code perplexity 4.00 -> 3.50; prose perplexity 3.00 -> 3.10"
    sft = SimpleNamespace(before=SimpleNamespace(loss=_value(1.7)), after=SimpleNamespace(loss=_value(1.55)))
    assert pipeline.stage_metric("lora", {"held_out": sft}) == "held-out answer loss 1.700 -> 1.550"
    dpo = {"before": SimpleNamespace(logp_accuracy=_value(0.5)),
           "after": SimpleNamespace(logp_accuracy=_value(0.75), reward_accuracy="80.0% (95% CI 60-90%, n=20)")}
    assert pipeline.stage_metric("dpo", {"held_out": dpo}) == (
        "held-out preference accuracy 50.0% -> 75.0%; implicit-reward accuracy 80.0% (95% CI 60-90%, n=20)")
    assert pipeline.stage_metric("grpo", {}) == ""  # a train-only run measured nothing
