"""unsloth_course.cli.planner: parameter counts equal transformers' own, the memory model matches measured peaks
on CPU, verdicts and recommendations are consistent, and the GPU verification script runs (CPU smoke)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: no test may reach the Hub

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from unsloth_course.cli import planner
from unsloth_course.cli.planner import KNOWN_CONFIGS, Arch, ConfigUnavailable, plan
from unsloth_course.measurement import lora_parameter_count

ROOT = Path(__file__).resolve().parents[1]
# Published parameter counts (model cards / safetensors metadata), as a second check beside transformers.
PUBLISHED_PARAMS = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": 134_515_008,
    "meta-llama/Llama-3.1-8B": 8_030_261_248,
    "microsoft/Phi-3.5-mini-instruct": 3_821_079_552,
    "mistralai/Mistral-7B-v0.3": 7_248_023_552,
    "Qwen/Qwen2.5-1.5B-Instruct": 1_543_714_304,
}


def _meta_model(config_or_id):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # meta tensors allocate nothing: an 8B model builds in a second
        return AutoModelForCausalLM.from_config(planner.transformers_config(config_or_id))


def _verify_module():
    spec = importlib.util.spec_from_file_location("verify_planner", ROOT / "tools" / "verify_planner.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("verify_planner", module)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("model_id", sorted(KNOWN_CONFIGS))
def test_parameter_count_equals_transformers_model(model_id):
    model = _meta_model(model_id)
    arch = Arch.from_config(KNOWN_CONFIGS[model_id])
    assert arch.num_parameters == sum(p.numel() for p in model.parameters())
    assert arch.exact
    # LoRA r*(in+out) per targeted Linear, with Phi-3's fused projections mapped
    targets = arch.lora_targets()
    assert arch.lora_parameters(16) == lora_parameter_count(model, 16, targets)
    linear = sum(m.weight.numel() for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".layers." in name)
    assert arch.linear_parameters == linear


@pytest.mark.parametrize(("model_id", "expected"), sorted(PUBLISHED_PARAMS.items()))
def test_parameter_count_equals_published(model_id, expected):
    assert Arch.from_config(planner.load_config(model_id)).num_parameters == expected


def test_config_object_dict_and_aliases_agree():
    values = planner.load_config("Qwen/Qwen2.5-1.5B-Instruct")
    config = planner.transformers_config(values)
    assert Arch.from_config(config) == Arch.from_config(values)
    assert Arch.from_config(config).qkv_bias  # Qwen2 has q/k/v biases
    assert planner.known_config("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit") == KNOWN_CONFIGS[
        "meta-llama/Llama-3.1-8B"]
    assert planner.known_config("meta-llama/llama-3.1-8b-instruct") is not None  # case-insensitive


def test_phi3_lora_targets_are_the_fused_projections():
    arch = Arch.from_config(KNOWN_CONFIGS["microsoft/Phi-3.5-mini-instruct"])
    assert arch.lora_targets() == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert arch.lora_targets(("q_proj", "v_proj", "embed_tokens")) == ["qkv_proj"]


def test_other_architecture_from_local_folder(tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.for_model("qwen3", hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=1000)
    config.save_pretrained(tmp_path)
    result = plan(str(tmp_path), "lora", gpu_gb=8)
    assert result.exact_architecture and result.fits
    assert result.total_params == sum(p.numel() for p in _meta_model(config).parameters())  # q_norm, k_norm


def test_unknown_architecture_is_flagged_approximate():
    config = dict(KNOWN_CONFIGS["HuggingFaceTB/SmolLM2-135M-Instruct"], model_type="olmo")
    assert any("approximate" in note for note in plan(config, "lora").notes)


def test_unknown_model_offline_says_what_to_do():
    with pytest.raises(ConfigUnavailable, match="not one of the shipped configs .* local folder"):
        planner.load_config("no-such-org/no-such-model-xyz")


# ------------------------------------------------------------------ memory model
def test_breakdown_components():
    llama = "meta-llama/Llama-3.1-8B-Instruct"
    lora = plan(llama, "lora", 80, batch=2, seq_len=512)
    qlora = plan(llama, "qlora", 80, batch=2, seq_len=512)
    params = 8_030_261_248
    assert lora.breakdown_gb["weights"] == pytest.approx(params * 2 / 1e9, abs=1e-3)
    embeddings = 2 * 128256 * 4096  # embed_tokens + lm_head stay bf16 under QLoRA
    linear = Arch.from_config(planner.load_config(llama)).linear_parameters
    expected_4bit = (linear * planner.NF4_BYTES_PER_PARAM + (params - linear) * 2) / 1e9
    assert qlora.breakdown_gb["weights"] == pytest.approx(expected_4bit, abs=1e-3)
    assert (params - linear) > embeddings  # norms too
    adapters = Arch.from_config(planner.load_config(llama)).lora_parameters(16)
    assert lora.trainable_params == adapters == 41_943_040
    assert lora.breakdown_gb["lora_adapter"] == pytest.approx(adapters * 4 / 1e9, abs=1e-3)  # fp32
    assert lora.breakdown_gb["gradients"] == pytest.approx(adapters * 4 / 1e9, abs=1e-3)
    assert lora.breakdown_gb["optimizer"] == pytest.approx(adapters * 2 / 1e9, abs=1e-3)  # 8-bit AdamW
    fp32_adam = plan(llama, "lora", 80, batch=2, seq_len=512, optimizer="adamw")
    assert fp32_adam.breakdown_gb["optimizer"] == pytest.approx(adapters * 8 / 1e9, abs=1e-3)
    # full fine-tuning: every parameter has a gradient and optimizer state
    full = plan(llama, "full", 80, batch=2, seq_len=512)
    assert full.trainable_params == params
    assert full.breakdown_gb["optimizer"] == pytest.approx(params * 2 / 1e9, abs=1e-3)
    assert full.total_gb > 3 * lora.total_gb / 2


def test_memory_grows_with_batch_sequence_and_without_checkpointing():
    smol = "HuggingFaceTB/SmolLM2-135M-Instruct"
    base = plan(smol, "lora", 16, batch=2, seq_len=512)
    assert plan(smol, "lora", 16, batch=4, seq_len=512).total_gb > base.total_gb
    assert plan(smol, "lora", 16, batch=2, seq_len=1024).total_gb > base.total_gb
    no_gc = plan(smol, "lora", 16, batch=2, seq_len=512, gradient_checkpointing=False)
    assert no_gc.breakdown_gb["activations"] > base.breakdown_gb["activations"]
    dpo = plan(smol, "dpo", 16, batch=2, seq_len=512)  # chosen + rejected: twice the rows
    assert dpo.breakdown_gb["activations"] == pytest.approx(2 * base.breakdown_gb["activations"], rel=0.01)
    cpt = plan(smol, "cpt", 16, batch=2, seq_len=512)  # embeddings trained whole
    assert cpt.trainable_params == base.trainable_params + 49152 * 576


def test_verdicts_and_recommendations():
    llama = "meta-llama/Llama-3.1-8B-Instruct"
    lora = plan(llama, "lora", 16)
    assert not lora.fits and lora.recommendation is None  # 16 GB of bf16 weights alone
    assert "DOES NOT FIT" in lora.verdict() and "use qlora" in lora.verdict()
    qlora = plan(llama, "qlora", 16)
    assert qlora.fits and "FITS" in qlora.verdict()
    rec = qlora.recommendation
    assert rec["seq_len"] == qlora.seq_len == 512  # the recipe's length is kept; the batch is searched
    assert rec["total_gb"] <= 16
    assert plan(llama, "qlora", 16, batch=rec["batch"], seq_len=512).fits
    assert not plan(llama, "qlora", 16, batch=2 * rec["batch"], seq_len=512).fits
    at_batch_1 = plan(llama, "qlora", 16, batch=1)  # batch given: the longest sequence is searched
    assert at_batch_1.recommendation["seq_len"] == rec["max_seq_len_at_batch_1"] >= 1024
    smol = plan("HuggingFaceTB/SmolLM2-135M-Instruct", "lora", 16)
    assert smol.recommendation["max_seq_len_at_batch_1"] == 8192  # capped by max_position_embeddings
    table = qlora.table()
    for row in ("weights", "lora_adapter", "gradients", "optimizer", "activations", "cuda_context",
                "total on the GPU"):
        assert row in table
    data = qlora.to_dict()
    assert json.loads(json.dumps(data))["verdict"] == qlora.verdict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"technique": "sft"}, "unknown technique"), ({"optimizer": "sgd"}, "unknown optimizer"),
     ({"batch": 0}, "positive integer"), ({"gpu_gb": 0}, "gpu_gb"), ({"dtype_bytes": 3}, "dtype_bytes")],
)
def test_plan_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan("HuggingFaceTB/SmolLM2-135M-Instruct", **{"technique": "lora", **kwargs})


@pytest.mark.parametrize(
    ("technique", "checkpointing", "overrides"),
    [
        ("lora", True, {}),
        ("lora", False, {}),
        ("full", True, {}),
        ("lora", True, {"model_type": "phi3", "num_key_value_heads": 4, "pad_token_id": 0}),
        ("lora", True, {"model_type": "qwen2", "intermediate_size": 1280}),
    ],
)
def test_estimate_matches_measured_peak_on_cpu(technique, checkpointing, overrides):
    """The same training step the GPU script measures, on a small random model on CPU: the planner's
    allocated memory is within 20% of the peak of live tensor storages (2 steps: optimizer states exist)."""
    verify = _verify_module()
    config = {**planner._config("llama", 256, 896, 3, 4, 2, 4096, False, 2048), **overrides}
    arch = Arch.from_config(config)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(planner.transformers_config(config), dtype=torch.bfloat16)
    model = verify.prepare_training(model, arch, technique, gradient_checkpointing=checkpointing)
    optimizer = verify.make_optimizer(model, "adamw")
    verify.train_steps(model, optimizer, 2, 256, arch.vocab_size, 1, "cpu")  # creates the optimizer states
    tracker = verify.LiveTensorPeak()
    tracker.track_all(model.parameters(), model.buffers(),
                      [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)])
    with tracker:
        verify.train_steps(model, optimizer, 2, 256, arch.vocab_size, 1, "cpu")
    estimate = planner.estimate(arch, technique, 2, 256, optimizer="adamw",
                                gradient_checkpointing=checkpointing)
    allocated = estimate["allocated"] - planner.WORKSPACE_GB * 1e9  # no GPU workspace on CPU
    detail = (allocated, tracker.peak, estimate["breakdown"])
    assert allocated == pytest.approx(tracker.peak, rel=0.20), detail


# ------------------------------------------------------------------ command line and GPU script
def test_plan_command_prints_table_and_verdict(capsys):
    assert planner.main(["--model", "meta-llama/Llama-3.1-8B-Instruct", "--technique", "qlora",
                         "--gpu-gb", "16"]) == 0
    out = capsys.readouterr().out
    assert "weights" in out and "FITS" in out and "largest that fits" in out
    assert planner.main(["--model", "meta-llama/Llama-3.1-8B-Instruct", "--technique", "lora",
                         "--gpu-gb", "16", "--seq-len", "1024", "--batch", "1"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert planner.main(["--model", "HuggingFaceTB/SmolLM2-135M-Instruct", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is True
    assert planner.main(["--model", "no-such-org/no-such-model-xyz"]) == 2
    assert "no config for" in capsys.readouterr().err


@pytest.mark.slow
def test_verify_script_cpu_smoke(tmp_path):
    """tools/verify_planner.py --cpu-smoke: SmolLM2-sized random model, LoRA, 1 CPU step, JSON written."""
    verify = _verify_module()
    status = verify.main(["--cpu-smoke", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "planner_verify.json").read_text())
    (row,) = payload["rows"]
    assert row["trainable_params"] == row["planned_trainable_params"] == 4_884_480
    assert row["measured_weights_gb"] == pytest.approx(row["planned_weights_gb"], rel=0.01)
    assert row["losses"] and row["within_tolerance"], row
    assert status == 0
