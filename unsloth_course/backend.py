"""Which backend trains: real Unsloth on CUDA, or a plain transformers + PEFT stand-in with the same API.

`FastLanguageModel` here is Unsloth's class (subclassed only to resolve the offline model) when
`unsloth` imports and CUDA is present, else `PlainFastLanguageModel`. Set UNSLOTH_COURSE_BACKEND=plain
to force the stand-in on a GPU (the benchmark compares both).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .kernels import install_grouped_decode, install_varlen_gqa
from .models import DEFAULT_MODEL, fix_special_tokens, resolve_model
from .settings import env_flag

LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EMBEDDING_MODULES = ("embed_tokens", "lm_head")
_reported: set[str] = set()


def report_once(key: str, message: str) -> None:
    """Print a notice once per process (options that cannot apply here are reported, never ignored)."""
    if key not in _reported:
        _reported.add(key)
        print(message)


T4_MEMORY_GB = 15.0


def emulating_t4() -> bool:
    """UNSLOTH_COURSE_EMULATE_T4=1 on a big GPU: fp16 only and at most 15 GB, like a free Colab T4.

    This is how the course proves that the `full` profiles fit a T4 without one: same code, T4's precision,
    T4's memory (torch.cuda.set_per_process_memory_fraction makes allocations beyond the cap fail with OOM).
    """
    return env_flag("UNSLOTH_COURSE_EMULATE_T4")


def apply_t4_emulation() -> float | None:
    """Cap this process's CUDA memory at 15 GB when emulating a T4; returns the cap in GB (None: no cap)."""
    if not (emulating_t4() and torch.cuda.is_available()):
        return None
    total = torch.cuda.get_device_properties(0).total_memory
    cap = min(T4_MEMORY_GB * 1e9, total)
    torch.cuda.set_per_process_memory_fraction(cap / total)
    report_once("t4", f"UNSLOTH_COURSE_EMULATE_T4: fp16 only, CUDA memory capped at {cap / 1e9:.1f} GB "
                f"of {total / 1e9:.1f} GB")
    return cap / 1e9


def is_bfloat16_supported() -> bool:
    """bf16 needs an Ampere or newer GPU; a T4 has fp16 only, and the CPU path trains in fp32."""
    if emulating_t4():
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def default_dtype() -> torch.dtype:
    """Precision follows the hardware: bf16 where supported, fp16 on older GPUs (T4), fp32 on CPU."""
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if is_bfloat16_supported() else torch.float16


def _try_import_unsloth() -> tuple[Any | None, str]:
    wanted = os.environ.get("UNSLOTH_COURSE_BACKEND", "auto").lower()
    if wanted not in ("auto", "unsloth", "plain"):
        raise ValueError(f"UNSLOTH_COURSE_BACKEND={wanted!r}; allowed: auto, unsloth, plain")
    if wanted == "plain":
        return None, "UNSLOTH_COURSE_BACKEND=plain"
    if not torch.cuda.is_available():
        return None, "no CUDA GPU (Unsloth needs one)"
    if importlib.util.find_spec("unsloth") is None:
        return None, "unsloth is not installed (pip install -e '.[gpu]')"
    notice = install_varlen_gqa()  # before Unsloth reads torch's varlen kernel at import
    if notice:
        report_once("varlen", notice)
    try:
        module = importlib.import_module("unsloth")
    except Exception as error:  # a broken GPU stack must not stop the course: say so and go on
        if wanted == "unsloth":
            raise
        return None, f"unsloth failed to import ({type(error).__name__}: {error})"
    notice = install_grouped_decode()  # Unsloth's decode functions read the module global at every call
    if notice:
        report_once("gqa-decode", notice)
    return module, "unsloth imported on CUDA"


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_max_length_warning() -> None:
    """Drop transformers' "Both `max_new_tokens` and `max_length` seem to have been set" warning.

    Unsloth sets generation_config.max_length to the context size (8192 here; unsloth_zoo's tokenizer_utils), so
    every generate(max_new_tokens=...) logs it: hundreds of lines in one GRPO run. As the warning itself says,
    max_new_tokens takes precedence, which is what the course asks for.
    """
    logger = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages("Both `max_new_tokens`"))


quiet_max_length_warning()
_unsloth, _BACKEND_REASON = _try_import_unsloth()
BACKEND = "unsloth" if _unsloth is not None else "plain"
MEMORY_CAP_GB = apply_t4_emulation()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class BackendInfo:
    """What trains here: backend, device, precision and library versions."""

    backend: str
    reason: str
    device: str
    device_name: str
    dtype: str
    gpu_memory_gb: float | None
    versions: dict[str, str | None] = field(default_factory=dict)
    memory_cap_gb: float | None = None

    def __str__(self) -> str:
        lines = [
            f"backend : {self.backend} ({self.reason})",
            f"device  : {self.device} - {self.device_name}"
            + (f", {self.gpu_memory_gb:.1f} GB" if self.gpu_memory_gb else ""),
            f"dtype   : {self.dtype}"
            + (f" (emulating a T4: fp16, memory capped at {self.memory_cap_gb:.1f} GB)" if self.memory_cap_gb else ""),
            "versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items() if v),
        ]
        return "\n".join(lines)


def backend_info() -> BackendInfo:
    """Which backend, device, dtype and library versions are in use."""
    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    packages = ("unsloth", "unsloth_zoo", "torch", "transformers", "trl", "peft", "datasets", "accelerate")
    return BackendInfo(
        backend=BACKEND,
        reason=_BACKEND_REASON,
        device="cuda" if cuda else "cpu",
        device_name=props.name if props else f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
        dtype=str(default_dtype()).replace("torch.", ""),
        gpu_memory_gb=props.total_memory / 1e9 if props else None,
        versions={p: _version(p) for p in packages},
        memory_cap_gb=MEMORY_CAP_GB,
    )


def _check_rank(r: Any) -> None:
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"LoRA rank r must be an integer, got {r!r}")
    if r <= 0:
        raise ValueError(
            f"LoRA rank r={r} is invalid: r must be > 0. For full fine-tuning do not call get_peft_model; "
            "load with FastLanguageModel.from_pretrained(..., full_finetuning=True). Unsloth rejects r=0 "
            "and has no to_full_finetune()."
        )


def _split_embedding_targets(target_modules, modules_to_save):
    """As Unsloth does: embed_tokens/lm_head in target_modules are trained whole, via modules_to_save."""
    targets = list(target_modules) if not isinstance(target_modules, str) else target_modules
    save = list(modules_to_save or [])
    if not isinstance(targets, str):
        for name in EMBEDDING_MODULES:
            if name in targets:
                targets.remove(name)
                if name not in save:
                    save.append(name)
    return targets, save or None


def _load_adapter_folder(folder: Path, adapter_config: Path, **load_args: Any):
    """Load a LoRA adapter folder as Unsloth does: the base model it names, then PeftModel.from_pretrained
    (trainable). transformers' own adapter loading drops `modules_to_save` such as trained embeddings (CPT)."""
    import json

    from peft import PeftModel
    from transformers import AutoTokenizer

    base_name = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ValueError(f"{adapter_config} names no base_model_name_or_path: cannot tell which model it adapts")
    model, tokenizer = PlainFastLanguageModel.from_pretrained(base_name, **load_args)
    model = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    if (folder / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=load_args["trust_remote_code"])
        tokenizer.model_max_length = load_args["max_seq_length"]
    model.max_seq_length = load_args["max_seq_length"]
    _attach_saving(model)
    return model, tokenizer


def _attention_kernel(requested: str | None) -> str | None:
    """The attention kernel the plain backend can use here: flex attention has no CPU backward, and
    flash_attention_2 needs the flash-attn package; both fall back to SDPA, saying so."""
    if requested == "flex_attention" and not torch.cuda.is_available():
        report_once("flex", "attn_implementation='flex_attention' cannot train on a CPU (no backward there): using sdpa")
        return "sdpa"
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        report_once("fa2", "attn_implementation='flash_attention_2' needs the flash-attn package: using sdpa")
        return "sdpa"
    return requested


class PlainFastLanguageModel:
    """The plain backend: transformers + PEFT behind Unsloth's FastLanguageModel signatures."""

    @staticmethod
    def from_pretrained(
        model_name: str = DEFAULT_MODEL,
        max_seq_length: int = 2048,
        dtype: torch.dtype | None = None,
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        load_in_16bit: bool = False,
        full_finetuning: bool = False,
        token: str | None = None,
        device_map: Any = None,
        trust_remote_code: bool = False,
        use_gradient_checkpointing: bool | str = "unsloth",
        random_state: int = 3407,
        **kwargs: Any,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if kwargs.get("fast_inference"):
            report_once("vllm", "fast_inference (vLLM) is not available on the plain backend: using model.generate")
        if full_finetuning and (load_in_4bit or load_in_8bit):
            report_once("ft4", "full_finetuning=True: 4-bit/8-bit loading switched off (as Unsloth does)")
            load_in_4bit = load_in_8bit = False
        if load_in_4bit or load_in_8bit:
            bits = 4 if load_in_4bit else 8
            report_once("kbit", f"load_in_{bits}bit needs bitsandbytes on CUDA with Unsloth; the plain backend "
                        f"loads {default_dtype()} weights instead")
        if dtype is not None and dtype != torch.float32 and not torch.cuda.is_available():
            report_once("dtype", f"dtype={dtype} requested, but the CPU trains in float32: using float32")
            dtype = torch.float32
        dtype = dtype or default_dtype()
        if dtype == torch.bfloat16 and torch.cuda.is_available() and not is_bfloat16_supported():
            report_once("bf16", "this GPU has no bf16 (e.g. a T4): using float16")
            dtype = torch.float16
        torch.manual_seed(random_state)
        path = resolve_model(model_name)
        adapter_config = Path(path) / "adapter_config.json"
        if adapter_config.is_file():  # a saved LoRA adapter: its base model, then the adapter on top
            return _load_adapter_folder(Path(path), adapter_config, max_seq_length=max_seq_length, dtype=dtype,
                                        token=token, trust_remote_code=trust_remote_code, random_state=random_state)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        kernel = _attention_kernel(kwargs.get("attn_implementation"))
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, token=token, trust_remote_code=trust_remote_code,
            **({"attn_implementation": kernel} if kernel else {}),
        ).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path, token=token, trust_remote_code=trust_remote_code)
        if model_name == DEFAULT_MODEL:
            fix_special_tokens(tokenizer)
        model.max_seq_length = max_seq_length
        tokenizer.model_max_length = max_seq_length
        model._course_full_finetuning = full_finetuning
        if full_finetuning:
            model.requires_grad_(True)
            if use_gradient_checkpointing:
                _enable_checkpointing(model)
        _attach_saving(model)
        return model, tokenizer

    @staticmethod
    def get_peft_model(
        model,
        r: int = 16,
        target_modules: list[str] | str = tuple(LORA_TARGET_MODULES),
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        bias: str = "none",
        layers_to_transform: list[int] | None = None,
        use_gradient_checkpointing: bool | str = "unsloth",
        random_state: int = 3407,
        max_seq_length: int = 2048,
        use_rslora: bool = False,
        modules_to_save: list[str] | None = None,
        init_lora_weights: bool = True,
        loftq_config: dict | None = None,
        **kwargs: Any,
    ):
        from peft import LoraConfig, get_peft_model

        _check_rank(r)
        if getattr(model, "_course_full_finetuning", False):
            raise ValueError("this model was loaded with full_finetuning=True: every weight already trains, "
                             "so adding LoRA adapters makes no sense; load without full_finetuning for LoRA")
        if loftq_config:
            report_once("loftq", "loftq_config needs a quantized base: ignored on the plain backend")
        targets, save = _split_embedding_targets(target_modules, modules_to_save)
        tied = bool(getattr(model.config, "tie_word_embeddings", False))
        if save and tied and set(EMBEDDING_MODULES) <= set(save):
            save = [m for m in save if m != "lm_head"]  # PEFT rebuilds the tied head from embed_tokens
        torch.manual_seed(random_state)
        config = LoraConfig(
            r=r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            bias=bias,
            target_modules=targets,
            layers_to_transform=layers_to_transform,
            use_rslora=use_rslora,
            modules_to_save=save,
            init_lora_weights=init_lora_weights,
            ensure_weight_tying=bool(save and tied and "embed_tokens" in save),
            task_type="CAUSAL_LM",
        )
        if use_gradient_checkpointing:
            _enable_checkpointing(model)
        peft_model = get_peft_model(model, config)
        peft_model.max_seq_length = max_seq_length
        _attach_saving(peft_model)
        return peft_model

    @staticmethod
    def for_inference(model):
        """Eval mode with the KV cache on (Unsloth also switches its fast generation path on)."""
        model.eval()
        model.config.use_cache = True
        return model

    @staticmethod
    def for_training(model, use_gradient_checkpointing: bool = True):
        """Back to training mode after inference."""
        model.train()
        model.config.use_cache = not use_gradient_checkpointing
        return model


def _enable_checkpointing(model) -> None:
    """Gradient checkpointing ("unsloth" means Unsloth's offloaded variant; here the standard one)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()


def save_pretrained_merged(model, save_directory: str, tokenizer=None, save_method: str = "merged_16bit",
                           **kwargs: Any) -> None:
    """Unsloth's save_pretrained_merged for the plain backend: "lora" saves the adapter only;
    "merged_16bit" merges LoRA into the base weights and saves a 16-bit safetensors checkpoint."""
    allowed = ("lora", "merged_16bit")
    if save_method not in allowed:
        raise ValueError(f"save_method={save_method!r}; the plain backend supports {allowed}")
    if kwargs.get("push_to_hub"):
        raise ValueError("use push_to_hub_merged to upload; save_pretrained_merged saves locally")
    if save_method == "lora":
        model.save_pretrained(save_directory, safe_serialization=True)
    else:
        import copy

        merged = copy.deepcopy(model)
        if hasattr(merged, "merge_and_unload"):  # LoRA: W + (alpha/r) B A; a full fine-tune has nothing to merge
            merged = merged.merge_and_unload()
        half = torch.bfloat16 if (is_bfloat16_supported() or not torch.cuda.is_available()) else torch.float16
        merged.to(half).save_pretrained(save_directory, safe_serialization=True)
        del merged
    if tokenizer is not None:
        tokenizer.save_pretrained(save_directory)


def _attach_saving(model) -> None:
    import types

    model.save_pretrained_merged = types.MethodType(save_pretrained_merged, model)


if _unsloth is not None:
    _UnslothFLM = _unsloth.FastLanguageModel

    class FastLanguageModel(_UnslothFLM):  # type: ignore[misc,valid-type]
        """Unsloth's FastLanguageModel; from_pretrained also resolves the offline SmolLM2 checkpoint."""

        @staticmethod
        def from_pretrained(model_name: str = DEFAULT_MODEL, *args: Any, **kwargs: Any):
            if kwargs.get("dtype") is None and not args:
                kwargs["dtype"] = default_dtype()  # Unsloth's own choice, except when emulating a T4 (fp16)
            if kwargs.pop("attn_implementation", None):
                report_once("attn", "attn_implementation is for the plain backend: Unsloth picks its own attention")
            model, tokenizer = _UnslothFLM.from_pretrained(resolve_model(model_name), *args, **kwargs)
            if model_name == DEFAULT_MODEL:
                fix_special_tokens(tokenizer)
            return model, tokenizer

        @staticmethod
        def get_peft_model(model, *args: Any, r: int = 16, **kwargs: Any):
            _check_rank(r)
            return _UnslothFLM.get_peft_model(model, *args, r=r, **kwargs)

    from unsloth import UnslothTrainer, UnslothTrainingArguments  # noqa: E402
else:
    FastLanguageModel = PlainFastLanguageModel  # type: ignore[misc,assignment]
    from .cpt_trainer import UnslothTrainer, UnslothTrainingArguments  # noqa: E402

__all__ = [
    "BACKEND",
    "BackendInfo",
    "FastLanguageModel",
    "PlainFastLanguageModel",
    "UnslothTrainer",
    "UnslothTrainingArguments",
    "backend_info",
    "default_dtype",
    "emulating_t4",
    "is_bfloat16_supported",
    "report_once",
]
