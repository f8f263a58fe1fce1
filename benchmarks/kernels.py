"""The kernels one 1.3B DiT block is made of, timed alone at 480x832 (20,280 tokens): attention
backends (FlashAttention-4 too where flash-attn-4 is installed) and layouts, and their error against
a float32 reference, the block's matmuls (fused QKV, GELU epilogue), the Fourier 1x1x1 conv, a copy,
the norms (compiled ops vs the Triton kernels of flashi2v.fast_path.fusion.fuse_norms).
Explains where ours-fast's time goes (docs/performance.md). Table printed last.

    python benchmarks/kernels.py [--frames 49] [--tiny]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from common import bench, graphed, matmul_ceiling, median, rel_err, table

from flashi2v.kernels import triton_available
from flashi2v.kernels.qk_norm_rope import rms_norm_rope
from flashi2v.model.attention import RopeCache, fa4_attention, fa4_available
from flashi2v.model.wan import WanBlock
from flashi2v.fast_path.fusion import fuse_norms

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    tiny = args.tiny
    dev = torch.device("cpu" if tiny else "cuda")
    dt = torch.bfloat16
    L = 256 if tiny else ((args.frames - 1) // 4 + 1) * 30 * 52
    d, H, ffn, Lc = (64, 4, 128, 16) if tiny else (1536, 12, 8960, 512)
    D = d // H
    reps = 2 if tiny else 20
    rows = []
    ceiling = matmul_ceiling(dev, n=256 if tiny else 8192)

    def add(name, fn, flops=0.0, bytes_=0.0, per=1):
        try:
            ms = median(bench(fn, dev, warmup=2 if tiny else 5, reps=reps))
            if per > 1:  # fn runs the step ``per`` times: report one
                ms, flops, bytes_ = ms / per, flops / per, bytes_ / per
        except RuntimeError as err:
            rows.append(dict(kernel=name, ms=None, note=str(err).splitlines()[0][:60]))
            return
        rows.append(dict(kernel=name, ms=ms, tflops=flops / ms / 1e9 if flops else None,
                         gbps=bytes_ / ms / 1e6 if bytes_ else None, per_forward_ms=30 * ms))
        print(rows[-1], flush=True)

    r = lambda *s: torch.randn(*s, device=dev, dtype=dt)
    # attention: B x H x L x D contiguous vs the B x L x H x D projection output viewed transposed
    for b in (1, 2):
        blhd = [r(b, L, H, D).transpose(1, 2) for _ in range(3)]
        bhld = [r(b, H, L, D) for _ in range(3)]
        fl = 4 * b * L * L * d
        for be in (["math"] if tiny else ["cudnn", "flash", "efficient"]):
            if b == 2 and be == "efficient":
                continue
            for lay, qkv in (("blhd", blhd), ("bhld", bhld)):
                if b == 2 and lay == "bhld":
                    continue
                def f(qkv=qkv, be=be):
                    with sdpa_kernel([BACKENDS[be]]):
                        return F.scaled_dot_product_attention(*qkv)
                add(f"self-attn B{b} {be} {lay}", f, fl)
    errors = {}
    if not tiny and fa4_available():  # FlashAttention-4 takes our B x L x H x D layout as is
        for b in (1, 2):
            qkv = [r(b, L, H, D) for _ in range(3)]
            add(f"self-attn B{b} fa4 blhd", lambda qkv=qkv: fa4_attention(*qkv), 4 * b * L * L * d)
        qkv = [r(1, L, H, D) for _ in range(3)]
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            ref = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in qkv)).transpose(1, 2)
        errors["self-attn fa4 vs float32"] = rel_err(fa4_attention(*qkv), ref)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            errors["self-attn cudnn vs float32"] = rel_err(
                F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in qkv)).transpose(1, 2), ref)
        q1, k1, v1 = r(1, L, H, D), r(1, Lc, H, D), r(1, Lc, H, D)
        add(f"cross-attn fa4 Lk={Lc}", lambda: fa4_attention(q1, k1, v1), 4 * L * Lc * d)
    q = r(1, L, H, D).transpose(1, 2)
    kv = [r(1, Lc, H, D).transpose(1, 2) for _ in range(2)]
    for be in (["math"] if tiny else ["cudnn", "flash"]):
        def f(be=be):
            with sdpa_kernel([BACKENDS[be]]):
                return F.scaled_dot_product_attention(q, *kv)
        add(f"cross-attn {be} Lk={Lc}", f, 4 * L * Lc * d)
    # matmuls
    x, xf = r(L, d), r(L, ffn)
    wq, wqkv, w1, w2 = r(d, d), r(3 * d, d), r(ffn, d), r(d, ffn)
    b1, bd, b3 = r(ffn), r(d), r(3 * d)
    add("linear d->d (x3 for q,k,v)", lambda: F.linear(x, wq, bd), 2 * L * d * d)
    add("linear d->3d (fused qkv)", lambda: F.linear(x, wqkv, b3), 6 * L * d * d)
    add("linear d->ffn", lambda: F.linear(x, w1, b1), 2 * L * d * ffn)
    add("linear d->ffn + gelu (2 kernels)", lambda: F.gelu(F.linear(x, w1, b1), approximate="tanh"), 2 * L * d * ffn)
    add("addmm_activation d->ffn gelu", lambda: torch._addmm_activation(b1, x, w1.t(), use_gelu=True), 2 * L * d * ffn)
    add("linear ffn->d", lambda: F.linear(xf, w2, bd), 2 * L * d * ffn)
    # the residual added in the matmul's epilogue (cuBLAS beta = 1, C = the residual stream, no bias): what
    # moving ``x + gate * (y W^T)`` into the O / FFN-out matmuls would cost there (gate folded into W)
    res = r(L, d)
    add("linear d->d into the residual (addmm, C = x)", lambda: torch.addmm(res, x, wq.t()), 2 * L * d * d)
    add("linear ffn->d into the residual (addmm, C = x)", lambda: torch.addmm(res, xf, w2.t()), 2 * L * d * ffn)
    # the same weights stored column-major (out x in with strides (1, out)): cuBLAS picks its kernel per layout
    cm = lambda w: w.t().contiguous().t()
    wq_c, wqkv_c, w1_c, w2_c = cm(wq), cm(wqkv), cm(w1), cm(w2)
    add("linear d->d, weight col-major", lambda: F.linear(x, wq_c, bd), 2 * L * d * d)
    add("linear d->3d, weight col-major", lambda: F.linear(x, wqkv_c, b3), 6 * L * d * d)
    add("addmm_activation d->ffn gelu, weight col-major", lambda: torch._addmm_activation(b1, x, w1_c.t(), use_gelu=True), 2 * L * d * ffn)
    add("linear ffn->d, weight col-major", lambda: F.linear(xf, w2_c, bd), 2 * L * d * ffn)
    x2 = r(2 * L, d)  # CFG: both branches in one batch
    add("addmm_activation d->ffn gelu, 2L rows", lambda: torch._addmm_activation(b1, x2, w1.t(), use_gelu=True), 4 * L * d * ffn)
    add("addmm_activation d->ffn gelu, 2L rows, col-major", lambda: torch._addmm_activation(b1, x2, w1_c.t(), use_gelu=True), 4 * L * d * ffn)
    # the Fourier branch's 1x1x1 conv, as conv and as linear
    conv = torch.nn.Conv3d(d, d, 1).to(dev, dt)
    grid = (13, 30, 52) if not tiny else (4, 8, 8)
    vol = r(1, d, *grid)
    add("fourier 1x1x1 conv3d", lambda: conv(vol), 2 * L * d * d)
    tok = r(1, L, d)
    add("fourier 1x1x1 as linear", lambda: F.linear(tok, conv.weight.view(d, d), conv.bias), 2 * L * d * d)
    big = r(L, d)
    add("copy L x d bf16", lambda: big.clone(), 0, 2 * big.numel() * 2)
    # the norms (q and k per block; after self- and cross-attention): compiled plain ops vs the Triton
    # kernels (q and k in one launch in the "triton kernel" row; in two launches in the last row). Each call
    # is ~0.1 ms of GPU work, less than the per-call host overhead: timed as a CUDA graph of 10 calls, so
    # the GPU time is what is measured.
    torch.set_grad_enabled(False)  # inference, as the pipeline samples: the kernels need autograd off
    if not tiny:
        block = WanBlock(d, ffn, H, True, 1e-6).to(dev, dt)
        fused_block = fuse_norms(copy.deepcopy(block)) if triton_available() else None
        cos, sin = RopeCache(D)(grid, dev)
        qkv, y = r(1, L, 3 * d), r(1, L, d)
        q, k = qkv[..., :d], qkv[..., d:2 * d]  # as the fused QKV matmul leaves them: strided rows
        x = qkv[..., 2 * d:].contiguous()
        gate, scale, shift = (torch.randn(1, 3, d, device=dev) * 0.1).chunk(3, dim=1)
        steps = {  # name: (the step on a block, bytes read + written)
            "q+k rmsnorm+rope": (lambda b: b.self_attn.norm_qk(q, k, (cos, sin)), 4 * x.numel() * 2),
            "residual+layernorm": (lambda b: b.residual_norm(x, y, gate, b.norm3), 4 * x.numel() * 2),
            "residual+layernorm+adaln": (lambda b: b.residual_norm(x, y, None, b.norm2, scale, shift), 4 * x.numel() * 2),
        }
        for name, (step, io) in steps.items():
            plain = torch.compile(lambda step=step: step(block), fullgraph=True, dynamic=False)
            add(f"{name}, compiled ops (x10 graph)", graphed(plain, 10), 0, 10 * io, per=10)
            if fused_block is None:
                continue
            kernel = torch.compile(lambda step=step: step(fused_block), fullgraph=True, dynamic=False)
            add(f"{name}, triton kernel (x10 graph)", graphed(kernel, 10), 0, 10 * io, per=10)
            errors[f"{name} triton vs compiled ops"] = rel_err(
                torch.cat([t.flatten() for t in _tuple(step(fused_block))]), torch.cat([t.flatten() for t in _tuple(plain())]))
        if fused_block is not None:
            attn = fused_block.self_attn
            two = lambda: (rms_norm_rope(q, attn.norm_q.weight, cos, sin, 1e-6), rms_norm_rope(k, attn.norm_k.weight, cos, sin, 1e-6))
            add("q+k rmsnorm+rope, triton kernel, two launches (x10 graph)", graphed(two, 10), 0, 40 * x.numel() * 2, per=10)
    print(f"\nkernels at {L} tokens, bf16 matmul ceiling {ceiling:.0f} TFLOP/s (per_forward_ms = 30 x, one per block)")
    for k, v in errors.items():
        print(f"{k}: relative error {v:.2e}")
    print(table(rows, ["kernel", "ms", "tflops", "gbps", "per_forward_ms", "note"]))


if __name__ == "__main__":
    main()
