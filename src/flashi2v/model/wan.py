"""The Wan2.1 DiT building blocks in plain PyTorch.

Module and parameter names follow the Wan2.1 original checkpoints (``blocks.N.self_attn.q``,
``blocks.N.norm3``, ``head.head`` ...), so those weights load without renaming. Norms and the AdaLN
modulation run in float32 whatever the weight dtype; the residual stream stays in the compute dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import apply_rope, attention


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Timestep features [cos(t w_i), sin(t w_i)], w_i = max_period^(-i/(dim/2)); float32, B x dim."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (weights upcast too), output cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the whole width (all heads together, as Wan's qk-norm), statistics in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention with qk RMSNorm. Self-attention gets RoPE; cross-attention (to text) none."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.context_parallel = None  # set by flashi2v.context_parallel.apply_context_parallel
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, rope=None) -> torch.Tensor:
        q, k, v = self.project(x, context)
        q, k = self.norm_qk(q, k, rope)
        v = v.unflatten(-1, (self.num_heads, -1))
        cp = self.context_parallel if context is None else None
        if cp is not None:  # Ulysses: attend over all tokens with this rank's share of the heads
            q, k, v = cp.to_heads(q), cp.to_heads(k), cp.to_heads(v)
            return self.o(cp.to_tokens(attention(q, k, v)).flatten(-2))
        return self.o(attention(q, k, v).flatten(-2))

    def project(self, x: torch.Tensor, context: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """q from x; k and v from x (self-attention) or the text (cross-attention): B x L x dim each."""
        kv = x if context is None else context
        return self.q(x), self.k(kv), self.v(kv)

    def norm_qk(self, q: torch.Tensor, k: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """qk RMSNorm over the whole width, split into heads, then RoPE when given: B x L x H x D each."""
        q = self.norm_q(q).unflatten(-1, (self.num_heads, -1))
        k = self.norm_k(k).unflatten(-1, (self.num_heads, -1))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k


def residual_update(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """x + gate * y (gate None: x + y) in float32, rounded to x's dtype: the residual stream's update."""
    return (x.float() + (y.float() if gate is None else y.float() * gate)).to(x.dtype)


class ResidualNorm(nn.Module):
    """Base of the modules that start each layer with a residual update and a norm (the blocks, the head):
    ``residual_norm`` is that step's one home (``flashi2v.fast_path.fusion.fuse_norms`` runs it as one kernel)."""

    def residual_norm(self, x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, norm: nn.Module,
                      scale: torch.Tensor | None = None, shift: torch.Tensor | None = None):
        """The residual update x + gate * y (y None: no update), in float32 then rounded to x's dtype, and the
        normalised input of the next layer: norm(x) * (1 + scale) + shift (AdaLN, in float32, rounded once)
        when scale / shift are given, else norm(x) in x's dtype. Returns (x, normalised)."""
        if y is not None:
            x = residual_update(x, y, gate)
        if scale is None:
            return x, norm(x)
        return x, (norm(x.float()) * (1 + scale) + shift).to(x.dtype)


class WanBlock(ResidualNorm):
    """One DiT block: AdaLN-modulated self-attention, cross-attention to the text, modulated FFN."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, cross_attn_norm: bool, eps: float):
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = Attention(dim, num_heads, eps)
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = Attention(dim, num_heads, eps)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, context: torch.Tensor, rope,
                residual: tuple[torch.Tensor, torch.Tensor] | None = None, defer: bool = False):
        """x: B x L x dim (compute dtype); e: B x 6 x dim float32 timestep modulation.

        residual: the previous block's last update (y, gate), not yet added to x: the first norm adds it.
        defer: return (x, (y, gate)) and leave this block's last update to the next block. Same function;
        with ``flashi2v.fast_path.fusion.fuse_norms`` the update and the next norm are one pass over memory.
        """
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (self.modulation.float() + e).chunk(6, dim=1)
        y, gate = residual if residual is not None else (None, None)
        x, h = self.residual_norm(x, y, gate, self.norm1, scale_sa, shift_sa)
        x, h = self.residual_norm(x, self.self_attn(h, rope=rope), gate_sa, self.norm3)
        x, h = self.residual_norm(x, self.cross_attn(h, context=context), None, self.norm2, scale_ff, shift_ff)
        if defer:
            return x, (self.ffn(h), gate_ff)
        return residual_update(x, self.ffn(h), gate_ff)


class WanHead(ResidualNorm):
    """Final modulated LayerNorm + linear map from tokens to patches of velocity."""

    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float):
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, residual: tuple[torch.Tensor, torch.Tensor] | None = None):
        """e: B x dim float32 timestep embedding (before the 6-way projection); residual: the last block's
        update (y, gate), not yet added to x (``WanBlock.forward``'s ``defer``)."""
        shift, scale = (self.modulation.float() + e[:, None]).chunk(2, dim=1)
        y, gate = residual if residual is not None else (None, None)
        return self.head(self.residual_norm(x, y, gate, self.norm, scale, shift)[1])


def patchify(x: torch.Tensor, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """B x C x F x H x W video -> B x (f*h*w) x (C*pt*ph*pw) patches, each flattened in the order of a
    Conv3d weight's (C, kt, kh, kw) axes: a conv with kernel = stride is ``F.linear(patchify(x), w.flatten(1))``."""
    (pt, ph, pw), (b, c, f, h, w) = patch_size, x.shape
    x = x.reshape(b, c, f // pt, pt, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, (f // pt) * (h // ph) * (w // pw), c * pt * ph * pw)


def unpatchify(x: torch.Tensor, grid: tuple[int, int, int], patch_size: tuple[int, int, int]) -> torch.Tensor:
    """B x (f*h*w) x (pt*ph*pw*C) tokens -> B x C x (f*pt) x (h*ph) x (w*pw) video."""
    (f, h, w), (pt, ph, pw) = grid, patch_size
    x = x.reshape(x.shape[0], f, h, w, pt, ph, pw, -1)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(x.shape[0], x.shape[1], f * pt, h * ph, w * pw)
