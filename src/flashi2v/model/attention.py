"""Attention and 3-D rotary position embedding, as pure functions.

Tensors are laid out B x L x H x D (batch, tokens, heads, head dim) between the projections and the
attention call; SDPA wants B x H x L x D, so the transpose happens here and nowhere else.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import FlashI2VError

# Which SDPA kernels ``attention`` may use, in priority order. "auto" leaves the choice to torch.
# On Hopper with head dim 128, cuDNN's kernel is the fastest torch ships (docs/performance.md,
# "Attention kernels"); the later entries are fallbacks for shapes,
# dtypes or devices it does not support (the CPU always ends on "math").
ATTENTION_BACKENDS: dict[str, list[SDPBackend] | None] = {
    "auto": None,
    "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    # FlashAttention-3 (package flash_attn_3, sm_90) / -4 (package flash-attn-4) where they apply (see
    # ``attention``), else these.
    "fa3": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "fa4": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "math": [SDPBackend.MATH],
}
_backend_name = "auto"
_backends: list[SDPBackend] | None = None


def fa4_available() -> bool:
    """True when FlashAttention-4 (package flash-attn-4: CuTe DSL kernels for sm_90 / sm_100) is importable."""
    return importlib.util.find_spec("flash_attn") is not None and importlib.util.find_spec("flash_attn.cute") is not None


def fa3_available() -> bool:
    """True when FlashAttention-3 (package flash_attn_3: the Hopper kernels of flash-attention, built from source,
    e.g. by benchmarks/build_fa3.sh) is importable."""
    return importlib.util.find_spec("flash_attn_interface") is not None


# FA4 picks 128 x 128 tiles with a register-sourced PV product for head dim 128 on sm_90; 192 x 128 tiles with
# both products from shared memory measured never slower at 20,280 tokens, batch 1 and 2 (benchmarks/fa4_tiles.py,
# docs/performance.md "Attention kernels"), with the same output. The public
# function takes no tile, so this goes through FA4's internal entry point when it has these arguments.
FA4_SM90_TILE = {"tile_mn": (192, 128), "mma_pv_is_rs": False, "intra_wg_overlap": True}


@functools.cache
def _fa4_tiled_forward():
    """FA4's internal forward if it accepts FA4_SM90_TILE, else None (other releases: the public function)."""
    try:
        from flash_attn.cute.interface import _flash_attn_fwd
    except ImportError:
        return None
    try:
        params = inspect.signature(_flash_attn_fwd).parameters
    except (TypeError, ValueError):
        return None
    return _flash_attn_fwd if all(name in params for name in FA4_SM90_TILE) else None


# FA4 runs one thread block per (query tile, head, sample), one block per SM at a time on sm_90 at head
# dim 128. At 20,280 tokens, 12 heads, that is 1,272 blocks = 9.64 "waves" on 132 SMs: the last wave
# leaves a third of the GPU idle. ``wave_split_rows`` picks a first call that fills whole waves; the
# remaining rows go to a second call with smaller (128-row) tiles, which finishes sooner.
_wave_split = True


def set_fa4_wave_split(enabled: bool) -> None:
    """Turn the two-call wave split of FA4 self-attention on (default) or off, process-wide (benchmarks)."""
    global _wave_split
    _wave_split = bool(enabled)


def wave_split_rows(batch_heads: int, q_len: int, sms: int, tile_m: int = 192, tail_tile_m: int = 128) -> int:
    """Query rows for the first of two attention calls, or 0 for one call.

    Models each call's time as its number of waves of thread blocks (a partial wave costs a whole one;
    a ``tail_tile_m``-row block takes tail_tile_m / tile_m of a ``tile_m``-row one) and splits only where
    that saves at least a tenth of a wave. The first call gets the most whole tiles whose blocks fill
    whole waves.
    """
    tiles = -(-q_len // tile_m)
    step = sms // math.gcd(sms, batch_heads)  # tiles per head whose blocks make whole waves
    first = tiles // step * step
    if first == 0 or first == tiles:
        return 0
    rest_blocks = batch_heads * -(-(q_len - first * tile_m) // tail_tile_m)
    one_call = -(-batch_heads * tiles // sms)
    two_calls = batch_heads * first / sms + -(-rest_blocks // sms) * tail_tile_m / tile_m
    return first * tile_m if two_calls <= one_call - 0.1 else 0


@functools.cache
def _takes_out(forward) -> bool:
    return "out" in inspect.signature(forward).parameters


def _fa4_sm90_forward(forward, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sms: int | None = None) -> torch.Tensor:
    """``forward`` (FA4's internal entry point) with FA4_SM90_TILE, as one call or, split by
    ``wave_split_rows`` for ``sms`` SMs (default: q's GPU's), as two calls writing one output tensor
    (returned as is; one call returns what ``forward`` returns)."""
    b, length, heads = q.shape[:3]
    rows = 0
    if _wave_split and _takes_out(forward):
        sms = sms or torch.cuda.get_device_properties(q.device).multi_processor_count
        rows = wave_split_rows(b * heads, length, sms, FA4_SM90_TILE["tile_mn"][0])
    if not rows:
        return forward(q, k, v, **FA4_SM90_TILE)  # (out, lse, ...): fa4_attention takes out
    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    forward(q[:, :rows], k, v, out=out[:, :rows], **FA4_SM90_TILE)
    forward(q[:, rows:], k, v, out=out[:, rows:])  # FA4's own 128 x 128 tiles
    return out


@torch.library.custom_op("flashi2v::fa4_attention", mutates_args=())
def fa4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention by FlashAttention-4, forward only. q: B x Lq x H x D, k/v: B x Lk x H x D (our layout).

    An opaque op to torch.compile (the CuTe DSL kernel cannot be traced), so compiled blocks keep
    one graph around it.
    """
    tiled = _fa4_tiled_forward()
    if tiled is not None and q.shape[-1] == 128 and torch.cuda.get_device_capability(q.device)[0] == 9:
        out = _fa4_sm90_forward(tiled, q, k, v)
    else:
        from flash_attn.cute import flash_attn_func

        out = flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out  # some releases return (out, lse)


@fa4_attention.register_fake
def _(q, k, v):
    return q.new_empty(*q.shape[:-1], v.shape[-1])


# backend -> (is its package importable, how to get it)
_FLASH_PACKAGES = {
    "fa3": (fa3_available, "FlashAttention-3 (module flash_attn_interface): build it with benchmarks/build_fa3.sh "
                           "from a flash-attention checkout"),
    "fa4": (fa4_available, "FlashAttention-4: pip install flash-attn-4"),
}


@torch.library.custom_op("flashi2v::fa3_attention", mutates_args=())
def fa3_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention by FlashAttention-3, forward only. q: B x Lq x H x D, k/v: B x Lk x H x D (our layout).

    Opaque to torch.compile like ``fa4_attention``, so both backends trace the same way.
    """
    from flash_attn_interface import flash_attn_func

    out = flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out  # older releases return (out, lse)


@fa3_attention.register_fake
def _(q, k, v):
    return q.new_empty(*q.shape[:-1], v.shape[-1])


def set_attention_backend(name: str = "auto") -> None:
    """Pick the SDPA kernel family for every ``attention`` call in this process: one of ATTENTION_BACKENDS.

    The numerics are those of softmax attention whichever kernel runs (to bf16 rounding). Compiled
    blocks read the setting when they are traced: changing it later triggers a recompile. "fa4" runs
    FlashAttention-4 on sm_90 / sm_100 GPUs, "fa3" FlashAttention-3 on sm_90, for long-key calls without
    gradients (inference); anything else (CPU tensors, other GPUs, autograd, the text cross-attention) goes
    through SDPA with cuDNN first.
    """
    global _backend_name, _backends
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}: choose one of {sorted(ATTENTION_BACKENDS)}")
    available, how = _FLASH_PACKAGES.get(name, (None, ""))
    if available is not None and not available():
        raise FlashI2VError(f"attention backend {name!r} needs {how} (or choose 'cudnn')")
    _backend_name, _backends = name, ATTENTION_BACKENDS[name]


def get_attention_backend() -> str:
    return _backend_name


@contextlib.contextmanager
def attention_backend(name: str):
    """Temporarily use another attention backend (``with attention_backend("math"): ...``)."""
    previous = get_attention_backend()
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(previous)


# FA3 / FA4 only for long key sequences: FA4 beats cuDNN on self-attention at 20,280 tokens but loses on the
# 512-token text cross-attention (benchmarks/kernels.py; docs/performance.md, "Attention kernels").
FA4_MIN_KEYS = 2048
# backend -> (kernel, GPU major versions it runs on, dtypes, head dims (None: any))
_FLASH_KERNELS = {
    "fa3": (fa3_attention, (9,), (torch.bfloat16,), (128,)),  # what build_fa3.sh builds
    "fa4": (fa4_attention, (9, 10), (torch.float16, torch.bfloat16), None),
}


def _flash_applies(majors, dtypes, head_dims, *tensors: torch.Tensor) -> bool:
    q, k = tensors[0], tensors[1]
    return (k.shape[1] >= FA4_MIN_KEYS and q.is_cuda and q.dtype in dtypes
            and (head_dims is None or q.shape[-1] in head_dims)
            and torch.cuda.get_device_capability(q.device)[0] in majors
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked softmax attention: FlashAttention-3 / -4 where the "fa3" / "fa4" backend applies, else torch
    SDPA. q: B x Lq x H x D, k/v: B x Lk x H x D."""
    flash = _FLASH_KERNELS.get(_backend_name)
    if flash is not None and _flash_applies(*flash[1:], q, k, v):
        return flash[0](q, k, v)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if _backends is None:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        with sdpa_kernel(_backends, set_priority=True):
            out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2)


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Rotary dims given to (frame, height, width): Wan gives h and w 2*(d//6) each, t the rest (44/42/42 for 128)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_angles(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """Rotation angle of every (token, rotary pair) for a latent grid of f x h x w patches, float32.

    Token order is frame-major then row then column (the order of ``flatten`` after the patch
    embedding). Each axis gets its own 1-D RoPE, angle = position * theta^(-2i/d_axis), and the three
    are concatenated: result L x head_dim/2.
    """
    parts = []
    for axis, (size, dim) in enumerate(zip(grid, rope_split(head_dim))):
        inv_freq = theta ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
        pos = torch.arange(size, device=device, dtype=torch.float32)
        ang = pos[:, None] * inv_freq[None, :]  # size x dim/2
        shape = [1, 1, 1, dim // 2]
        shape[axis] = size
        parts.append(ang.view(shape).expand(*grid, dim // 2))
    return torch.cat(parts, dim=-1).reshape(-1, head_dim // 2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of x (B x L x H x D) by the angles behind cos/sin (L x D/2).

    Done in float32 whatever the input dtype; the result is cast back.
    """
    xf = x.float().unflatten(-1, (-1, 2))
    x1, x2 = xf[..., 0], xf[..., 1]
    cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


class RopeCache:
    """cos/sin tables per (grid, device), computed once: every step of a generation reuses them."""

    def __init__(self, head_dim: int):
        self.head_dim = head_dim
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, grid: tuple[int, int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(grid), str(device))
        if key not in self._tables:
            ang = rope_angles(grid, self.head_dim, device=device)
            self._tables[key] = (ang.cos(), ang.sin())
        return self._tables[key]
