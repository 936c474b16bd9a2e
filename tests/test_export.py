"""GGUF export (f16 and q8_0) with round-trip checks, the Ollama Modelfile, and bad input that must leave
every existing file untouched. The source is SmolLM2-135M-Instruct as a 16-bit safetensors checkpoint."""

import copy
import json
import shutil

import pytest

from unsloth_course import export
from unsloth_course.export import ExportError


def _snapshot(folder):
    """Every file under folder with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A copy of the offline SmolLM2 checkpoint (bf16 safetensors + tokenizer): a causal-LM folder."""
    from unsloth_course.models import resolve_model

    target = tmp_path_factory.mktemp("export") / "smollm2"
    shutil.copytree(resolve_model(verbose=False), target)
    return target


@pytest.fixture(scope="module")
def exported(checkpoint):
    """f16 and q8_0 GGUF files of the checkpoint, each verified against it (greedy answers, 32 tokens)."""
    return export.export_ggufs(checkpoint, ["f16", "q8_0"], checkpoint.parent / "gguf", name="smollm2")


@pytest.mark.slow
def test_f16_and_q8_0_round_trip(exported):
    f16, q8 = exported
    assert [r.quantization for r in exported] == ["f16", "q8_0"]
    for result in exported:
        assert result.path.is_file() and result.path.name == f"smollm2.{result.quantization.upper()}.gguf"
        assert result.verified and result.verification.passed and result.verification.tokenizer_match
        assert result.verification.prompts == 3 and result.verification.max_new_tokens == 32
    # f16 holds a bf16 checkpoint's weights exactly: every greedy answer is identical
    assert f16.agreement == 1.0 and f16.verification.exact_answers == 3 and f16.verification.tolerance == 1.0
    # q8_0: teacher-forced top-1 agreement at the stated tolerance (measured 100% on this model)
    assert q8.verification.token_agreement >= export.TOLERANCES["q8_0"] == q8.verification.tolerance
    # ~2 bytes per weight for f16 and ~1.06 for q8_0 (135M parameters)
    assert 250 < f16.size_mb < 290 and 130 < q8.size_mb < 155


@pytest.mark.slow
def test_gguf_metadata_matches_smollm2(exported):
    import gguf

    reader = gguf.GGUFReader(exported[1].path)
    fields = {name: reader.fields[name].contents() for name in (
        "general.architecture", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.padding_token_id")}
    # GPT-2 style byte-level BPE with SmolLM's pre-tokenizer, as in the official SmolLM2 GGUF files; the pad is the
    # checkpoint's own, <|endoftext|> (id 0, models.SPECIAL_TOKENS), not the EOS the Hub files reuse as pad
    assert fields == {"general.architecture": "llama", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
                      "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.bos_token_id": 1,
                      "tokenizer.ggml.padding_token_id": 0}
    assert "<|im_start|>" in reader.fields["tokenizer.chat_template"].contents()
    types = {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    assert types == {"Q8_0"}


@pytest.mark.slow
def test_modelfile_next_to_each_gguf(exported):
    for result in exported:
        assert result.modelfile == result.path.with_suffix(".Modelfile")
        text = result.modelfile.read_text()
        assert f"FROM ./{result.path.name}" in text
        assert 'TEMPLATE """' in text and "<|im_start|>{{ .Role }}" in text and "{{ .Content }}<|im_end|>" in text
        assert "<|im_start|>assistant" in text
        assert 'PARAMETER stop "<|im_end|>"' in text
        assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text


@pytest.mark.slow
def test_existing_files_are_not_overwritten(exported, checkpoint):
    folder = exported[0].path.parent
    before = _snapshot(folder)
    with pytest.raises(ExportError, match="already exist"):
        export.export_ggufs(checkpoint, ["f16"], folder, name="smollm2")
    assert _snapshot(folder) == before


def test_not_a_checkpoint_is_refused_untouched(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"not really")
    plain = tmp_path / "notes"
    plain.mkdir()
    (plain / "readme.txt").write_text("hello")
    vision = tmp_path / "classifier"
    vision.mkdir()
    (vision / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (vision / "model.safetensors").write_bytes(b"x")
    before = _snapshot(tmp_path)
    with pytest.raises(ExportError, match="LoRA adapter"):
        export.export_ggufs(adapter, ["f16"])
    with pytest.raises(ExportError, match="config.json is missing"):
        export.export_ggufs(plain, ["q8_0"])
    with pytest.raises(ExportError, match="not a causal language model"):
        export.export_ggufs(vision, ["q8_0"])
    with pytest.raises(ExportError, match="not a folder"):
        export.export_ggufs(tmp_path / "missing", ["q8_0"])
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "classifier", "notes"]  # no *_gguf folder


def test_unknown_quantization_is_refused_before_writing(checkpoint):
    before = _snapshot(checkpoint.parent)
    with pytest.raises(ExportError, match=r"unknown quantization 'q3_x'.*f16.*q8_0"):
        export.export_ggufs(checkpoint, ["f16", "q3_x"], checkpoint.parent / "unknown")
    assert _snapshot(checkpoint.parent) == before
    assert not (checkpoint.parent / "unknown").exists()


def test_q4_k_m_without_llama_cpp_says_what_is_missing(checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-quantize on PATH
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", str(tmp_path / "no-llama.cpp"))
    monkeypatch.chdir(tmp_path)  # no ./llama.cpp
    assert export.find_llama_quantize() is None
    before = _snapshot(checkpoint.parent)
    with pytest.raises(ExportError, match="q4_k_m needs llama.cpp's compiled quantizer `llama-quantize`"):
        export.export_ggufs(checkpoint, ["q8_0", "q4_k_m"], checkpoint.parent / "q4")
    with pytest.raises(ExportError, match="llama-quantize"):
        export.export_ggufs(checkpoint, ["quantized"], checkpoint.parent / "q4")  # Unsloth's alias
    assert _snapshot(checkpoint.parent) == before
    assert not (checkpoint.parent / "q4").exists()


def test_quantization_names():
    assert export.normalize_quantization("Q8_0") == "q8_0"
    assert export.normalize_quantization("not_quantized") == "f16"
    assert export.normalize_quantization("fast_quantized") == "q8_0"
    assert set(export.CONVERTER_QUANTIZATIONS) | set(export.LLAMA_QUANTIZE_QUANTIZATIONS) == set(
        export.ALLOWED_QUANTIZATIONS)


def test_unsloth_path_needs_a_gpu_here():
    available, why = export.unsloth_gguf_available()
    if not available:
        assert why
    import sys

    import torch

    if not torch.cuda.is_available():
        assert not available and "unsloth" not in sys.modules


def test_cli_export_errors(tmp_path, capsys):
    from unsloth_course.cli import main

    assert main(["export", str(tmp_path / "nothing"), "--quantization", "f16"]) == 2
    assert "export: error:" in capsys.readouterr().err


def test_save_adapter_and_merged(lora_model, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    _, tokenizer = tiny_model
    adapter = export.save_adapter(lora_model, tokenizer, tmp_path / "adapter")
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    merged = export.save_merged(lora_model, tokenizer, tmp_path / "merged")
    config = export.check_causal_lm_dir(merged)
    assert config["architectures"] == ["LlamaForCausalLM"] and config.get("dtype") in ("bfloat16", "float16")
    assert not any(merged.glob("*.bin")) and not list(tmp_path.glob(".*partial*"))
    AutoModelForCausalLM.from_pretrained(merged)  # loads as a plain transformers model
    before = _snapshot(tmp_path)
    with pytest.raises(ExportError, match="already exists"):
        export.save_merged(lora_model, tokenizer, tmp_path / "merged")
    with pytest.raises(ExportError, match="needs a LoRA"):
        export.save_adapter(tiny_model[0], tokenizer, tmp_path / "other")
    assert _snapshot(tmp_path) == before


def test_tolerances():
    assert export.tolerance_for("f16", "bfloat16") == 1.0  # every bf16 weight is an f16 number
    assert export.tolerance_for("f16", "float32") == export.LOSSY_FLOAT_TOLERANCE  # rounding: not exact
    assert export.tolerance_for("f32", "float32") == 1.0
    assert export.tolerance_for("q8_0", "bfloat16") == export.TOLERANCES["q8_0"] == 0.95


def _verification(exact: int, greedy: float, forced: float, tolerance: float, tokenizer: bool = True):
    return export.Verification(quantization="q8_0", prompts=3, max_new_tokens=32, exact_answers=exact,
                               agreement=greedy, token_agreement=forced, tokenizer_match=tokenizer,
                               tolerance=tolerance)


def test_verification_rules():
    # exact formats: every greedy answer identical
    assert _verification(3, 1.0, 1.0, 1.0).passed
    assert not _verification(2, 0.9, 0.999, 1.0).passed
    # lossy formats: teacher-forced top-1 at the tolerance; a greedy flip at a near-tie is allowed
    flipped = _verification(2, 0.74, 0.986, 0.95)
    assert flipped.passed and "greedy agreement 74.0% (not required)" in str(flipped)
    assert not _verification(3, 1.0, 0.90, 0.95).passed
    assert "teacher-forced top-1 90.0% (required >= 95%)" in str(_verification(3, 1.0, 0.90, 0.95))
    # a different tokenizer always fails
    assert not _verification(3, 1.0, 1.0, 0.95, tokenizer=False).passed


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../evil", "contains a path separator"),
        ("sub/model", "contains a path separator"),
        ("..\\evil", "contains a path separator"),
        ("/tmp/evil", "is an absolute path or names a drive"),
        ("C:evil", "is an absolute path or names a drive"),
        ("..", "is '.' or '..'"),
        (".", "is '.' or '..'"),
        ("", "is empty"),
        ("  ", "is empty"),
    ],
)
def test_export_names_are_file_names_inside_out(checkpoint, tmp_path, capsys, name, problem):
    """--name ../evil (or an absolute name) used to write outside --out; now refused before anything is written."""
    from unsloth_course.cli import main

    out = tmp_path / "out"
    before = _snapshot(tmp_path)
    with pytest.raises(ExportError, match=f"--name {name!r} {problem}".replace("\\", "\\\\").replace(".", r"\.")):
        export.plan_exports(checkpoint, ["f16"], out, name=name)
    assert main(["export", str(checkpoint), "--quantization", "f16", "--out", str(out), "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unsloth-course export: error: --name {name!r} {problem}") and err.count("\n") == 1
    assert _snapshot(tmp_path) == before and not out.exists()
    assert not list(tmp_path.parent.glob("evil*")) and not list(checkpoint.parent.glob("evil*"))


def test_an_out_folder_that_is_a_file_is_refused(checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="--out .* is a file; give a folder"):
        export.plan_exports(checkpoint, ["f16"], tmp_path / "file")


def test_plain_export_names_are_kept(checkpoint, tmp_path):
    targets, _, _ = export.plan_exports(checkpoint, ["f16", "q8_0"], tmp_path, name="smollm2.v1-lora")
    assert [p.name for p in targets.values()] == ["smollm2.v1-lora.F16.gguf", "smollm2.v1-lora.Q8_0.gguf"]
    assert all(p.parent == tmp_path for p in targets.values())


def test_adapters_name_their_base_by_hub_id_and_load_offline(lora_model, tiny_model, tmp_path):
    """An adapter trained from the offline copy of SmolLM2 used to record that copy's folder (a path of this
    machine) as its base model; it records the Hub id, and still loads here offline (resolve_model)."""
    import torch

    from unsloth_course import FastLanguageModel
    from unsloth_course.models import DEFAULT_MODEL, hub_id_for, resolve_model

    _, tokenizer = tiny_model
    local = resolve_model(verbose=False)
    assert local != DEFAULT_MODEL and hub_id_for(local) == DEFAULT_MODEL  # offline here: the local copy
    adapter = export.save_adapter(lora_model, tokenizer, tmp_path / "adapter")
    lora_model.save_pretrained(tmp_path / "direct")  # as the notebooks save it
    copy.deepcopy(lora_model).save_pretrained(tmp_path / "copy")  # a copy saves itself, also with the Hub id
    for folder in (adapter, tmp_path / "direct", tmp_path / "copy"):
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == DEFAULT_MODEL
    model, _ = FastLanguageModel.from_pretrained(model_name=str(adapter), max_seq_length=256)
    assert model.peft_config["default"].base_model_name_or_path == DEFAULT_MODEL
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, lora_model(input_ids=ids).logits)


def test_an_adapter_naming_the_local_copy_is_rewritten_on_save(tmp_path):
    """What PEFT records for a model loaded from the offline copy (kept so for Unsloth's merge): every save
    rewrites it to the Hub id; other bases are left alone."""
    from unsloth_course.models import DEFAULT_MODEL, name_base_by_hub_id, resolve_model

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": resolve_model(
        verbose=False), "r": 8}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "outputs/cpt/merged"}))
    name_base_by_hub_id(tmp_path)
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text()) == {
        "base_model_name_or_path": DEFAULT_MODEL, "r": 8}
    assert json.loads((tmp_path / "b" / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "outputs/cpt/merged")


def test_merged_copy_precision_is_a_choice(lora_model, tiny_model, tmp_path):
    """A small LoRA update (as after a short run) mostly rounds away in a bf16 merge; dtype="float32" keeps it
    exactly. The default stays 16-bit (bf16 here), as Unsloth's merged_16bit."""
    import torch
    from safetensors.torch import load_file

    _, tokenizer = tiny_model
    model = copy.deepcopy(lora_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 1e-4)
    key = "model.layers.0.self_attn.q_proj.weight"
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    base = layer.base_layer.weight.detach().clone()
    exact = base + layer.get_delta_weight("default")
    changed = exact != base
    saved = {}
    for dtype in (None, "bfloat16", "float32"):
        folder = export.save_merged(model, tokenizer, tmp_path / str(dtype), dtype=dtype)
        assert json.loads((folder / "config.json").read_text())["dtype"] == (dtype or "bfloat16")
        saved[dtype] = load_file(str(folder / "model.safetensors"))[key].float()
    assert torch.equal(saved[None], saved["bfloat16"])
    assert torch.equal(saved["float32"], exact)  # every update kept
    rounded_away = (saved["bfloat16"] == base)[changed].float().mean()
    assert rounded_away > 0.5  # most of a small update does not survive bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the trained model is left as it was
    with pytest.raises(ExportError, match="dtype='fp8' for the merged copy; allowed: None"):
        export.save_merged(model, tokenizer, tmp_path / "fp8", dtype="fp8")
    assert not (tmp_path / "fp8").exists()
