"""Rows per program x warps for the Triton norm kernels of flashi2v.kernels, at the 1.3B's 49 x 480 x 832
shape (20,280 tokens x 1,536, bf16): each configuration launched directly (no autotuner), timed as a CUDA
graph of 10 calls; then the q+k kernel as ``fuse_norms`` runs it, eagerly (its autotuner choosing) and inside
torch.compile, to see which configuration each path ends up with. Table printed last.

    python benchmarks/norm_kernel_configs.py
"""

from __future__ import annotations

import copy

import torch

from common import events_ms, graphed, table

from flashi2v.kernels.qk_norm_rope import _rms_norm_rope_kernel, rms_norm_rope_qk
from flashi2v.kernels.residual_layer_norm import _residual_layer_norm_kernel
from flashi2v.model.attention import RopeCache
from flashi2v.model.wan import WanBlock
from flashi2v.fast_path.fusion import fuse_norms

CONFIGS = [(rows, warps) for rows in (1, 2, 4, 8) for warps in (4, 8, 16)]


def graph_ms(fn, calls: int = 10, samples: int = 7) -> float:
    """Median ms per call of a CUDA graph of ``calls`` calls of ``fn``, over ``samples`` replays."""
    return events_ms(graphed(fn, calls), samples, calls)


def main() -> None:
    dev, dt, length, dim, heads = torch.device("cuda"), torch.bfloat16, 20280, 1536, 12
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    qkv = torch.randn(1, length, 3 * dim, device=dev, dtype=dt)
    q, k = qkv[..., :dim], qkv[..., dim:2 * dim]
    x, y = torch.randn(2, 1, length, dim, device=dev, dtype=dt).unbind(0)
    cos, sin = RopeCache(dim // heads)((13, 30, 52), dev)
    block = WanBlock(dim, 64, heads, True, 1e-6).to(dev, dt)
    wq, wk = block.self_attn.norm_q.weight, block.self_attn.norm_k.weight
    gate, scale, shift = (torch.randn(3, 1, 1, dim, device=dev) * 0.1).unbind(0)
    qo, ko, res, out = (torch.empty(1, length, dim, device=dev, dtype=dt) for _ in range(4))
    rows, rope_bytes, ln_bytes = length, 4 * q.numel() * 2, 4 * x.numel() * 2
    results = []
    for r, w in CONFIGS:
        grid = ((rows + r - 1) // r, 2)
        rope = lambda: _rms_norm_rope_kernel.fn[grid](q, k, wq, wk, cos, sin, qo, ko, q.stride(1), k.stride(1), rows, length,
                                                      1e-6, DIM=dim, HALF_HEAD=cos.shape[-1], BLOCK=2048, ROWS=r, num_warps=w)
        ln = lambda: _residual_layer_norm_kernel[((rows + r - 1) // r,)](
            x, y, x, x, x, scale, shift, res, out, rows, length, 1e-6, DIM=dim, BLOCK=2048, ROWS=r, HAS_Y=True,
            HAS_GATE=False, AFFINE=False, MODULATE=True, num_warps=w)
        for name, fn, nbytes in (("q+k rmsnorm+rope", rope, rope_bytes), ("residual+layernorm+adaln", ln, ln_bytes)):
            try:
                ms = graph_ms(fn)
            except Exception as e:  # a configuration that does not fit (registers) is reported, not fatal
                print(f"{name} rows {r} warps {w}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            results.append(dict(kernel=name, rows=r, warps=w, us=round(1000 * ms, 1), tbps=round(nbytes / ms / 1e9, 2)))
            print(results[-1], flush=True)
    fused = fuse_norms(copy.deepcopy(block))
    eager = lambda: rms_norm_rope_qk(q, k, wq, wk, cos, sin, 1e-6)
    results.append(dict(kernel="q+k rmsnorm+rope, eager op (autotuned)", us=round(1000 * graph_ms(eager), 1)))
    print("eager autotuner's choice:", _rms_norm_rope_kernel.best_config, flush=True)
    compiled = torch.compile(lambda: fused.self_attn.norm_qk(q, k, (cos, sin)), fullgraph=True, dynamic=False)
    results.append(dict(kernel="q+k rmsnorm+rope, compiled (fuse_norms)", us=round(1000 * graph_ms(compiled), 1)))
    print("after compile, autotuner's choice:", _rms_norm_rope_kernel.best_config, flush=True)
    print("\nnorm kernel configurations, 20,280 x 1,536 bf16, CUDA graph of 10 calls")
    print(table(results, ["kernel", "rows", "warps", "us", "tbps"]))


if __name__ == "__main__":
    main()
