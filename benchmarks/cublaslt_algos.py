"""Every cuBLASLt algorithm its heuristic offers for the 1.3B DiT's matmuls at 49 x 480 x 832 (20,280
tokens; 40,560 with CFG in one batch), timed against torch's own call (F.linear / _addmm_activation, which
runs the heuristic's first choice) in the same run. Says whether choosing the algorithm by timing pays.
Table printed last.

    python benchmarks/cublaslt_algos.py [--candidates 16]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import matmul_ceiling, median, rel_err, table

from flashi2v.kernels.cublaslt import _PLANS, WORKSPACE_BYTES, LtMatmul, algo_config, tuned_linear

D, FFN = 1536, 8960
SHAPES = [  # name, N, K, epilogue
    ("d->d (o, cross q, cross o)", D, D, "bias"),
    ("d->3d (fused qkv)", 3 * D, D, "bias"),
    ("d->ffn + gelu", FFN, D, "gelu_bias"),
    ("ffn->d", D, FFN, "bias"),
]


def timed(fn, calls: int = 20, samples: int = 7) -> float:
    """Median ms per call over ``samples`` batches of ``calls`` back-to-back calls (the GPU stays ahead of the
    host's ctypes overhead), CUDA events around each batch."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--rows", type=int, nargs="+", default=[20280, 40560])
    args = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    ceiling = matmul_ceiling(dev)
    workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=dev)
    rows = []
    for m in args.rows:
        for name, n, k, epilogue in SHAPES:
            x, w, b = torch.randn(m, k, device=dev, dtype=dt), torch.randn(n, k, device=dev, dtype=dt) / k**0.5, torch.randn(n, device=dev, dtype=dt)
            if epilogue == "gelu_bias":
                ref_fn = lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True)
            else:
                ref_fn = lambda: F.linear(x, w, b)
            ref = ref_fn()
            flop = 2 * m * n * k
            plan = LtMatmul(m, n, k, dt, epilogue, args.candidates)
            torch_ms = timed(ref_fn)
            best = None
            for i in range(len(plan.algos)):
                out = torch.empty(m, n, device=dev, dtype=dt)
                try:
                    ms = timed(lambda: plan(x, w, b, i, workspace, out))
                except RuntimeError as e:
                    print(f"{name} M={m} algo {i}: {e}", flush=True)
                    continue
                err = rel_err(out, ref)
                cfg = algo_config(plan.algos[i])
                print(f"{name} M={m} candidate {i}: {ms:.4f} ms ({flop / ms / 1e9:.0f} TFLOP/s) err {err:.1e} {cfg}", flush=True)
                if err < 1e-2 and (best is None or ms < best[1]):
                    best = (i, ms, cfg)
            torch_again = timed(ref_fn)  # the clock drifts: torch's call timed before and after the candidates
            base = median([torch_ms, torch_again])
            # the library op (its own choice, timed at its first call) against torch's call, in alternation
            gelu = epilogue == "gelu_bias"
            tuned_linear(x, w, b, gelu)
            alt = {"torch": [], "tuned": []}
            for _ in range(6):
                alt["torch"].append(timed(ref_fn, samples=3))
                alt["tuned"].append(timed(lambda: tuned_linear(x, w, b, gelu), samples=3))
            chosen = _PLANS[(m, n, k, dt, gelu, x.device)][1]
            rows.append(dict(shape=name, rows=m, candidates=len(plan.algos), torch_ms=round(base, 4),
                             torch_tflops=round(flop / base / 1e9), best=best[0] if best else None,
                             best_ms=round(best[1], 4) if best else None,
                             best_tflops=round(flop / best[1] / 1e9) if best else None,
                             best_vs_torch=round(best[1] / base, 3) if best else None,
                             per_forward_gain_ms=round((base - best[1]) * (90 if n == D and k == D else 30), 2) if best else None,
                             chosen=chosen, alt_torch_ms=round(median(alt["torch"]), 4), alt_tuned_ms=round(median(alt["tuned"]), 4),
                             alt_tuned_vs_torch=round(median(alt["tuned"]) / median(alt["torch"]), 3)))
    print(f"\ncuBLASLt candidates vs torch's call, bf16, matmul ceiling {ceiling:.0f} TFLOP/s "
          f"(per_forward_gain_ms: x90 for d->d, x30 for the others, batch of that many rows)")
    print(table(rows, ["shape", "rows", "candidates", "torch_ms", "torch_tflops", "best", "best_ms", "best_tflops",
                       "best_vs_torch", "per_forward_gain_ms", "chosen", "alt_torch_ms", "alt_tuned_ms", "alt_tuned_vs_torch"]))


if __name__ == "__main__":
    main()
