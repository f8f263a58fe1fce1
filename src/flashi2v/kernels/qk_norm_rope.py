"""Wan's q/k RMSNorm and 3-D RoPE in one pass over memory: a Triton kernel for inference on a GPU.

``rms_norm_rope(x, weight, cos, sin, eps)`` is ``apply_rope(RMSNorm(x), cos, sin)`` of flashi2v.model, in
float32 and rounded once at the end (the eager pair also rounds in between; torch.compile's fusion does
not, and neither do we), and it reads each row of x once and writes it once. ``rms_norm_rope_qk`` does q
and k in one launch.
torch.compile fuses the same ops into two kernels that reread the row (times against the bandwidth floor:
docs/performance.md, "Attention kernels").

Each program takes a few whole token rows: the mean square over the whole width (all heads, as Wan's
qk-norm), the norm weight, then adjacent pairs rotated, pair i of a row by the token's angle for pair
i mod (head_dim / 2). A row is one block of next_power_of_2(dim) (1,536 -> 2,048, the rest masked): as two
power-of-two pieces (1,024 + 512) it measured no faster (benchmarks/norm_kernel_configs.py).

The ops are opaque custom ops, not ``triton_op``s: inside torch.compile Inductor launched a triton_op's
kernel slower than the same kernel launched by Triton itself (``benchmarks/norm_kernel_configs.py``;
docs/performance.md, "Where the missed target stands"), so the compiled blocks call these as they are.
"""

from __future__ import annotations

import torch

from . import triton_available

__all__ = ["rms_norm_rope", "rms_norm_rope_qk"]

if triton_available():
    import triton
    import triton.language as tl

    # Rows per program and warps: a whole 1,536-wide row in float32 plus its rotated copy is register-heavy, so
    # the best split depends on the GPU; the first call of each width times these (a few launches) and keeps one.
    _CONFIGS = [triton.Config({"ROWS": rows}, num_warps=warps) for rows, warps in ((1, 4), (2, 4), (4, 4), (1, 8), (2, 8), (4, 8))]

    @triton.jit
    def _norm_rope_rows(x_ptr, w_ptr, cos_ptr, sin_ptr, out_ptr, row_stride, rows, tokens, eps, DIM: tl.constexpr,
                        HALF_HEAD: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr):
        row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]  # ROWS x 1
        col = tl.arange(0, BLOCK)[None, :]  # 1 x BLOCK, whole rows: contiguous (vector) loads and stores
        mask = (row < rows) & (col < DIM)
        row64 = row.to(tl.int64)
        x = tl.load(x_ptr + row64 * row_stride + col, mask=mask, other=0.0).to(tl.float32)
        r = tl.rsqrt(tl.sum(x * x, axis=1) / DIM + eps)[:, None]
        w = tl.load(w_ptr + col, mask=col < DIM, other=0.0).to(tl.float32)
        xe, xo = tl.split(tl.reshape(x * r * w, (ROWS, BLOCK // 2, 2)))
        pair = tl.arange(0, BLOCK // 2)[None, :]
        angle = (row % tokens) * HALF_HEAD + pair % HALF_HEAD
        pmask = (row < rows) & (pair < DIM // 2)
        c = tl.load(cos_ptr + angle, mask=pmask, other=0.0)
        s = tl.load(sin_ptr + angle, mask=pmask, other=0.0)
        out = tl.reshape(tl.join(xe * c - xo * s, xe * s + xo * c), (ROWS, BLOCK))
        tl.store(out_ptr + row64 * DIM + col, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.autotune(configs=_CONFIGS, key=["DIM", "HALF_HEAD"])
    @triton.jit
    def _rms_norm_rope_kernel(q_ptr, k_ptr, wq_ptr, wk_ptr, cos_ptr, sin_ptr, q_out_ptr, k_out_ptr, q_stride, k_stride,
                              rows, tokens, eps, DIM: tl.constexpr, HALF_HEAD: tl.constexpr, BLOCK: tl.constexpr,
                              ROWS: tl.constexpr):
        # program_id(1) picks q or k: both in one launch, so the second does not wait for the first's last wave
        if tl.program_id(1) == 0:
            _norm_rope_rows(q_ptr, wq_ptr, cos_ptr, sin_ptr, q_out_ptr, q_stride, rows, tokens, eps, DIM, HALF_HEAD,
                            BLOCK, ROWS)
        else:
            _norm_rope_rows(k_ptr, wk_ptr, cos_ptr, sin_ptr, k_out_ptr, k_stride, rows, tokens, eps, DIM, HALF_HEAD,
                            BLOCK, ROWS)


def _rows_of(x: torch.Tensor) -> torch.Tensor:
    """x with unit stride along dim and its token rows evenly spaced (copied only if not)."""
    if x.stride(2) != 1 or x.stride(0) != x.shape[1] * x.stride(1):
        return x.contiguous()
    return x


def _launch(q, k, weight_q, weight_k, cos, sin, eps, pair: bool):
    """Fills and returns new contiguous outputs for q (and k when ``pair``)."""
    q, k = _rows_of(q), _rows_of(k)
    b, length, dim = q.shape
    rows = b * length
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device) if pair else q_out
    _rms_norm_rope_kernel[lambda meta: (triton.cdiv(rows, meta["ROWS"]), 2 if pair else 1)](
        q, k, weight_q, weight_k, cos.contiguous(), sin.contiguous(), q_out, k_out, q.stride(1), k.stride(1), rows,
        length, eps, DIM=dim, HALF_HEAD=cos.shape[-1], BLOCK=triton.next_power_of_2(dim))
    return q_out, k_out


@torch.library.custom_op("flashi2v::rms_norm_rope", mutates_args=())
def rms_norm_rope(x: torch.Tensor, weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim of x (B x L x dim), then RoPE on adjacent pairs.

    cos / sin: L x head_dim/2 float32 tables (``RopeCache``). Returns a contiguous B x L x dim tensor of
    x's dtype. Forward only (no autograd formula): for inference.
    """
    return _launch(x, x, weight, weight, cos, sin, eps, pair=False)[0]


@torch.library.custom_op("flashi2v::rms_norm_rope_qk", mutates_args=())
def rms_norm_rope_qk(q: torch.Tensor, k: torch.Tensor, weight_q: torch.Tensor, weight_k: torch.Tensor,
                     cos: torch.Tensor, sin: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``rms_norm_rope`` of q and of k (B x L x dim each, one eps) in one launch."""
    if q.shape != k.shape:
        raise ValueError(f"rms_norm_rope_qk: q {tuple(q.shape)} and k {tuple(k.shape)} differ in shape")
    return _launch(q, k, weight_q, weight_k, cos, sin, eps, pair=True)


@rms_norm_rope.register_fake
def _(x, weight, cos, sin, eps):
    return x.new_empty(x.shape)


@rms_norm_rope_qk.register_fake
def _(q, k, weight_q, weight_k, cos, sin, eps):
    return q.new_empty(q.shape), k.new_empty(k.shape)
