"""The CPU stand-in for Unsloth: transformers + PEFT + TRL behind Unsloth's API.

Unsloth needs a CUDA GPU. Everywhere else the course runs the same notebook code through these classes:
`PlainFastLanguageModel` (Unsloth's `FastLanguageModel` signatures: `from_pretrained`, `get_peft_model`,
`for_inference`, `for_training`, `save_pretrained_merged`) and `UnslothTrainer` / `UnslothTrainingArguments`
(continued pretraining with its own embedding learning rate). Where Unsloth behaves in a way that matters for
what the course teaches, the stand-in does the same: `r=0` is rejected, embeddings in `target_modules` train in
full via `modules_to_save`, full fine-tuning keeps bf16 weights unless `float32_mixed_precision=True`, and the
gradient-checkpointing mode is chosen at load.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from unsloth_course.hardware import default_dtype, is_bfloat16_supported, report_once
from unsloth_course.models import DEFAULT_MODEL, fix_special_tokens, resolve_model, save_adapters_with_hub_ids
from unsloth_course.recipes import LORA_TARGETS

EMBEDDING_MODULES = ("embed_tokens", "lm_head")


def check_rank(r: Any) -> None:
    """Unsloth's rule: a LoRA rank is a positive integer (r=0 does not mean full fine-tuning)."""
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
        report_once("flex", "attn_implementation='flex_attention' cannot train on a CPU (no backward there): "
                            "using sdpa")
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
        float32_mixed_precision: bool | None = None,
        **kwargs: Any,
    ):
        if kwargs.get("fast_inference"):
            report_once("vllm", "fast_inference (vLLM) is not available on the plain backend: using model.generate")
        if full_finetuning and (load_in_4bit or load_in_8bit):
            report_once("ft4", "full_finetuning=True: 4-bit/8-bit loading switched off (as Unsloth does)")
            load_in_4bit = load_in_8bit = False
        if dtype == torch.float16 and not torch.cuda.is_available():
            report_once("dtype", "dtype=float16 requested, but a CPU has no fast fp16: using float32")
            dtype = torch.float32
        dtype = dtype or default_dtype()
        if dtype == torch.bfloat16 and torch.cuda.is_available() and not is_bfloat16_supported():
            report_once("bf16", "this GPU has no bf16 (e.g. a T4): using float16")
            dtype = torch.float16
        if full_finetuning:
            dtype = _full_finetuning_dtype(dtype, float32_mixed_precision)
        if load_in_4bit or load_in_8bit:
            bits = 4 if load_in_4bit else 8
            report_once("kbit", f"load_in_{bits}bit needs bitsandbytes on CUDA with Unsloth; the plain backend "
                        f"loads {str(dtype).replace('torch.', '')} weights instead")
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
            fix_special_tokens(tokenizer, model)
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
        target_modules: list[str] | str = LORA_TARGETS,
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
        check_rank(r)
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


def _full_finetuning_dtype(dtype: torch.dtype, float32_mixed_precision: bool | None) -> torch.dtype:
    """The weights' dtype for full fine-tuning, as Unsloth chooses it (unsloth_zoo's prepare_model_for_training).

    fp16 (a T4): fp32 weights, fp16 only in the autocast compute. bf16: bf16 weights unless
    float32_mixed_precision=True keeps fp32 master weights; in bf16 an update smaller than about 1/256 of a
    weight rounds away, so at full fine-tuning's small learning rates most weights never change.
    """
    if dtype == torch.float16 or (dtype == torch.bfloat16 and float32_mixed_precision):
        return torch.float32
    if dtype == torch.bfloat16:
        report_once("bf16-full", "bf16 full fine-tuning keeps bf16 weights, where small updates round away; "
                    "float32_mixed_precision=True keeps fp32 master weights (as Unsloth advises)")
    return dtype


def _enable_checkpointing(model) -> None:
    """Gradient checkpointing ("unsloth" means Unsloth's offloaded variant; here the standard one)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()


def save_pretrained_merged(model, save_directory: str, tokenizer=None, save_method: str = "merged_16bit",
                           dtype: torch.dtype | None = None, **kwargs: Any) -> None:
    """Unsloth's save_pretrained_merged for the plain backend: "lora" saves the adapter only;
    "merged_16bit" merges LoRA into the base weights and saves a 16-bit safetensors checkpoint (bfloat16, or
    float16 on a GPU without bf16), or in `dtype` when given (as Unsloth's dtype=torch.float32 widens it)."""
    allowed = ("lora", "merged_16bit")
    if save_method not in allowed:
        raise ValueError(f"save_method={save_method!r}; the plain backend supports {allowed}")
    if kwargs.get("push_to_hub"):
        raise ValueError("use push_to_hub_merged to upload; save_pretrained_merged saves locally")
    if save_method == "lora":
        model.save_pretrained(save_directory, safe_serialization=True)
    else:
        merged = copy.deepcopy(model)
        if hasattr(merged, "merge_and_unload"):  # LoRA: W + (alpha/r) B A; a full fine-tune has nothing to merge
            merged = merged.merge_and_unload()
        half = torch.bfloat16 if (is_bfloat16_supported() or not torch.cuda.is_available()) else torch.float16
        merged.to(dtype or half).save_pretrained(save_directory, safe_serialization=True)
        del merged
    if tokenizer is not None:
        tokenizer.save_pretrained(save_directory)


def _attach_saving(model) -> None:
    model.save_pretrained_merged = types.MethodType(save_pretrained_merged, model)
    save_adapters_with_hub_ids(model)  # a LoRA model's saved adapters name the Hub id of their base


@dataclass
class UnslothTrainingArguments(SFTConfig):
    """SFTConfig plus `embedding_learning_rate` (None: embeddings train at `learning_rate`)."""

    embedding_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate for embed_tokens / lm_head (continued pretraining)."}
    )


def embedding_parameter_names(model) -> set[str]:
    """Trainable parameters that are the input embeddings or the output head (or their saved copies)."""
    ids = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        module = getattr(model, getter, lambda: None)()
        if module is not None and getattr(module, "weight", None) is not None:
            ids.add(id(module.weight))
    names = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        saved_copy = "modules_to_save" in name and ("embed_tokens" in name or "lm_head" in name)
        if saved_copy or id(param) in ids:
            names.add(name)
    return names


class UnslothTrainer(SFTTrainer):
    """SFTTrainer whose optimizer gives embeddings their own learning rate."""

    def create_optimizer(self, model=None):
        lr_embed = getattr(self.args, "embedding_learning_rate", None)
        if lr_embed is None or self.optimizer is not None:
            return super().create_optimizer()
        target = model if model is not None else self.model
        embed_names = embedding_parameter_names(target)
        if not embed_names:
            raise ValueError("embedding_learning_rate is set but no embedding parameter trains; add "
                             "'embed_tokens' and 'lm_head' to target_modules (or modules_to_save)")
        decay = set(self.get_decay_parameter_names(target))
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in target.named_parameters():
            if param.requires_grad:
                groups.setdefault((name in embed_names, name in decay), []).append(param)
        optimizer_cls, optimizer_kwargs = SFTTrainer.get_optimizer_cls_and_kwargs(self.args, target)
        param_groups = [
            {
                "params": params,
                "lr": lr_embed if is_embed else self.args.learning_rate,
                "weight_decay": self.args.weight_decay if decays else 0.0,
            }
            for (is_embed, decays), params in sorted(groups.items())
        ]
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer
