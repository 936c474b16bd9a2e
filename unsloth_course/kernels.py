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

`set_grpo_sequence_packing(False)` turns off Unsloth's GRPO sequence packing (its UNSLOTH_GRPO_SEQ_PACKING), which
checks its packed log-probabilities against one forward pass per completion whenever the packed length grows.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

import torch

from .settings import env_flag

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
    if _installed or not env_flag("UNSLOTH_COURSE_VARLEN_GQA", default=True):
        return None
    if varlen_gqa_status() != "needed":
        return None
    import torch.nn.attention.varlen as varlen

    varlen.varlen_attn = with_enable_gqa(varlen.varlen_attn)
    _installed = True
    return (f"torch {torch.__version__}: varlen_attn given enable_gqa, so Unsloth packs padding-free batches "
            "with one flash-varlen kernel (UNSLOTH_COURSE_VARLEN_GQA=0: one SDPA call per packed example)")


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


__all__ = ["install_varlen_gqa", "set_grpo_sequence_packing", "varlen_gqa_status", "with_enable_gqa"]
