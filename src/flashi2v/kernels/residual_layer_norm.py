"""The DiT block's residual update and the LayerNorm (+ AdaLN modulation) after it, in one pass over memory.

``residual_layer_norm`` computes what ``WanBlock.residual_norm`` computes with ``FP32LayerNorm``, all in
float32: x + gate * y (written out in x's dtype: it is the residual stream), LayerNorm of it (before that
rounding, as torch.compile's fusion of the eager ops also does), with the norm's affine weights when
given, then AdaLN, norm * (1 + scale) + shift, when given; the result rounded once to x's dtype. torch.compile's fusion of the same ops runs a
looped reduction that reads x and y twice (docs/performance.md, "Attention kernels", gives the times against
the bandwidth floor); each program here keeps a few whole rows in registers.
Opaque custom ops, as in ``flashi2v.kernels.qk_norm_rope`` (which says why).
"""

from __future__ import annotations

import torch

from . import triton_available

__all__ = ["layer_norm_modulate", "residual_layer_norm"]

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _residual_layer_norm_kernel(x_ptr, y_ptr, gate_ptr, w_ptr, b_ptr, scale_ptr, shift_ptr, res_ptr, out_ptr,
                                    rows, tokens, eps, DIM: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
                                    HAS_Y: tl.constexpr, HAS_GATE: tl.constexpr, AFFINE: tl.constexpr,
                                    MODULATE: tl.constexpr):
        row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]  # ROWS x 1
        col = tl.arange(0, BLOCK)[None, :]
        mask = (row < rows) & (col < DIM)
        offset = row.to(tl.int64) * DIM + col
        per_sample = (row // tokens) * DIM + col  # gate / scale / shift: one B x dim row per sample
        dtype = out_ptr.dtype.element_ty
        x = tl.load(x_ptr + offset, mask=mask, other=0.0).to(tl.float32)
        if HAS_Y:
            y = tl.load(y_ptr + offset, mask=mask, other=0.0).to(tl.float32)
            if HAS_GATE:
                y = y * tl.load(gate_ptr + per_sample, mask=mask, other=0.0)
            x = x + y
            tl.store(res_ptr + offset, x.to(dtype), mask=mask)
        mean = tl.sum(x, axis=1)[:, None] / DIM
        centred = tl.where(mask, x - mean, 0.0)
        norm = centred * tl.rsqrt(tl.sum(centred * centred, axis=1)[:, None] / DIM + eps)
        if AFFINE:
            norm = (norm * tl.load(w_ptr + col, mask=col < DIM, other=0.0).to(tl.float32)
                    + tl.load(b_ptr + col, mask=col < DIM, other=0.0).to(tl.float32))
        if MODULATE:
            scale = tl.load(scale_ptr + per_sample, mask=mask, other=0.0)
            norm = norm * (1 + scale) + tl.load(shift_ptr + per_sample, mask=mask, other=0.0)
        tl.store(out_ptr + offset, norm.to(dtype), mask=mask)


def _launch(x, y, gate, weight, bias, scale, shift, eps, residual):
    b, length, dim = x.shape
    out = torch.empty_like(x)
    dummy = x  # stands in for absent tensors; the kernel never reads it (its flags are compile-time)

    def per_sample(t):
        return dummy if t is None else t.float().expand(b, 1, dim).contiguous()

    rows, rows_per_program = b * length, 2
    _residual_layer_norm_kernel[(triton.cdiv(rows, rows_per_program),)](
        x, dummy if y is None else y.contiguous(), per_sample(gate), dummy if weight is None else weight,
        dummy if bias is None else bias, per_sample(scale), per_sample(shift), residual, out, rows, length, eps,
        DIM=dim, BLOCK=triton.next_power_of_2(dim), ROWS=rows_per_program, HAS_Y=y is not None,
        HAS_GATE=gate is not None, AFFINE=weight is not None, MODULATE=scale is not None, num_warps=8)
    return out


@torch.library.custom_op("flashi2v::residual_layer_norm", mutates_args=())
def residual_layer_norm(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None,
                        weight: torch.Tensor | None, bias: torch.Tensor | None,
                        scale: torch.Tensor | None, shift: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y: B x L x dim; gate, scale, shift: B x 1 x dim float32 (or None); weight, bias: dim (or None).

    Returns (x + gate * y, LayerNorm(that) [* weight + bias] [* (1 + scale) + shift]), both of x's dtype
    and contiguous. Forward only: for inference.
    """
    x = x.contiguous()
    residual = torch.empty_like(x)
    return residual, _launch(x, y, gate, weight, bias, scale, shift, eps, residual)


@torch.library.custom_op("flashi2v::layer_norm_modulate", mutates_args=())
def layer_norm_modulate(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                        scale: torch.Tensor | None, shift: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``residual_layer_norm`` without the residual update: LayerNorm(x) [* weight + bias] [* (1 + scale) + shift]."""
    x = x.contiguous()
    return _launch(x, None, None, weight, bias, scale, shift, eps, x)


@residual_layer_norm.register_fake
def _(x, y, gate, weight, bias, scale, shift, eps):
    return x.new_empty(x.shape), x.new_empty(x.shape)


@layer_norm_modulate.register_fake
def _(x, weight, bias, scale, shift, eps):
    return x.new_empty(x.shape)
