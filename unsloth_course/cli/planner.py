"""GPU memory planner: will this model train on this GPU, and with which batch and sequence length?

`plan()` estimates training memory from a model's config alone (no weights, no GPU), so it runs offline:

    >>> from unsloth_course.cli.planner import plan
    >>> print(plan("meta-llama/Llama-3.1-8B-Instruct", "qlora", gpu_gb=16).report())

What it models is the plain backend's training step (transformers + PEFT, as `unsloth_course.backend` runs it
without Unsloth): bf16 weights, bf16 autocast, PEFT LoRA adapters in float32 (PEFT's default
`autocast_adapter_dtype=True`), non-reentrant gradient checkpointing, SDPA attention without padding mask, and
transformers' causal-LM loss. Unsloth needs less for the same settings (its gradient checkpointing offloads
the layer inputs to CPU RAM and its fused, chunked cross-entropy never materializes the full fp32 logits), so
for Unsloth the estimate is an upper bound. `ASSUMPTIONS` lists every modelling choice;
`python -m tools.verify_planner` compares the estimate with measured peak memory on a GPU.

Units: GB = 1e9 bytes everywhere (as `nvidia-smi`-style "16 GB" cards and `unsloth_course.metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

GB = 1e9
TECHNIQUES = ("full", "lora", "qlora", "dpo", "grpo", "cpt")
OPTIMIZERS = ("adamw_8bit", "adamw")
BATCH_GRID = (1, 2, 4, 8, 16, 32, 64)
SEQ_GRID = (256, 512, 1024, 2048, 4096, 8192, 16384)
STANDARD_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _config(model_type: str, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
            vocab: int, tied: bool, max_positions: int, **extra: Any) -> dict[str, Any]:
    return {"model_type": model_type, "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": vocab, "tie_word_embeddings": tied, "max_position_embeddings": max_positions,
            **extra}


# Public architecture hyperparameters (from each model's config.json), so the planner needs no download.
# Rope scaling is left out: it changes no parameter and no memory.
_LLAMA_31_8B = _config("llama", 4096, 14336, 32, 32, 8, 128256, False, 131072, rms_norm_eps=1e-5,
                       rope_theta=500000.0)
_MISTRAL_7B_V03 = _config("mistral", 4096, 14336, 32, 32, 8, 32768, False, 32768, head_dim=128,
                          rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=None)
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": _config("llama", 576, 1536, 30, 9, 3, 49152, True, 8192,
                                                   rms_norm_eps=1e-5, rope_theta=100000.0),
    "meta-llama/Llama-3.1-8B": _LLAMA_31_8B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA_31_8B,
    "microsoft/Phi-3.5-mini-instruct": _config("phi3", 3072, 8192, 32, 32, 32, 32064, False, 131072,
                                               original_max_position_embeddings=4096, rms_norm_eps=1e-5,
                                               rope_theta=10000.0, pad_token_id=32000),
    "mistralai/Mistral-7B-v0.3": _MISTRAL_7B_V03,
    "mistralai/Mistral-7B-Instruct-v0.3": _MISTRAL_7B_V03,
    "Qwen/Qwen2.5-1.5B-Instruct": _config("qwen2", 1536, 8960, 28, 12, 2, 151936, True, 32768,
                                          rms_norm_eps=1e-6, rope_theta=1000000.0),
}
# Unsloth's pre-quantized uploads have the same architecture as the originals.
ALIASES = {
    "unsloth/SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "unsloth/Meta-Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "unsloth/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "unsloth/Meta-Llama-3.1-8B-bnb-4bit": "meta-llama/Llama-3.1-8B",
    "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit": "meta-llama/Llama-3.1-8B-Instruct",
    "unsloth/Phi-3.5-mini-instruct": "microsoft/Phi-3.5-mini-instruct",
    "unsloth/mistral-7b-v0.3": "mistralai/Mistral-7B-v0.3",
    "unsloth/mistral-7b-instruct-v0.3": "mistralai/Mistral-7B-Instruct-v0.3",
    "unsloth/Qwen2.5-1.5B-Instruct": "Qwen/Qwen2.5-1.5B-Instruct",
}
# Architectures whose parameter layout `Arch` reproduces exactly (tested against transformers on the meta
# device); any other model_type is counted as a Llama-style decoder and flagged as approximate.
EXACT_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")

# ------------------------------------------------------------------ constants of the memory model
CUDA_CONTEXT_GB = 0.5     # CUDA context + libraries, outside PyTorch's allocator (~0.3-0.6 GB by GPU/driver)
WORKSPACE_GB = 0.1        # cuBLAS/cuDNN workspaces and small buffers inside the allocator
FRAGMENTATION = 0.05      # caching-allocator slack: reserved exceeds allocated by ~5%
# 4-bit values + double-quantized absmax (one 8-bit scale per 64 values, one fp32 per 256 scales)
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
NF4_NO_DOUBLE_QUANT = 0.5 + 4 / 64
ADAPTER_BYTES = 4         # PEFT keeps LoRA weights in fp32 on a bf16 base (autocast_adapter_dtype=True)

ASSUMPTIONS = (
    ("weights in bf16/fp16 (dtype_bytes=2); QLoRA: decoder Linear layers in NF4 with double quantization "
    f"({NF4_BYTES_PER_PARAM:.4f} B/param), embeddings, norms and lm_head stay 16-bit (bitsandbytes skips "
    "lm_head)"),
    ("LoRA adapter r*(in+out) per targeted Linear, kept in fp32 (PEFT's autocast_adapter_dtype); only "
    "adapters have gradients (fp32) and optimizer state"),
    ("full fine-tuning: pure 16-bit training as the Trainer does with bf16 weights: 16-bit gradients, AdamW "
    "states in the parameter dtype (2 x dtype_bytes), no fp32 master copy unless master_weights=True "
    "(then +4 B master, states fp32: 8 B)"),
    ("adamw_8bit (bitsandbytes): 2 B/param of state (two 8-bit moments); adamw: two moments in the parameter "
    "dtype (fp32 adapters: 8 B/param)"),
    ("activations: bf16 autocast, SDPA flash/memory-efficient attention (O(seq) memory, no padding mask); "
    "per layer the tensors autograd saves (a frozen Linear saves nothing, each LoRA adapter a 16-bit copy of "
    "its input, RMSNorm its fp32 input, attention q/k/v/out, the MLP gate/SiLU/up) plus a backward transient "
    "fitted to measured peaks; non-reentrant gradient checkpointing keeps one bf16 hidden state per layer "
    "and recomputes one layer at a time, without it every layer's saved tensors are kept; QLoRA adds one "
    "dequantized 16-bit weight"),
    ("peak = weights + adapters + optimizer states + the largest of: backward (gradients + activations), "
    "optimizer step (gradients + torch AdamW's foreach temporaries, one copy of the trainable parameters; "
    "none for 8-bit AdamW), GRPO generation (KV cache)"),
    ("loss: transformers' ForCausalLMLoss upcasts all logits to fp32; the peak at the start of the backward "
    "holds ~12 B per token and vocab entry (fp32 log-softmax, its gradient, the fp32 logits gradient)"),
    ("dpo: chosen and rejected run as one 2x batch, the reference model is the adapter-free base (no copy); "
    "grpo: batch counts completions, plus a bf16 KV cache for generation; cpt: embed_tokens and lm_head "
    "trained whole (PEFT modules_to_save: a 16-bit trainable copy, its gradient and optimizer state)"),
    (f"fixed: CUDA context {CUDA_CONTEXT_GB} GB (not in torch.cuda.max_memory_allocated), workspaces "
    f"{WORKSPACE_GB} GB, allocator fragmentation {FRAGMENTATION:.0%} of allocated memory"),
    ("models the plain backend (transformers + PEFT); Unsloth offloads checkpoints to CPU and chunks the "
    "loss, so it needs less: treat the estimate as an upper bound there"),
)


# ------------------------------------------------------------------ configs
class ConfigUnavailable(RuntimeError):
    """The model's config is neither in KNOWN_CONFIGS nor loadable from the Hub/cache or a local folder."""


def known_config(model_id: str) -> dict[str, Any] | None:
    """The shipped hyperparameters for `model_id` (case-insensitive; Unsloth aliases too), else None."""
    model_id = ALIASES.get(model_id, model_id)
    for name, values in KNOWN_CONFIGS.items():
        if name.lower() == model_id.lower():
            return dict(values)
    return None


def load_config(model_id: str) -> dict[str, Any]:
    """A config dict: KNOWN_CONFIGS first (offline), else AutoConfig.from_pretrained (Hub, cache, folder)."""
    values = known_config(model_id)
    if values is not None:
        return values
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model_id).to_dict()
    except Exception as error:  # offline, unknown id, gated repo, no config.json in the folder...
        known = ", ".join(KNOWN_CONFIGS)
        reason = (str(error).splitlines() or [""])[0][:200]
        raise ConfigUnavailable(
            f"no config for {model_id!r}: it is not one of the shipped configs ({known}) and "
            f"AutoConfig.from_pretrained failed ({type(error).__name__}: {reason}). Pass a local folder with "
            "a config.json, connect to the Hub (and log in for gated models), or call plan() with a config "
            "dict."
        ) from error


def _to_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"expected a transformers config or a dict, got {type(config).__name__}")


def transformers_config(config_or_id: Any):
    """A `transformers.PretrainedConfig` from an id, dict or config (to build a model with `from_config`)."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(config_or_id, PretrainedConfig):
        return config_or_id
    values = load_config(config_or_id) if isinstance(config_or_id, str) else _to_dict(config_or_id)
    values = {k: v for k, v in values.items() if k not in ("architectures", "transformers_version")}
    return AutoConfig.for_model(values.pop("model_type"), **values)


# ------------------------------------------------------------------ architecture
@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class Arch:
    """The hyperparameters that decide parameter count and memory, from a config."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int
    max_position_embeddings: int | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_config(cls, config: Any) -> Arch:
        c = _to_dict(config)
        if "text_config" in c and "hidden_size" not in c:
            raise ValueError(f"{c.get('model_type')}: multimodal configs are not supported; pass its "
                             "text_config")
        missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                               "vocab_size") if c.get(k) is None]
        if missing:
            raise ValueError(f"config lacks {', '.join(missing)} (model_type {c.get('model_type')!r}): "
                             "the planner handles decoder-only causal LMs")
        model_type = c.get("model_type", "llama")
        heads = int(c["num_attention_heads"])
        head_dim = c.get("head_dim") or c["hidden_size"] // heads
        attention_bias = bool(c.get("attention_bias", False))
        return cls(
            model_type=model_type,
            hidden_size=int(c["hidden_size"]),
            intermediate_size=int(c["intermediate_size"]),
            num_hidden_layers=int(c["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(c.get("num_key_value_heads") or heads),
            vocab_size=int(c["vocab_size"]),
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            head_dim=int(head_dim),
            max_position_embeddings=c.get("max_position_embeddings"),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=False if model_type in ("qwen2", "phi3", "mistral") else attention_bias,
            mlp_bias=bool(c.get("mlp_bias", False)) if model_type == "llama" else False,
        )

    @property
    def exact(self) -> bool:
        return self.model_type in EXACT_MODEL_TYPES

    @property
    def fused(self) -> bool:
        """Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj."""
        return self.model_type == "phi3"

    def layer_linears(self) -> list[Linear]:
        """The Linear layers of one decoder layer, named as in the transformers implementation."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        if self.fused:
            return [Linear("qkv_proj", h, q + 2 * kv), Linear("o_proj", q, h),
                    Linear("gate_up_proj", h, 2 * i), Linear("down_proj", i, h)]
        return [Linear("q_proj", h, q, self.qkv_bias), Linear("k_proj", h, kv, self.qkv_bias),
                Linear("v_proj", h, kv, self.qkv_bias), Linear("o_proj", q, h, self.o_bias),
                Linear("gate_proj", h, i, self.mlp_bias), Linear("up_proj", h, i, self.mlp_bias),
                Linear("down_proj", i, h, self.mlp_bias)]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters by part, counted the way the architecture builds them (tied lm_head counted once)."""
        h, L = self.hidden_size, self.num_hidden_layers
        linears = self.layer_linears()
        attention = sum(x.params for x in linears if "proj" in x.name and x.name in
                        ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"))
        mlp = sum(x.params for x in linears) - attention
        norms = 2 * h + (2 * self.head_dim if self.model_type == "qwen3" else 0)  # qwen3: q_norm, k_norm
        counts = {
            "embed_tokens": self.vocab_size * h,
            "attention": L * attention,
            "mlp": L * mlp,
            "norms": L * norms + h,
            "lm_head": 0 if self.tie_word_embeddings else self.vocab_size * h,
        }
        counts["total"] = sum(counts.values())
        return counts

    @property
    def num_parameters(self) -> int:
        return self.parameter_counts()["total"]

    @property
    def linear_parameters(self) -> int:
        """Parameters in the decoder layers' Linear weights (what 4-bit quantization stores in NF4)."""
        return self.num_hidden_layers * sum(x.in_features * x.out_features for x in self.layer_linears())

    def lora_targets(self, target_modules=STANDARD_TARGETS) -> list[str]:
        """`target_modules` translated to this architecture's module names (Phi-3's fused projections)."""
        names = [x.name for x in self.layer_linears()]
        targets: list[str] = []
        for t in target_modules:
            if t in names:
                mapped = t
            elif self.fused and t in ("q_proj", "k_proj", "v_proj"):
                mapped = "qkv_proj"
            elif self.fused and t in ("gate_proj", "up_proj"):
                mapped = "gate_up_proj"
            else:
                continue  # embed_tokens / lm_head (trained whole) or a name this model does not have
            if mapped not in targets:
                targets.append(mapped)
        return targets

    def lora_parameters(self, r: int, target_modules=STANDARD_TARGETS) -> int:
        """r x (in + out) per targeted Linear, over all layers."""
        targets = set(self.lora_targets(target_modules))
        per_layer = sum(r * (x.in_features + x.out_features)
                        for x in self.layer_linears() if x.name in targets)
        return self.num_hidden_layers * per_layer


# ------------------------------------------------------------------ activations
def layer_activation_bytes_per_token(arch: Arch, lora_targets: set[str], lora_r: int,
                                     full: bool = False) -> float:
    """Bytes one decoder layer saves for the backward, per token, in a bf16-autocast training forward.

    Counted from the transformers + PEFT forward (and checked against the tensors autograd saves): each
    RMSNorm saves its fp32 input; a frozen Linear
    saves nothing (its weight gets no gradient), a trained one its 16-bit input (shared by q/k/v and by
    gate/up); each LoRA adapter saves a 16-bit copy of its input (PEFT casts to the fp32 adapter, autocast
    casts back) and its rank-r middle; flash/efficient SDPA saves q, k, v, the output and an fp32 logsumexp
    per head, plus rotary cos/sin; the SiLU-gated MLP saves gate, SiLU(gate) and up; 2h for the residual.
    """
    h, i = arch.hidden_size, arch.intermediate_size
    q, kv = arch.num_attention_heads * arch.head_dim, arch.num_key_value_heads * arch.head_dim
    norms = 2 * 4 * h                                  # fp32 input of each RMSNorm
    base_inputs = 2 * (h + q + h + i) if full else 0  # attention in, o_proj in, MLP in, down_proj in
    attention = 2 * q + 2 * 2 * kv + 2 * q + 4 * arch.num_attention_heads + 4 * arch.head_dim
    mlp = 2 * 3 * i
    lora = sum(2 * x.in_features + 2 * lora_r for x in arch.layer_linears() if x.name in lora_targets)
    return float(norms + base_inputs + attention + mlp + lora + 2 * h)


def layer_backward_transient_bytes_per_token(arch: Arch, full: bool = False) -> float:
    """Gradient buffers alive during one layer's backward beyond what it saved, per token.

    Fitted to measured peaks of the same training step (live tensor storages, tools/verify_planner.py's
    tracker) on Llama-, Qwen2- and Phi-3-shaped layers: with LoRA the MLP's 16-bit and fp32 input gradients
    (PEFT's fp32 casts) dominate, Phi-3's fused gate_up adds one more; full fine-tuning has no fp32 casts.
    """
    h, i = arch.hidden_size, arch.intermediate_size
    if full:
        return float(3.3 * i)
    return float(6.7 * h + 6.2 * i + (1.7 * i if arch.fused else 0))


def logits_peak_bytes_per_token(arch: Arch) -> float:
    """Loss peak per token at the start of the backward: fp32 log-softmax output, its gradient and the fp32
    logits gradient (3 x 4 B per vocab entry; the 16-bit logits are freed by then)."""
    return 12.0 * arch.vocab_size


# ------------------------------------------------------------------ plan
@dataclass
class Plan:
    """A memory estimate for one (model, technique, GPU, batch, seq_len), its verdict and a recommendation."""

    model: str
    technique: str
    gpu_gb: float
    batch: int
    seq_len: int
    optimizer: str
    gradient_checkpointing: bool
    lora_r: int | None
    total_params: int
    trainable_params: int
    breakdown_gb: dict[str, float]
    allocated_gb: float      # what torch.cuda.max_memory_allocated() should show
    total_gb: float          # allocated + fragmentation + CUDA context: what the GPU must hold
    fits: bool
    recommendation: dict[str, int] | None
    exact_architecture: bool
    peak_phase: str = "backward"
    notes: list[str] = field(default_factory=list)

    @property
    def headroom_gb(self) -> float:
        return self.gpu_gb - self.total_gb

    def verdict(self) -> str:
        where = f"batch {self.batch} x seq_len {self.seq_len}"
        if self.fits:
            head = (f"FITS: {self.total_gb:.1f} GB of {self.gpu_gb:g} GB with {where} "
                    f"({self.headroom_gb:.1f} GB free)")
        else:
            head = f"DOES NOT FIT: {self.total_gb:.1f} GB needed, {self.gpu_gb:g} GB available, with {where}"
        rec = self.recommendation
        if rec:
            fixed = "nothing fits as asked; " if rec.get("relaxed") else ""
            head += (f"; {fixed}largest that fits: batch {rec['batch']} x seq_len {rec['seq_len']} "
                     f"({rec['total_gb']:.1f} GB)")
            if rec.get("max_seq_len_at_batch_1"):
                head += f"; at batch 1 up to seq_len {rec['max_seq_len_at_batch_1']}"
        else:
            head += (f"; nothing fits, not even batch 1 x seq_len {min(SEQ_GRID)}: "
                     + ("use qlora, " if self.technique in ("full", "lora") else "")
                     + "a smaller model or a larger GPU")
        return head

    def table(self) -> str:
        rows = list(self.breakdown_gb.items())
        width = max(len(n) for n, _ in rows + [("allocated (tensors)", 0)]) + 2
        lines = [f"{'component':<{width}}{'GB':>8}", "-" * (width + 8)]
        lines += [f"{name:<{width}}{gb:>8.2f}" for name, gb in rows]
        lines += ["-" * (width + 8), f"{'allocated (tensors)':<{width}}{self.allocated_gb:>8.2f}",
                  f"{'total on the GPU':<{width}}{self.total_gb:>8.2f}",
                  f"(peak during the {self.peak_phase})"]
        return "\n".join(lines)

    def report(self) -> str:
        trainable = f"{self.trainable_params:,} trainable of {self.total_params:,} parameters"
        head = [f"model {self.model} ({trainable}), technique {self.technique}, optimizer {self.optimizer}, "
                f"gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}"
                + (f", LoRA r={self.lora_r}" if self.lora_r else "")]
        return "\n".join(head + [self.table(), self.verdict()] + [f"note: {n}" for n in self.notes])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "headroom_gb": round(self.headroom_gb, 3), "verdict": self.verdict()}


def _default_sizes(technique: str) -> tuple[int, int]:
    from unsloth_course.recipes import get_recipe

    recipe = get_recipe("lora" if technique == "qlora" else technique, "full")
    return recipe.per_device_train_batch_size, recipe.max_seq_length


def estimate(arch: Arch, technique: str, batch: int, seq_len: int, lora_r: int = 16,
             optimizer: str = "adamw_8bit", dtype_bytes: int = 2, gradient_checkpointing: bool = True,
             target_modules=STANDARD_TARGETS, master_weights: bool = False, double_quant: bool = True,
             num_generations: int | None = None) -> dict[str, Any]:
    """The breakdown in bytes for one setting (see ASSUMPTIONS); `plan()` wraps it in GB with a verdict."""
    if technique not in TECHNIQUES:
        raise ValueError(f"unknown technique {technique!r}; allowed: {', '.join(TECHNIQUES)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    if dtype_bytes not in (2, 4):
        raise ValueError(f"dtype_bytes={dtype_bytes}: 2 (bf16/fp16) or 4 (fp32)")
    for name, value in (("batch", batch), ("seq_len", seq_len)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    counts = arch.parameter_counts()
    total_params = counts["total"]
    full = technique == "full"
    quantized = technique == "qlora"
    targets = set(arch.lora_targets(target_modules))
    adapter_params = 0 if full else arch.lora_parameters(lora_r, target_modules)

    # weights
    if quantized:
        nf4 = NF4_BYTES_PER_PARAM if double_quant else NF4_NO_DOUBLE_QUANT
        linear = arch.linear_parameters
        weights = linear * nf4 + (total_params - linear) * dtype_bytes
    else:
        weights = total_params * dtype_bytes
    # trainable parameters, their gradients and optimizer states
    def state_bytes(param_bytes: float) -> float:  # two moments, 8-bit (bitsandbytes) or in the param's dtype
        return 2.0 if optimizer == "adamw_8bit" else 2 * param_bytes

    if full:
        trainable = total_params
        grads = total_params * dtype_bytes
        if master_weights and dtype_bytes == 2:
            weights += total_params * 4  # fp32 master copy; states then in fp32 too
            opt = total_params * state_bytes(4)
        else:
            opt = total_params * state_bytes(dtype_bytes)
        step_bytes = 4 if master_weights else dtype_bytes
        step_temp = 0.0 if optimizer == "adamw_8bit" else total_params * step_bytes
    else:
        trainable = adapter_params
        grads = adapter_params * ADAPTER_BYTES
        opt = adapter_params * state_bytes(ADAPTER_BYTES)
        step_temp = 0.0 if optimizer == "adamw_8bit" else adapter_params * ADAPTER_BYTES
        if technique == "cpt":  # embed_tokens (+ untied lm_head) trained whole via modules_to_save
            embed = counts["embed_tokens"] + counts["lm_head"]
            trainable += embed
            weights += embed * dtype_bytes  # the trainable copy beside the frozen original
            grads += embed * dtype_bytes
            opt += embed * state_bytes(dtype_bytes)
            step_temp += 0.0 if optimizer == "adamw_8bit" else embed * dtype_bytes
    adapter = adapter_params * ADAPTER_BYTES

    # activations (see layer_activation_bytes_per_token): the loss peak comes at the start of the backward,
    # the layer peak while a layer is recomputed (checkpointing) or at the first layer's backward
    rows = batch * (2 if technique == "dpo" else 1)  # DPO: chosen + rejected in one batch
    tokens = rows * seq_len
    per_layer = layer_activation_bytes_per_token(arch, set() if full else targets, lora_r, full=full)
    transient = layer_backward_transient_bytes_per_token(arch, full=full)
    loss = logits_peak_bytes_per_token(arch)
    L = arch.num_hidden_layers
    if gradient_checkpointing:  # one bf16 hidden state per layer, one layer's tensors at a time
        activations = tokens * (L * 2 * arch.hidden_size + max(loss, per_layer + transient))
    else:
        activations = tokens * (L * per_layer + max(loss, transient))
    if quantized:  # bitsandbytes dequantizes one weight at a time to 16-bit for the matmul
        activations += max(x.in_features * x.out_features for x in arch.layer_linears()) * dtype_bytes

    # the peak: backward (gradients + activations), optimizer step (gradients + foreach temporaries) or,
    # for GRPO, generation (a 16-bit KV cache for the completions; no gradients then)
    phases = {"backward": grads + activations, "optimizer step": grads + step_temp}
    if technique == "grpo":
        n = max(num_generations or batch, batch)
        phases["generation"] = float(n * seq_len * L * 2 * arch.num_key_value_heads * arch.head_dim * 2
                                     + n * arch.vocab_size * 4)
    peak_phase = max(phases, key=phases.get)
    workspace = WORKSPACE_GB * GB
    breakdown = {"weights": weights, "lora_adapter": adapter, "optimizer": opt, "gradients": grads,
                 "activations": activations}
    if peak_phase == "optimizer step":
        breakdown["activations"] = 0.0  # freed by then
        breakdown["optimizer_step_temp"] = step_temp
    elif peak_phase == "generation":
        breakdown["gradients"] = breakdown["activations"] = 0.0
        breakdown["kv_cache"] = phases["generation"]
    breakdown["workspace"] = workspace
    allocated = sum(breakdown.values())
    fragmentation = allocated * FRAGMENTATION
    context = CUDA_CONTEXT_GB * GB
    breakdown.update(fragmentation=fragmentation, cuda_context=context)
    return {"breakdown": breakdown, "allocated": allocated, "total": allocated + fragmentation + context,
            "total_params": total_params, "trainable_params": trainable, "peak_phase": peak_phase,
            "phases": phases, "activations_backward": activations}


def plan(config_or_id: Any, technique: str = "lora", gpu_gb: float = 16.0, seq_len: int | None = None,
         batch: int | None = None, lora_r: int = 16, optimizer: str = "adamw_8bit", dtype_bytes: int = 2,
         gradient_checkpointing: bool = True, target_modules=STANDARD_TARGETS, master_weights: bool = False,
         model_name: str | None = None, **kwargs: Any) -> Plan:
    """Estimate training memory for a model id, config dict or transformers config; see the module docstring.

    `seq_len`/`batch` default to the technique's recipe (full profile). The recommendation keeps the
    sequence length (given or the recipe's) and takes the largest batch of BATCH_GRID that fits; with only
    `batch` given it keeps the batch and takes the longest SEQ_GRID length instead; when nothing fits that
    way, it is the longest length that fits at batch 1 (marked `relaxed`). It also gives the longest
    SEQ_GRID length that fits at batch 1 (up to the model's max_position_embeddings).
    """
    if gpu_gb <= 0:
        raise ValueError(f"gpu_gb={gpu_gb} must be positive")
    for name, value in (("batch", batch), ("seq_len", seq_len)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if isinstance(config_or_id, str):
        model_name = model_name or config_or_id
        config = load_config(config_or_id)
    else:
        config = _to_dict(config_or_id)
        model_name = model_name or config.get("_name_or_path") or config.get("model_type", "model")
    arch = Arch.from_config(config)
    default_batch, default_seq = _default_sizes(technique) if technique in TECHNIQUES else (2, 512)
    use_batch, use_seq = batch or default_batch, seq_len or default_seq
    common = dict(lora_r=lora_r, optimizer=optimizer, dtype_bytes=dtype_bytes,
                  gradient_checkpointing=gradient_checkpointing, target_modules=target_modules,
                  master_weights=master_weights, **kwargs)
    result = estimate(arch, technique, use_batch, use_seq, **common)

    def total(b: int, s: int) -> float:
        return estimate(arch, technique, b, s, **common)["total"]

    def largest(values, fits) -> int | None:  # memory grows with batch and seq_len: stop at the first miss
        found = None
        for value in values:
            if not fits(value):
                break
            found = value
        return found

    budget = gpu_gb * GB
    cap = arch.max_position_embeddings
    seqs = [s for s in SEQ_GRID if cap is None or s <= cap] or [SEQ_GRID[0]]
    max_seq = largest(seqs, lambda s: total(1, s) <= budget)
    if batch and not seq_len:  # batch fixed: the longest sequence
        rec_batch, rec_seq = batch, largest(seqs, lambda s: total(batch, s) <= budget)
    else:  # sequence length fixed (given or the recipe's): the largest batch
        rec_batch, rec_seq = largest(BATCH_GRID, lambda b: total(b, use_seq) <= budget), use_seq
    relaxed = not (rec_batch and rec_seq)
    if relaxed:  # nothing fits with what was fixed: the longest sequence that fits at batch 1
        rec_batch, rec_seq = (1, max_seq) if max_seq else (None, None)
    recommendation = None
    if rec_batch and rec_seq:
        recommendation = {"batch": rec_batch, "seq_len": rec_seq,
                          "total_gb": round(total(rec_batch, rec_seq) / GB, 3),
                          "max_seq_len_at_batch_1": max_seq, "relaxed": relaxed}
    notes = []
    if not arch.exact:
        notes.append(f"model_type {arch.model_type!r} is counted as a Llama-style decoder: parameter count "
                     "and memory are approximate")
    if technique == "full" and optimizer == "adamw_8bit":
        notes.append("8-bit AdamW needs bitsandbytes on CUDA; with plain AdamW the optimizer needs "
                     f"{2 * dtype_bytes} B/param instead of 2")
    if dtype_bytes == 4:
        notes.append("dtype_bytes=4: weights, gradients and states are fp32; activations are still modelled "
                     "for bf16 autocast (fp32 activations take about twice as much)")
    if technique == "qlora":
        notes.append("QLoRA needs bitsandbytes on CUDA (load_in_4bit=True); on CPU the plain backend loads "
                     "16-bit weights")
    if arch.max_position_embeddings and use_seq > arch.max_position_embeddings:
        notes.append(f"seq_len {use_seq} exceeds the model's max_position_embeddings "
                     f"{arch.max_position_embeddings}")
    return Plan(
        model=str(model_name), technique=technique, gpu_gb=float(gpu_gb), batch=use_batch, seq_len=use_seq,
        optimizer=optimizer, gradient_checkpointing=gradient_checkpointing,
        lora_r=None if technique == "full" else lora_r, total_params=result["total_params"],
        trainable_params=result["trainable_params"],
        breakdown_gb={k: round(v / GB, 3) for k, v in result["breakdown"].items()},
        allocated_gb=round(result["allocated"] / GB, 3), total_gb=round(result["total"] / GB, 3),
        fits=result["total"] <= gpu_gb * GB, recommendation=recommendation,
        exact_architecture=arch.exact, peak_phase=result["peak_phase"], notes=notes,
    )


def count_parameters_meta(config_or_id: Any) -> int:
    """sum(p.numel()) of the real transformers model built on the meta device (allocates nothing)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = transformers_config(config_or_id)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ command line
def add_plan_arguments(parser) -> None:
    """The `unsloth-course plan` options (also `python -m unsloth_course.cli.planner`)."""
    parser.add_argument("--model", required=True,
                        help="model id (shipped configs work offline: " + ", ".join(KNOWN_CONFIGS) + ") or a "
                        "local folder with a config.json; other ids need the Hub")
    parser.add_argument("--technique", choices=TECHNIQUES, default="lora")
    parser.add_argument("--gpu-gb", type=float, default=16.0, help="GPU memory in GB (default 16, a T4)")
    parser.add_argument("--seq-len", type=positive_int_arg, help="sequence length (default: the recipe's)")
    parser.add_argument("--batch", type=positive_int_arg, help="per-device batch (default: the recipe's)")
    parser.add_argument("--lora-r", type=positive_int_arg, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw_8bit")
    parser.add_argument("--no-gradient-checkpointing", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--assumptions", action="store_true", help="also list the modelling assumptions")


def positive_int_arg(text: str) -> int:
    """argparse type for counts: the message names the value (argparse prefixes the option), e.g.
    `argument --max-steps: 'abc' is not a positive integer`."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer (must be >= 1)")
    return value


def run_plan_command(args) -> int:
    """Print the breakdown table and the verdict; exit status 0 when it fits, 1 when not, 2 on no config."""
    import json
    import sys

    try:
        result = plan(args.model, args.technique, gpu_gb=args.gpu_gb, seq_len=args.seq_len, batch=args.batch,
                      lora_r=args.lora_r, optimizer=args.optimizer,
                      gradient_checkpointing=not args.no_gradient_checkpointing)
    except ConfigUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.report())
        if args.assumptions:
            print("assumptions:\n" + "\n".join(f"  - {a}" for a in ASSUMPTIONS))
    return 0 if result.fits else 1


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m unsloth_course.cli.planner",
                                     description="Estimate GPU memory for fine-tuning a model from its "
                                     "config.")
    add_plan_arguments(parser)
    return run_plan_command(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "ASSUMPTIONS",
    "KNOWN_CONFIGS",
    "Arch",
    "ConfigUnavailable",
    "Plan",
    "add_plan_arguments",
    "count_parameters_meta",
    "estimate",
    "known_config",
    "load_config",
    "main",
    "plan",
    "positive_int_arg",
    "run_plan_command",
    "transformers_config",
]
