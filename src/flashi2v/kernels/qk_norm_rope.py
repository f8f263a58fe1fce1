"""Wan's q/k RMSNorm and 3-D RoPE in one pass over memory: a Triton kernel for inference on a GPU.

``rms_norm_rope(x, weight, cos, sin, eps)`` is ``apply_rope(RMSNorm(x), cos, sin)`` of flashi2v.model, in
float32 and rounded once at the end (the eager pair also rounds in between; torch.compile's fusion does
not, and neither do we), and it reads each row of x once and writes it once.
torch.compile fuses the same ops into two kernels that reread the row (on an H100 at 20k tokens:
265 + 69 us per block for q and k against a bandwidth floor near 90 us, docs/performance.md).

Each program takes a few whole token rows: the mean square over the whole width (all heads, as Wan's
qk-norm), the norm weight, then adjacent pairs rotated, pair i of a row by the token's angle for pair
i mod (head_dim / 2).
"""

from __future__ import annotations

import torch

from . import triton_available

__all__ = ["rms_norm_rope"]

if triton_available():
    import triton
    import triton.language as tl

    # Rows per program and warps: a whole 1,536-wide row in float32 plus its rotated copy is register-heavy, so
    # the best split depends on the GPU; the first call of each width times these (a few launches) and keeps one.
    _CONFIGS = [triton.Config({"ROWS": rows}, num_warps=warps) for rows, warps in ((1, 4), (2, 4), (4, 4), (1, 8), (2, 8), (4, 8))]

    @triton.autotune(configs=_CONFIGS, key=["DIM", "HALF_HEAD"])
    @triton.jit
    def _rms_norm_rope_kernel(x_ptr, w_ptr, cos_ptr, sin_ptr, out_ptr, row_stride, rows, tokens, eps,
                              DIM: tl.constexpr, HALF_HEAD: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
        row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]  # ROWS x 1
        col = tl.arange(0, BLOCK)[None, :]  # 1 x BLOCK, whole rows: contiguous (vector) loads and stores
        mask = (row < rows) & (col < DIM)
        row64 = row.to(tl.int64)
        x = tl.load(x_ptr + row64 * row_stride + col, mask=mask, other=0.0).to(tl.float32)
        r = tl.rsqrt(tl.sum(x * x, axis=1) / DIM + eps)[:, None]
        w = tl.load(w_ptr + col, mask=col < DIM, other=0.0).to(tl.float32)
        dtype = out_ptr.dtype.element_ty
        xe, xo = tl.split(tl.reshape(x * r * w, (ROWS, BLOCK // 2, 2)))
        pair = tl.arange(0, BLOCK // 2)[None, :]
        angle = (row % tokens) * HALF_HEAD + pair % HALF_HEAD
        pmask = (row < rows) & (pair < DIM // 2)
        c = tl.load(cos_ptr + angle, mask=pmask, other=0.0)
        s = tl.load(sin_ptr + angle, mask=pmask, other=0.0)
        out = tl.reshape(tl.join(xe * c - xo * s, xe * s + xo * c), (ROWS, BLOCK))
        tl.store(out_ptr + row64 * DIM + col, out.to(dtype), mask=mask)


@torch.library.triton_op("flashi2v::rms_norm_rope", mutates_args=())
def rms_norm_rope(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim of x (B x L x dim, unit stride along dim), then RoPE on adjacent pairs.

    cos / sin: L x head_dim/2 float32 tables (``RopeCache``). Returns a contiguous B x L x dim tensor of
    x's dtype. Forward only (no autograd formula): for inference.
    """
    b, length, dim = x.shape
    if x.stride(2) != 1 or x.stride(0) != length * x.stride(1):
        x = x.contiguous()
    out = torch.empty((b, length, dim), dtype=x.dtype, device=x.device)
    rows = b * length
    torch.library.wrap_triton(_rms_norm_rope_kernel)[lambda meta: (triton.cdiv(rows, meta["ROWS"]),)](
        x, weight, cos.contiguous(), sin.contiguous(), out, x.stride(1), rows, length, eps,
        DIM=dim, HALF_HEAD=cos.shape[-1], BLOCK=triton.next_power_of_2(dim))
    return out
