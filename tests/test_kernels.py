import inspect
import os

import pytest
import torch
import torch.nn.functional as F

import unsloth_course.cli.kernels as kernels
from unsloth_course.cli.kernels import install_varlen_gqa, varlen_gqa_status, with_enable_gqa


def torch_2_11_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                           window_size=(-1, -1)):
    """torch 2.11's signature (no enable_gqa); computes attention per segment with SDPA, like the kernel."""
    return per_example_sdpa(query, key, value, cu_seq_q, causal=window_size == (-1, 0), scale=scale)


def torch_2_10_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None):
    raise AssertionError("not called")


def packed(lengths, heads_q=9, heads_kv=3, dim=64, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    total = sum(lengths)
    q = torch.randn(total, heads_q, dim, generator=g).to(device, dtype)
    k, v = (torch.randn(total, heads_kv, dim, generator=g).to(device, dtype) for _ in range(2))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    return q, k, v, cu


def per_example_sdpa(q, k, v, cu, causal=True, scale=None):
    """What Unsloth runs without a varlen kernel: one (causal) GQA SDPA call per packed example."""
    out = []
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qs, ks, vs = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        out.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale,
                                                  enable_gqa=qs.size(1) != ks.size(1))[0].transpose(0, 1))
    return torch.cat(out)


def test_status_reads_the_signature(monkeypatch):
    assert varlen_gqa_status(with_enable_gqa(torch_2_11_varlen_attn)) == "native"
    assert varlen_gqa_status(torch_2_10_varlen_attn) == "no-window"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert varlen_gqa_status(torch_2_11_varlen_attn) == "no-cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert varlen_gqa_status(torch_2_11_varlen_attn) == "needed"


def test_wrapper_has_the_signature_unsloth_checks():
    params = inspect.signature(with_enable_gqa(torch_2_11_varlen_attn)).parameters
    assert {"window_size", "enable_gqa", "scale", "return_aux"} <= set(params)
    assert params["enable_gqa"].kind is inspect.Parameter.KEYWORD_ONLY and params["enable_gqa"].default is False


def test_wrapper_signature_keeps_a_trailing_kwargs_last():
    def varlen_with_kwargs(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1), **extra):
        return query

    params = list(inspect.signature(with_enable_gqa(varlen_with_kwargs)).parameters)
    assert params[-2:] == ["enable_gqa", "extra"]


def test_wrapper_passes_gqa_through_and_checks_heads():
    q, k, v, cu = packed([3, 7, 12])
    wrapped = with_enable_gqa(torch_2_11_varlen_attn)
    out = wrapped(q, k, v, cu, cu, 12, 12, scale=None, window_size=(-1, 0), enable_gqa=True)
    torch.testing.assert_close(out, per_example_sdpa(q, k, v, cu))
    with pytest.raises(ValueError, match="9 heads and key/value 3.*enable_gqa=True"):
        wrapped(q, k, v, cu, cu, 12, 12, window_size=(-1, 0))
    with pytest.raises(ValueError, match="not a multiple"):
        wrapped(q, k[:, :2], v[:, :2], cu, cu, 12, 12, enable_gqa=True)


def test_install_replaces_torch_2_11_varlen_once(monkeypatch):
    import torch.nn.attention.varlen as varlen

    monkeypatch.setattr(varlen, "varlen_attn", torch_2_11_varlen_attn)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kernels, "_installed", False)
    monkeypatch.setenv("UNSLOTH_COURSE_VARLEN_GQA", "0")
    assert install_varlen_gqa() is None and varlen.varlen_attn is torch_2_11_varlen_attn
    monkeypatch.delenv("UNSLOTH_COURSE_VARLEN_GQA")
    notice = install_varlen_gqa()
    assert "enable_gqa" in notice and "UNSLOTH_COURSE_VARLEN_GQA=0" in notice
    assert varlen.varlen_attn.__wrapped__ is torch_2_11_varlen_attn
    assert install_varlen_gqa() is None  # once


def test_install_leaves_newer_torch_alone(monkeypatch):
    import torch.nn.attention.varlen as varlen

    native = with_enable_gqa(torch_2_11_varlen_attn)
    monkeypatch.setattr(varlen, "varlen_attn", native)
    monkeypatch.setattr(kernels, "_installed", False)
    assert install_varlen_gqa() is None and varlen.varlen_attn is native


cuda_varlen = pytest.mark.skipif(
    not torch.cuda.is_available() or varlen_gqa_status() not in ("needed", "native"),
    reason="needs CUDA and torch's varlen_attn with window_size (torch >= 2.11)")


@cuda_varlen
def test_flash_varlen_with_gqa_matches_per_example_sdpa_on_cuda():
    """The kernel the shim unlocks computes what the per-example fallback computes, values and gradients."""
    from torch.nn.attention.varlen import varlen_attn

    if varlen_gqa_status(varlen_attn) == "needed":
        varlen_attn = with_enable_gqa(varlen_attn)
    q, k, v, cu = packed([5, 17, 40, 190], device="cuda", dtype=torch.bfloat16)
    grads = []
    for attend in (lambda *t: varlen_attn(*t, cu, cu, 190, 190, window_size=(-1, 0), enable_gqa=True),
                   lambda *t: per_example_sdpa(*t, cu)):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = attend(*leaves)
        (out.float() * torch.linspace(-1, 1, out.numel(), device="cuda").view_as(out)).sum().backward()
        grads.append((out.detach().float(), *(t.grad.float() for t in leaves)))
    for got, want in zip(*grads):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Unsloth needs CUDA")
def test_unsloth_sees_a_varlen_kernel_on_cuda():
    from unsloth_course.backend import BACKEND

    if BACKEND != "unsloth" or varlen_gqa_status() not in ("needed", "native"):
        pytest.skip("Unsloth backend with torch >= 2.11 only")
    from unsloth.utils import attention_dispatch

    assert attention_dispatch._TORCH_VARLEN_ATTN is not None


def test_grpo_sequence_packing_switch_sets_the_env_and_unsloths_module_constants(monkeypatch):
    import sys
    import types

    compiled = types.ModuleType("unsloth_compiled_cache.UnslothGRPOTrainer")
    compiled.UNSLOTH_GRPO_SEQ_PACKING_ON = True
    grouper = types.ModuleType("unsloth.utils.prefix_grouper")
    grouper._ENABLED = True
    monkeypatch.setitem(sys.modules, compiled.__name__, compiled)
    monkeypatch.setitem(sys.modules, grouper.__name__, grouper)
    monkeypatch.setenv("UNSLOTH_GRPO_SEQ_PACKING", "1")
    changed = kernels.set_grpo_sequence_packing(False)
    assert os.environ["UNSLOTH_GRPO_SEQ_PACKING"] == "0"
    assert compiled.UNSLOTH_GRPO_SEQ_PACKING_ON is False and grouper._ENABLED is False
    assert set(changed) == {compiled.__name__, grouper.__name__}
    monkeypatch.setenv("UNSLOTH_GRPO_PREFIX_GROUPER", "0")
    kernels.set_grpo_sequence_packing(True)
    assert compiled.UNSLOTH_GRPO_SEQ_PACKING_ON is True and grouper._ENABLED is False  # its own switch stays off


def test_grpo_sequence_packing_switch_reaches_a_trainer_module_outside_sys_modules(monkeypatch):
    # Unsloth execs its generated trainer (module "UnslothGRPOTrainer") from source: the flag lives in the
    # globals of the trainer's methods, which is where the H100 run showed the switch must reach
    namespace = {"__name__": "UnslothGRPOTrainer", "UNSLOTH_GRPO_SEQ_PACKING_ON": True}
    exec("class UnslothGRPOTrainer:\n    def _get_per_token_logps_and_entropies(self):\n"
         "        return UNSLOTH_GRPO_SEQ_PACKING_ON\n", namespace)
    trainer = namespace["UnslothGRPOTrainer"]()
    monkeypatch.setenv("UNSLOTH_GRPO_SEQ_PACKING", "1")
    assert trainer._get_per_token_logps_and_entropies() is True
    assert "UnslothGRPOTrainer" in kernels.set_grpo_sequence_packing(False, trainer)
    assert trainer._get_per_token_logps_and_entropies() is False


def decode_inputs(batch=4, heads_q=9, heads_kv=3, length=37, dim=64, pad=(0, 5, 11, 0)):
    """One decode token per row over a left-padded cache, with Unsloth's boolean keep mask (B, 1, 1, S)."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(batch, heads_q, 1, dim, generator=g)
    k, v = (torch.randn(batch, heads_kv, length, dim, generator=g) for _ in range(2))
    mask = torch.ones(batch, length, dtype=torch.bool)
    for row, n in enumerate(pad):
        mask[row, :n] = False
    return q, k, v, mask[:, None, None, :]


def recording_sdpa():
    """torch's SDPA, and the list of the keyword arguments of each call it got."""
    calls = []

    def sdpa(*args, **kwargs):
        calls.append(kwargs)
        return F.scaled_dot_product_attention(*args, **kwargs)

    return calls, sdpa


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("heads", [(9, 3), (8, 2), (4, 1)])
def test_grouped_decode_matches_sdpa_gqa(masked, heads):
    q, k, v, mask = decode_inputs(heads_q=heads[0], heads_kv=heads[1])
    mask = mask if masked else None
    calls, sdpa = recording_sdpa()
    grouped = kernels.grouped_decode_sdpa(sdpa)
    out = grouped(q, k, v, attn_mask=mask, is_causal=False, enable_gqa=True)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert out.shape == want.shape == (4, heads[0], 1, 64)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert calls == []  # handled as grouped queries, not passed on
    # padded cache positions are ignored: changing them does not change the answer
    if masked:
        k2 = k.clone()
        k2[1, :, :5] = 100.0
        torch.testing.assert_close(grouped(q, k2, v, attn_mask=mask, enable_gqa=True), out)


def test_grouped_decode_passes_other_calls_through():
    q, k, v, mask = decode_inputs()
    calls, sdpa = recording_sdpa()
    grouped = kernels.grouped_decode_sdpa(sdpa)
    k9, v9 = (t.repeat_interleave(3, dim=1) for t in (k, v))
    grouped(q, k9, v9, attn_mask=mask)  # no GQA
    grouped(q, k, v, attn_mask=mask, enable_gqa=True, dropout_p=0.1)  # dropout
    grouped(torch.randn(4, 9, 2, 64), k, v, enable_gqa=True)  # two query tokens
    grouped(q, k, v, attn_mask=torch.zeros(4, 9, 1, 37), enable_gqa=True)  # a per-head mask
    assert [c["enable_gqa"] for c in calls] == [False, True, True, True]
    assert calls[1]["dropout_p"] == 0.1


def test_install_grouped_decode_patches_modules_that_hold_unsloths_decode_sdpa(monkeypatch):
    import sys
    import types

    def decode_sdpa(*args, **kwargs):
        return F.scaled_dot_product_attention(*args, **kwargs)

    dispatch = types.ModuleType("unsloth.utils.attention_dispatch")
    dispatch.decode_scaled_dot_product_attention = decode_sdpa
    llama = types.ModuleType("unsloth.models.llama")
    llama.scaled_dot_product_attention = decode_sdpa
    other = types.ModuleType("unsloth.models.other")
    other.scaled_dot_product_attention = F.scaled_dot_product_attention  # something else: left alone
    for module in (dispatch, llama, other):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    monkeypatch.delenv("UNSLOTH_COURSE_GQA_DECODE", raising=False)  # opt-in
    assert kernels.install_grouped_decode() is None and llama.scaled_dot_product_attention is decode_sdpa
    monkeypatch.setenv("UNSLOTH_COURSE_GQA_DECODE", "1")
    notice = kernels.install_grouped_decode()
    assert "unsloth.models.llama" in notice and "unsloth.models.other" not in notice
    assert llama.scaled_dot_product_attention.__wrapped__ is decode_sdpa
    assert other.scaled_dot_product_attention is F.scaled_dot_product_attention
    wrapped = llama.scaled_dot_product_attention
    assert kernels.install_grouped_decode() == notice and llama.scaled_dot_product_attention is wrapped  # once
    q, k, v, mask = decode_inputs()
    torch.testing.assert_close(wrapped(q, k, v, attn_mask=mask, enable_gqa=True),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_decode_matches_sdpa_gqa_on_cuda_in_bf16():
    q, k, v, mask = (t.cuda() for t in decode_inputs(batch=64, length=300, pad=[i % 17 for i in range(64)]))
    q, k, v = (t.bfloat16() for t in (q, k, v))
    out = kernels.grouped_decode_sdpa(F.scaled_dot_product_attention)(q, k, v, attn_mask=mask, enable_gqa=True)
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(out.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Unsloth needs CUDA")
def test_unsloth_decode_uses_grouped_queries_on_cuda():
    from unsloth_course.backend import BACKEND

    if BACKEND != "unsloth" or os.environ.get("UNSLOTH_COURSE_GQA_DECODE") != "1":
        pytest.skip("Unsloth backend with UNSLOTH_COURSE_GQA_DECODE=1 only")
    from unsloth.models import llama
    from unsloth.utils import attention_dispatch

    assert llama.scaled_dot_product_attention.__wrapped__ is attention_dispatch.decode_scaled_dot_product_attention
