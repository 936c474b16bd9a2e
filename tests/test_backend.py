"""unsloth_course.backend (plain transformers + PEFT stand-in on CPU) and cpt_trainer (embedding learning rate)."""

import copy
import json

from unsloth_course.backend import FastLanguageModel

import pytest
import torch
from datasets import Dataset
from safetensors import safe_open

from unsloth_course import backend, hardware, standin
from unsloth_course.hardware import precision_args
from unsloth_course.inference import chat
from unsloth_course.measurement import count_parameters
from unsloth_course.recipes import LORA_TARGETS
from unsloth_course.standin import UnslothTrainer, UnslothTrainingArguments, embedding_parameter_names

EMBED_TARGETS = [*LORA_TARGETS, "embed_tokens", "lm_head"]


@pytest.fixture
def reported(monkeypatch):
    """A fresh set of notices already printed (report_once prints each notice once per process)."""
    fresh: set[str] = set()
    monkeypatch.setattr(hardware, "_reported", fresh)
    return fresh


def lora_copy(tiny_model, **kwargs):
    model, _ = tiny_model
    return FastLanguageModel.get_peft_model(copy.deepcopy(model), **kwargs)


def saved_dtypes(path) -> set:
    with safe_open(path, "pt") as f:
        names = list(f.keys())
        assert names and not any("lora" in name for name in names)
        return {f.get_tensor(name).dtype for name in names}


# ---------------------------------------------------------------- backend info
def test_backend_info_on_cpu():
    info = backend.backend_info()
    assert (info.backend, info.device, info.dtype, info.gpu_memory_gb) == ("plain", "cpu", "float32", None)
    assert info.reason in ("no CUDA GPU (Unsloth needs one)", "UNSLOTH_COURSE_BACKEND=plain")
    assert info.versions["transformers"] == "5.17.0"
    assert info.versions["torch"] == torch.__version__
    text = str(info).splitlines()
    assert len(text) == 4
    assert text[0] == f"backend : plain ({info.reason})"
    assert text[2] == "dtype   : float32"
    assert "transformers 5.17.0" in text[3] and "unsloth " not in text[3]


def test_hardware_helpers_on_cpu():
    assert backend.BACKEND == "plain"
    assert backend.FastLanguageModel is standin.PlainFastLanguageModel
    assert hardware.is_bfloat16_supported() is False
    assert hardware.default_dtype() == torch.float32


def test_report_once(reported, capsys):
    hardware.report_once("k", "first")
    hardware.report_once("k", "second")
    assert capsys.readouterr().out == "first\n"


# ---------------------------------------------------------------- LoRA rank and trainable parameters
def test_rank_zero_points_to_full_finetuning(tiny_model):
    model, _ = tiny_model
    with pytest.raises(ValueError, match="r=0") as error:
        FastLanguageModel.get_peft_model(model, r=0)
    assert "full_finetuning=True" in str(error.value) and "to_full_finetune" in str(error.value)
    assert not hasattr(model, "peft_config")  # rejected before touching the model


@pytest.mark.parametrize("r", [-1, 1.5, True, "16", None])
def test_invalid_ranks_raise(tiny_model, r):
    with pytest.raises((TypeError, ValueError), match="r"):
        FastLanguageModel.get_peft_model(tiny_model[0], r=r)


def test_lora_r16_on_all_projections_trains_3_5_percent(lora_model):
    trainable, total = count_parameters(lora_model)
    assert trainable == 30 * 16 * 10176  # 30 layers x r x sum(in + out) of the 7 projections
    assert 3.4 < 100 * trainable / total < 3.6
    names = [n for n, p in lora_model.named_parameters() if p.requires_grad]
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    assert lora_model.peft_config["default"].target_modules == set(LORA_TARGETS)


def test_full_finetuning_trains_everything_and_refuses_lora(capsys, reported):
    model, _ = FastLanguageModel.from_pretrained(max_seq_length=256, full_finetuning=True, load_in_4bit=True)
    assert all(p.requires_grad for p in model.parameters())
    assert model.is_gradient_checkpointing
    assert "4-bit/8-bit loading switched off" in capsys.readouterr().out
    with pytest.raises(ValueError, match="full_finetuning=True"):
        FastLanguageModel.get_peft_model(model, r=16)


def test_4bit_and_fp16_on_cpu_are_reported_once(capsys, reported):
    for _ in range(2):
        model, _ = FastLanguageModel.from_pretrained(max_seq_length=256, load_in_4bit=True, dtype=torch.float16)
        assert model.dtype == torch.float32
    out = capsys.readouterr().out
    assert out.count("load_in_4bit needs bitsandbytes on CUDA with Unsloth; the plain backend loads float32") == 1
    assert out.count("a CPU has no fast fp16: using float32") == 1


def test_bf16_is_honoured_on_cpu_and_full_finetuning_keeps_it_without_fp32_master_weights(capsys, reported):
    """As Unsloth: bf16 full fine-tuning keeps bf16 weights unless float32_mixed_precision=True."""
    lora_base, _ = FastLanguageModel.from_pretrained(max_seq_length=64, dtype=torch.bfloat16)
    pure, _ = FastLanguageModel.from_pretrained(max_seq_length=64, dtype=torch.bfloat16, full_finetuning=True)
    master, _ = FastLanguageModel.from_pretrained(max_seq_length=64, dtype=torch.bfloat16, full_finetuning=True,
                                                  float32_mixed_precision=True)
    assert (lora_base.dtype, pure.dtype, master.dtype) == (torch.bfloat16, torch.bfloat16, torch.float32)
    assert "float32_mixed_precision=True keeps fp32 master weights" in capsys.readouterr().out


def test_split_embedding_targets():
    split = standin._split_embedding_targets
    assert split(["q_proj", "embed_tokens", "lm_head"], None) == (["q_proj"], ["embed_tokens", "lm_head"])
    assert split(("q_proj", "lm_head"), ["lm_head"]) == (["q_proj"], ["lm_head"])
    assert split(["q_proj"], None) == (["q_proj"], None)
    assert split("all-linear", None) == ("all-linear", None)


def test_embeddings_train_whole_stay_tied_and_merge(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    base_embedding = tiny_model[0].get_input_embeddings().weight.detach().clone()
    model = lora_copy(tiny_model, r=8, target_modules=EMBED_TARGETS)
    config = model.peft_config["default"]
    assert "embed_tokens" in config.modules_to_save
    assert not {"embed_tokens", "lm_head"} & set(config.target_modules)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = tiny_model[1](["The quick brown fox jumps over the lazy dog."], return_tensors="pt")
    model(**batch, labels=batch["input_ids"]).loss.backward()
    optimizer.step()
    embedding = model.get_input_embeddings().weight
    assert not torch.equal(embedding, base_embedding)  # the embeddings did train
    assert torch.equal(embedding, model.get_output_embeddings().weight)

    model.save_pretrained_merged(str(tmp_path), save_method="merged_16bit")  # what continued pretraining saves
    merged = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert torch.equal(merged.get_input_embeddings().weight, embedding.detach().bfloat16().float())
    assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight


# ---------------------------------------------------------------- saving
def test_save_lora_and_merged_16bit(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny_model
    lora = lora_copy(tiny_model, r=8, target_modules=["q_proj", "v_proj"])
    for layer in lora.base_model.model.model.layers[:6]:  # a non-trivial merge
        torch.nn.init.normal_(layer.self_attn.q_proj.lora_B["default"].weight, std=0.02)
        torch.nn.init.normal_(layer.self_attn.v_proj.lora_B["default"].weight, std=0.02)

    lora.save_pretrained_merged(str(tmp_path / "adapter"), tokenizer, save_method="lora")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8
    assert (tmp_path / "adapter" / "tokenizer.json").is_file()

    lora.save_pretrained_merged(str(tmp_path / "merged"), tokenizer, save_method="merged_16bit")
    assert saved_dtypes(tmp_path / "merged" / "model.safetensors") == {torch.bfloat16}
    assert hasattr(lora.base_model.model.model.layers[0].self_attn.q_proj, "lora_A")  # the original is intact

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_merged, model.model.layers[0].self_attn.q_proj.weight, atol=1e-3)
    prompt = "What is the capital of France?"
    assert chat(merged, tokenizer, prompt, max_new_tokens=8) == chat(lora, tokenizer, prompt, max_new_tokens=8)


def test_merged_16bit_of_a_full_model_is_16_bit(tiny_model, tmp_path):
    standin.save_pretrained_merged(tiny_model[0], str(tmp_path), save_method="merged_16bit")
    assert saved_dtypes(tmp_path / "model.safetensors") == {torch.bfloat16}


def test_save_pretrained_merged_rejects_other_methods(lora_model, tmp_path):
    with pytest.raises(ValueError, match="merged_4bit"):
        lora_model.save_pretrained_merged(str(tmp_path), save_method="merged_4bit")
    with pytest.raises(ValueError, match="push_to_hub"):
        lora_model.save_pretrained_merged(str(tmp_path), save_method="lora", push_to_hub=True)
    assert not any(tmp_path.iterdir())


def test_for_inference_and_for_training_toggle_modes(tiny_model):
    model, _ = tiny_model
    try:
        FastLanguageModel.for_training(model)
        assert model.training and model.config.use_cache is False
        FastLanguageModel.for_inference(model)
        assert not model.training and model.config.use_cache is True
    finally:
        FastLanguageModel.for_inference(model)


# ---------------------------------------------------------------- cpt_trainer: embedding learning rate
def cpt_trainer(model, tokenizer, tmp_path, **kwargs):
    args = UnslothTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, weight_decay=0.01,
                                    max_steps=1, report_to="none", optim="adamw_torch", max_length=32,
                                    dataset_text_field="text", **precision_args(), **kwargs)
    data = Dataset.from_list([{"text": "def f(x):\n    return x\n"}, {"text": "import os\n"}])
    return UnslothTrainer(model=model, processing_class=tokenizer, train_dataset=data, args=args)


def test_embedding_parameter_names(tiny_model, lora_model):
    model, _ = tiny_model
    assert embedding_parameter_names(model) == {"model.embed_tokens.weight"}  # tied: one parameter
    assert embedding_parameter_names(lora_model) == set()  # frozen embeddings do not count


def test_embeddings_get_their_own_learning_rate(tiny_model, tmp_path):
    model = lora_copy(tiny_model, r=8, target_modules=EMBED_TARGETS)
    names = embedding_parameter_names(model)
    assert names == {"base_model.model.model.embed_tokens.modules_to_save.default.weight"}
    trainer = cpt_trainer(model, tiny_model[1], tmp_path, embedding_learning_rate=1e-6)
    optimizer = trainer.create_optimizer()
    assert sorted({group["lr"] for group in optimizer.param_groups}) == [1e-6, 1e-4]
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(grouped) == sorted(trainable)  # each trainable parameter in exactly one group
    embed_ids = {id(p) for g in optimizer.param_groups if g["lr"] == 1e-6 for p in g["params"]}
    assert {trainable[i] for i in embed_ids} == names
    assert trainer.create_optimizer() is optimizer


def test_embedding_learning_rate_without_trainable_embeddings_raises(lora_model, tiny_model, tmp_path):
    trainer = cpt_trainer(lora_model, tiny_model[1], tmp_path, embedding_learning_rate=1e-6)
    with pytest.raises(ValueError, match="embed_tokens"):
        trainer.create_optimizer()


def test_without_embedding_learning_rate_one_lr(lora_model, tiny_model, tmp_path):
    optimizer = cpt_trainer(lora_model, tiny_model[1], tmp_path).create_optimizer()
    assert {group["lr"] for group in optimizer.param_groups} == {1e-4}


def test_the_max_length_warning_is_dropped_and_others_kept(caplog):
    import logging

    from unsloth_course import backend

    backend.quiet_max_length_warning()  # idempotent: one filter
    logger = logging.getLogger("transformers.generation.utils")
    assert sum(isinstance(f, backend._DropMessages) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="transformers.generation.utils"):
        logger.warning("Both `max_new_tokens` (=96) and `max_length`(=8192) seem to have been set.")
        logger.warning("Setting `pad_token_id` to `eos_token_id`")
    assert [r.getMessage() for r in caplog.records] == ["Setting `pad_token_id` to `eos_token_id`"]


def test_an_adapter_folder_reloads_with_its_trained_embeddings(tiny_model, tmp_path):
    """CPT trains the (tied) embeddings as modules_to_save; reloading the adapter folder must bring them back."""
    import copy

    import torch

    from unsloth_course.recipes import LORA_TARGETS
    from unsloth_course.standin import PlainFastLanguageModel

    base, tokenizer = tiny_model
    model = PlainFastLanguageModel.get_peft_model(copy.deepcopy(base), r=8,
                                                  target_modules=list(LORA_TARGETS) + ["embed_tokens", "lm_head"])
    with torch.no_grad():  # stand-in for training: move the trainable embedding copy and one LoRA B matrix
        model.get_input_embeddings().weight.add_(0.01)
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(0.02)
    model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    reloaded, reloaded_tokenizer = PlainFastLanguageModel.from_pretrained(str(tmp_path / "adapter"), max_seq_length=128)
    assert torch.equal(reloaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert not torch.equal(reloaded.get_input_embeddings().weight, base.get_input_embeddings().weight)
    ids = tokenizer("def add(a, b):", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
    assert reloaded_tokenizer.eos_token == tokenizer.eos_token and reloaded.max_seq_length == 128
