"""The fast path in one call: everything that measured faster on an H100 (docs/performance.md)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..model.attention import fa3_available, fa4_available, set_attention_backend
from .compile import apply_compile, apply_cuda_graphs
from .fusion import fuse_ffn_gelu, fuse_norms, fuse_qkv

def best_attention_backend(device: torch.device | str | None = None) -> str:
    """The fastest attention kernels for head dim 128 on ``device`` (benchmarks/kernels.py).

    Hopper / Blackwell (sm_90, sm_100) with flash-attn-4 installed: "fa4"; Hopper with flash_attn_3 built:
    "fa3" (a little behind FA4); sm_90+ with cuDNN: "cudnn"; other CUDA GPUs: "flash"; anything else: "auto"
    (torch's own choice). The kernels' speeds: docs/performance.md, "Attention kernels".
    """
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return "auto"
    capability = torch.cuda.get_device_capability(device)
    if capability[0] in (9, 10) and fa4_available():
        return "fa4"
    if capability[0] == 9 and fa3_available():
        return "fa3"
    if capability >= (9, 0) and torch.backends.cudnn.is_available():
        return "cudnn"
    return "flash"


def apply_fast_path(model: nn.Module, compile: bool = True, attention: str | None = None,
                    fuse_gelu: bool = True, norms: bool | None = None, qkv: bool = True,
                    cuda_graphs: bool = False, compile_options: dict | None = None) -> nn.Module:
    """Everything that measured faster on an H100 (docs/performance.md, "Use it"), in one call.

    attention: an ATTENTION_BACKENDS name; default ``best_attention_backend`` of the model's device
    (process-wide, see ``set_attention_backend``). Then the FFN GELU in the matmul epilogue, the norm
    kernels (``norms``; default: on a CUDA device when triton is importable), fused QKV (``qkv``: the
    q/k/v parameters become views of one buffer, see ``fuse_qkv``) and compiled blocks
    (``compile_options``: Inductor options, passed through). ``cuda_graphs`` is off by default: no
    measurable gain, and it keeps GPU memory reserved per input shape (docs/performance.md). Call after
    moving the model to its device and dtype.
    """
    device = next(model.parameters()).device
    set_attention_backend(attention or best_attention_backend(device))
    if fuse_gelu:
        fuse_ffn_gelu(model)
    if norms is None:
        from ..kernels import triton_available

        norms = device.type == "cuda" and triton_available()
    if norms:
        fuse_norms(model)
    if qkv:
        fuse_qkv(model)
    if compile:
        apply_compile(model, options=compile_options)
    if cuda_graphs:
        apply_cuda_graphs(model)
    return model
