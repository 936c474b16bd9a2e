"""Attention-kernel compatibility: give Unsloth torch's varlen flash kernel on torch 2.11 for GQA models.

Packed, padding-free batches (SFT/CPT `packing=True` with bfd rows, and Unsloth's GRPO sequence packing) need an
attention kernel that keeps the packed examples apart. Without flash-attn or xformers, Unsloth uses
`torch.nn.attention.varlen.varlen_attn`, but only when that function takes `enable_gqa` (torch >= 2.12;
unsloth/utils/attention_dispatch.py `_load_torch_varlen_attn`). torch 2.11's `varlen_attn` lacks the argument
although the flash kernel under it (`aten._flash_attention_forward`/`_backward`) handles grouped-query attention
itself, as SDPA's flash path does. SmolLM2-135M has 9 query and 3 key/value heads, so on torch 2.11 Unsloth falls
back to one SDPA call per packed example: on the H100 its LoRA step on bfd rows took 2.8-5.4 s instead of ~0.3 s.

`install_varlen_gqa()` wraps torch 2.11's `varlen_attn` in a function that takes `enable_gqa` (checking the head
counts as torch 2.12 does) and calls the same custom op. It must run before `import unsloth`; the backend does so.
UNSLOTH_COURSE_VARLEN_GQA=0 turns it off (the bench compares both).

`install_grouped_decode()` (after `import unsloth`) targets Unsloth's batched one-token decode (GRPO generation):
there it calls SDPA with `enable_gqa=True` and a padding mask and keeps it off cuDNN on sm90/sm100; SDPA's GQA runs
only on the flash and math kernels (torch's SDPA docstring), and flash takes no mask, so the math kernel runs: it
copies every key/value head out per query head and runs two bmm (one torch-profiled 512-completion GRPO step on the
H200: copies 31% and bmm 22% of its GPU time). With one query token, the query heads that share a key/value head can
instead be the query positions of one SDPA call without GQA (no causal mask between them), which the memory-efficient
kernel runs reading each key/value head once: the same attention. Opt-in (UNSLOTH_COURSE_GQA_DECODE=1) until
a GRPO run on the GPU has measured it: so far it is checked against SDPA's GQA on CUDA in bf16 only.

`set_grpo_sequence_packing(False)` turns off Unsloth's GRPO sequence packing (its UNSLOTH_GRPO_SEQ_PACKING), which
checks its packed log-probabilities against one forward pass per completion whenever the packed length grows.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

import torch

from unsloth_course import settings

_installed = False


def varlen_gqa_status(varlen_attn: Any | None = None) -> str:
    """Why the shim applies or not: "needed", "native" (torch >= 2.12), "no-varlen", "no-window", "no-cuda"."""
    if varlen_attn is None:
        try:
            from torch.nn.attention.varlen import varlen_attn
        except Exception:
            return "no-varlen"
    params = inspect.signature(varlen_attn).parameters
    if "enable_gqa" in params:
        return "native"
    if "window_size" not in params:
        return "no-window"  # Unsloth needs window_size too (torch < 2.11): nothing to gain
    if not torch.cuda.is_available():
        return "no-cuda"
    return "needed"


def with_enable_gqa(varlen_attn: Any):
    """torch 2.11's `varlen_attn` with torch 2.12's `enable_gqa` argument and head-count checks."""

    def varlen_attn_gqa(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, enable_gqa: bool = False,
                        **kwargs):
        heads_q, heads_kv = query.size(1), key.size(1)
        if not enable_gqa and heads_q != heads_kv:
            raise ValueError(f"varlen_attn: query has {heads_q} heads and key/value {heads_kv}; "
                             "pass enable_gqa=True for grouped-query attention")
        if heads_q % heads_kv:
            raise ValueError(f"varlen_attn: {heads_q} query heads are not a multiple of {heads_kv} key/value heads")
        return varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kwargs)

    varlen_attn_gqa.__wrapped__ = varlen_attn
    params = list(inspect.signature(varlen_attn).parameters.values())
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params))
    params.insert(at, inspect.Parameter("enable_gqa", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool))
    varlen_attn_gqa.__signature__ = inspect.Signature(params)  # what Unsloth inspects
    varlen_attn_gqa.__doc__ = varlen_attn.__doc__
    return varlen_attn_gqa


def install_varlen_gqa() -> str | None:
    """Install the wrapper where torch 2.11 needs it; returns a one-line notice when installed, else None."""
    global _installed
    if _installed or not settings.varlen_gqa():
        return None
    if varlen_gqa_status() != "needed":
        return None
    import torch.nn.attention.varlen as varlen

    varlen.varlen_attn = with_enable_gqa(varlen.varlen_attn)
    _installed = True
    return (f"torch {torch.__version__}: varlen_attn given enable_gqa, so Unsloth packs padding-free batches "
            "with one flash-varlen kernel (UNSLOTH_COURSE_VARLEN_GQA=0: one SDPA call per packed example)")


def grouped_decode_sdpa(sdpa: Any):
    """`sdpa` (F.scaled_dot_product_attention's signature) with one-token GQA calls run as grouped queries.

    A query (B, H, 1, D) over keys/values (B, Hkv, S, D), H = G x Hkv, becomes (B, Hkv, G, D): query head
    h = kv x G + g is the one SDPA's GQA pairs with key/value head h // G. A mask (B, 1, 1, S) or (B, 1, S)-like
    broadcasts over the G rows as it did over the heads; without a causal mask the G rows do not see each other.
    Other calls go to `sdpa` unchanged.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # not cuDNN: Unsloth keeps one-token decode off it on sm90/sm100 (unsloth/utils/attention_dispatch.py)
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

    def sdpa_grouped(query, key, value, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                     scale: float | None = None, enable_gqa: bool = False):
        heads, kv_heads = query.size(1), key.size(1)
        grouped = (enable_gqa and not is_causal and dropout_p == 0.0 and query.dim() == 4 and query.size(2) == 1
                   and heads != kv_heads and heads % kv_heads == 0
                   and (attn_mask is None or (attn_mask.dim() == 4 and attn_mask.size(1) == 1
                                              and attn_mask.size(2) == 1)))
        if not grouped:
            return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, enable_gqa=enable_gqa)
        batch, _, _, head_dim = query.shape
        rows = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)
        with sdpa_kernel(backends):
            out = torch.nn.functional.scaled_dot_product_attention(rows, key, value, attn_mask=attn_mask,
                                                                   scale=scale)
        return out.reshape(batch, heads, 1, head_dim)

    sdpa_grouped.__wrapped__ = sdpa
    sdpa_grouped.__doc__ = (sdpa.__doc__ or "") + "\n(unsloth_course: one-token GQA decode as grouped queries)"
    return sdpa_grouped


_DECODE_SDPA_NAME = "scaled_dot_product_attention"


def install_grouped_decode() -> str | None:
    """Give Unsloth's decode functions `grouped_decode_sdpa`; returns a one-line notice when installed, else None.

    Unsloth's model modules (unsloth.models.llama, ...) call the module global `scaled_dot_product_attention`, its
    attention_dispatch.decode_scaled_dot_product_attention, at every decode step: each one holding it gets the
    wrapper. CUDA only, after `import unsloth`, with UNSLOTH_COURSE_GQA_DECODE=1.
    """
    if not settings.gqa_decode() or not torch.cuda.is_available():
        return None
    dispatch = sys.modules.get("unsloth.utils.attention_dispatch")
    original = getattr(dispatch, "decode_scaled_dot_product_attention", None) if dispatch else None
    if original is None:
        return None
    wrapper = None
    patched = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("unsloth.models."):
            continue
        namespace = vars(module)
        current = namespace.get(_DECODE_SDPA_NAME)
        if current is original:
            wrapper = wrapper or grouped_decode_sdpa(original)
            namespace[_DECODE_SDPA_NAME] = wrapper
            patched.append(name)
        elif getattr(current, "__wrapped__", None) is original:
            patched.append(name)  # installed before
    if not patched:
        return None
    return (f"one-token GQA decode runs as grouped queries ({', '.join(sorted(patched))}): one memory-efficient "
            "SDPA call per layer instead of copying key/value heads (UNSLOTH_COURSE_GQA_DECODE=1)")


GRPO_PACKING_FLAG = "UNSLOTH_GRPO_SEQ_PACKING_ON"  # module constant Unsloth derives from UNSLOTH_GRPO_SEQ_PACKING


def set_grpo_sequence_packing(enabled: bool, trainer: Any = None) -> list[str]:
    """Turn Unsloth's GRPO sequence packing (and its PrefixGrouper, which rides on it) on or off in this process.

    Unsloth packs each GRPO batch into one varlen forward and checks it against a forward per completion (128
    forwards for a 128-completion batch) whenever the packed length grows past what it checked; on the H100 those
    steps took 18-51 s against ~3 s. unsloth_zoo reads UNSLOTH_GRPO_SEQ_PACKING at every call, but Unsloth copies it
    into a constant of its generated trainer module at import, so that constant is set too: in every loaded module
    and in the globals of `trainer`'s methods (the generated module is registered under a name like
    "UnslothGRPOTrainer"). Returns where it changed something (nothing without Unsloth).
    """
    os.environ["UNSLOTH_GRPO_SEQ_PACKING"] = "1" if enabled else "0"
    namespaces = {name: vars(module) for name, module in list(sys.modules.items()) if module is not None}
    for cls in type(trainer).__mro__ if trainer is not None else ():
        for value in vars(cls).values():
            if inspect.isfunction(value):
                namespaces.setdefault(value.__globals__.get("__name__", cls.__name__), value.__globals__)
    changed = []
    for name, namespace in namespaces.items():  # __dict__ lookups: getattr on a lazy module would import things
        if isinstance(namespace.get(GRPO_PACKING_FLAG), bool):
            namespace[GRPO_PACKING_FLAG] = enabled
            changed.append(name)
    grouper = sys.modules.get("unsloth.utils.prefix_grouper")
    if grouper is not None and isinstance(vars(grouper).get("_ENABLED"), bool):
        grouper._ENABLED = enabled and os.environ.get("UNSLOTH_GRPO_PREFIX_GROUPER", "1").lower() not in (
            "0", "false", "no", "off")
        changed.append(grouper.__name__)
    return changed


__all__ = ["grouped_decode_sdpa", "install_grouped_decode", "install_varlen_gqa", "set_grpo_sequence_packing",
           "varlen_gqa_status", "with_enable_gqa"]
