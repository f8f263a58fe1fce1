"""The DiT block's residual update and the LayerNorm (+ AdaLN modulation) after it, in one pass over memory.

``residual_layer_norm`` computes what ``WanBlock.residual_norm`` computes with ``FP32LayerNorm``, all in
float32: x + gate * y (written out in x's dtype: it is the residual stream), LayerNorm of it (before that
rounding, as torch.compile's fusion of the eager ops also does), with the norm's affine weights when
given, then AdaLN, norm * (1 + scale) + shift, when given; the result rounded once to x's dtype. torch.compile's fusion of the same ops runs a
looped reduction that reads x and y twice (on an H100 at 20k tokens: 155-167 us against a bandwidth
floor near 90 us, docs/performance.md); each program here keeps a few whole rows in registers.
"""

from __future__ import annotations

import torch

from . import row_pieces, triton_available

__all__ = ["layer_norm_modulate", "residual_layer_norm"]

if triton_available():
    import triton
    import triton.language as tl

    # Rows per program and warps, timed at the first call of each width and set of flags (a few launches).
    _CONFIGS = [triton.Config({"ROWS": rows}, num_warps=warps) for rows, warps in ((1, 4), (2, 4), (4, 4), (2, 8), (4, 8), (8, 8))]

    @triton.jit
    def _residual_piece(x_ptr, y_ptr, gate_ptr, res_ptr, row, rmask, tokens, START: tl.constexpr, WIDTH: tl.constexpr,
                        DIM: tl.constexpr, HAS_Y: tl.constexpr, HAS_GATE: tl.constexpr):
        """Columns START .. START + WIDTH of x (+ gate * y, stored to res when y is given), float32."""
        col = START + tl.arange(0, WIDTH)[None, :]
        mask = rmask & (col < DIM)
        offset = row.to(tl.int64) * DIM + col
        x = tl.load(x_ptr + offset, mask=mask, other=0.0).to(tl.float32)
        if HAS_Y:
            y = tl.load(y_ptr + offset, mask=mask, other=0.0).to(tl.float32)
            if HAS_GATE:  # gate / scale / shift: one B x dim row per sample
                y = y * tl.load(gate_ptr + (row // tokens) * DIM + col, mask=mask, other=0.0)
            x = x + y
            tl.store(res_ptr + offset, x.to(res_ptr.dtype.element_ty), mask=mask)
        return x

    @triton.jit
    def _store_norm_piece(centred, rstd, w_ptr, b_ptr, scale_ptr, shift_ptr, out_ptr, row, rmask, tokens,
                          START: tl.constexpr, WIDTH: tl.constexpr, DIM: tl.constexpr, AFFINE: tl.constexpr,
                          MODULATE: tl.constexpr):
        col = START + tl.arange(0, WIDTH)[None, :]
        mask = rmask & (col < DIM)
        norm = centred * rstd
        if AFFINE:
            norm = (norm * tl.load(w_ptr + col, mask=col < DIM, other=0.0).to(tl.float32)
                    + tl.load(b_ptr + col, mask=col < DIM, other=0.0).to(tl.float32))
        if MODULATE:
            per_sample = (row // tokens) * DIM + col
            norm = (norm * (1 + tl.load(scale_ptr + per_sample, mask=mask, other=0.0))
                    + tl.load(shift_ptr + per_sample, mask=mask, other=0.0))
        tl.store(out_ptr + row.to(tl.int64) * DIM + col, norm.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.autotune(configs=_CONFIGS, key=["DIM", "BLOCK_A", "BLOCK_B", "HAS_Y", "HAS_GATE", "AFFINE", "MODULATE"])
    @triton.jit
    def _residual_layer_norm_kernel(x_ptr, y_ptr, gate_ptr, w_ptr, b_ptr, scale_ptr, shift_ptr, res_ptr, out_ptr,
                                    rows, tokens, eps, DIM: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr,
                                    ROWS: tl.constexpr, HAS_Y: tl.constexpr, HAS_GATE: tl.constexpr,
                                    AFFINE: tl.constexpr, MODULATE: tl.constexpr):
        # a row is two power-of-two pieces (flashi2v.kernels.row_pieces), so no thread holds only padding
        row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]  # ROWS x 1
        rmask = row < rows
        xa = _residual_piece(x_ptr, y_ptr, gate_ptr, res_ptr, row, rmask, tokens, 0, BLOCK_A, DIM, HAS_Y, HAS_GATE)
        total = tl.sum(xa, axis=1)
        if BLOCK_B > 0:
            xb = _residual_piece(x_ptr, y_ptr, gate_ptr, res_ptr, row, rmask, tokens, BLOCK_A, BLOCK_B, DIM, HAS_Y,
                                 HAS_GATE)
            total += tl.sum(xb, axis=1)
        mean = total[:, None] / DIM
        ca = tl.where(tl.arange(0, BLOCK_A)[None, :] < DIM, xa - mean, 0.0)
        square_sum = tl.sum(ca * ca, axis=1)
        if BLOCK_B > 0:
            cb = tl.where(BLOCK_A + tl.arange(0, BLOCK_B)[None, :] < DIM, xb - mean, 0.0)
            square_sum += tl.sum(cb * cb, axis=1)
        rstd = tl.rsqrt(square_sum[:, None] / DIM + eps)
        _store_norm_piece(ca, rstd, w_ptr, b_ptr, scale_ptr, shift_ptr, out_ptr, row, rmask, tokens, 0, BLOCK_A, DIM,
                          AFFINE, MODULATE)
        if BLOCK_B > 0:
            _store_norm_piece(cb, rstd, w_ptr, b_ptr, scale_ptr, shift_ptr, out_ptr, row, rmask, tokens, BLOCK_A,
                              BLOCK_B, DIM, AFFINE, MODULATE)


def _launch(x, y, gate, weight, bias, scale, shift, eps, residual):
    b, length, dim = x.shape
    out = torch.empty_like(x)
    dummy = x  # stands in for absent tensors; the kernel never reads it (its flags are compile-time)

    def per_sample(t):
        return dummy if t is None else t.float().expand(b, 1, dim).contiguous()

    rows, (block_a, block_b) = b * length, row_pieces(dim)
    torch.library.wrap_triton(_residual_layer_norm_kernel)[lambda meta: (triton.cdiv(rows, meta["ROWS"]),)](
        x, dummy if y is None else y.contiguous(), per_sample(gate), dummy if weight is None else weight,
        dummy if bias is None else bias, per_sample(scale), per_sample(shift), residual, out, rows, length, eps,
        DIM=dim, BLOCK_A=block_a, BLOCK_B=block_b, HAS_Y=y is not None, HAS_GATE=gate is not None,
        AFFINE=weight is not None, MODULATE=scale is not None)
    return out


@torch.library.triton_op("flashi2v::residual_layer_norm", mutates_args=())
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


@torch.library.triton_op("flashi2v::layer_norm_modulate", mutates_args=())
def layer_norm_modulate(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                        scale: torch.Tensor | None, shift: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``residual_layer_norm`` without the residual update: LayerNorm(x) [* weight + bias] [* (1 + scale) + shift]."""
    x = x.contiguous()
    return _launch(x, None, None, weight, bias, scale, shift, eps, x)
