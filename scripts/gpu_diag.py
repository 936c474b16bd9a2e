"""Which attention kernels this GPU machine's stack can use for packed (padding-free) batches.

Prints torch's varlen attention signature and the flags Unsloth's attention dispatch derived from it, and the
backend it selects for packed and for dense calls. Run on the GPU machine: python3 scripts/gpu_diag.py
"""

import inspect

import torch

print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device {torch.cuda.get_device_name(0)}")
print(f"flash SDPA available: {torch.backends.cuda.is_flash_attention_available()}")
try:
    from torch.nn.attention.varlen import varlen_attn

    print(f"torch varlen_attn{inspect.signature(varlen_attn)}")
except ImportError as error:
    print(f"torch varlen_attn: not available ({error})")

import unsloth  # noqa: E402,F401
from unsloth.utils import attention_dispatch as dispatch  # noqa: E402

for name in ("HAS_FLASH_ATTENTION", "HAS_XFORMERS", "_TORCH_VARLEN_ATTN", "_NATIVE_BEATS_XFORMERS",
             "_SDPA_PACKED_SEGMENTS", "_LEAN_VARLEN"):
    print(f"unsloth {name} = {getattr(dispatch, name, '(absent)')}")
print(f"unsloth backend for packed calls: {dispatch.select_attention_backend(use_varlen=True)}; "
      f"dense: {dispatch.select_attention_backend(use_varlen=False)}")
