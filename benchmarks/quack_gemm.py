"""The 1.3B DiT's matmuls at 480x832 (20,280 tokens per sample): cuBLAS through torch against quack's Hopper
GEMM (``flashi2v.kernels.hopper_gemm``), in one process on one GPU.

For each matmul of a block (fused q/k/v, o, FFN up with bias + GELU(tanh), FFN down) at batch 1 and 2 (CFG
in one batch): every quack candidate configuration (its compile time and ms), the one ``hopper_gemm`` chose,
then the chosen one and torch's call timed in alternation (CUDA graphs of 10 calls each, ``--rounds`` rounds,
medians), TFLOP/s against the bf16 matmul ceiling measured in the same run, and each one's relative error
against a float32 matmul of the same bf16 inputs. Table printed last; JSON to $OUT (or --out).

    python benchmarks/quack_gemm.py                  # GPU (sm_90), needs quack-kernels (flash-attn-4 installs it)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import events_ms, graphed, matmul_ceiling, median, out_dir, rel_err, save_json, table

from flashi2v.kernels import hopper_gemm

# (name, in features, out features, GELU epilogue) of the 1.3B block's matmuls
SHAPES = [("qkv (fused)", 1536, 4608, False), ("o", 1536, 1536, False),
          ("ffn up + gelu", 1536, 8960, True), ("ffn down", 8960, 1536, False)]


def torch_linear(x, w, b, gelu):
    """What the fast path runs today: F.linear, or cuBLASLt's bias + GELU epilogue (flashi2v.optimize.LinearGELU)."""
    if gelu:
        return torch._addmm_activation(b, x, w.t(), use_gelu=True)
    return F.linear(x, w, b)


def reference(x, w, b, gelu):
    y = F.linear(x.float(), w.float(), b.float())
    return F.gelu(y, approximate="tanh") if gelu else y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=20280)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not hopper_gemm.quack_available():
        raise SystemExit("quack_gemm.py needs quack-kernels and an sm_90 GPU")
    out = out_dir(args.out)
    dev, dt = torch.device("cuda"), torch.bfloat16
    ceiling = matmul_ceiling(dev)
    print(f"bf16 matmul ceiling: {ceiling:.0f} TFLOP/s", flush=True)
    rows, candidates = [], []
    for batch in args.batches:
        m = batch * args.tokens
        for name, k, n, gelu in SHAPES:
            g = torch.Generator(device=dev).manual_seed(0)
            x = torch.randn(m, k, device=dev, dtype=dt, generator=g)
            w = (torch.randn(n, k, device=dev, dtype=dt, generator=g) / k**0.5).to(dt)
            b = torch.randn(n, device=dev, dtype=dt, generator=g) * 0.1
            flop = 2 * m * k * n
            try:
                chosen = hopper_gemm._choose(x, w, b, gelu)
            except RuntimeError as exc:  # quack could build none of the candidates: say so, go on
                print(f"{name} batch {batch}: {exc}"[:2000], flush=True)
                rows.append(dict(matmul=name, batch=batch, M=m, N=n, K=k, chosen="none built"))
                continue
            for cand, t in hopper_gemm._timings[(m, n, k, gelu, True, dt, x.device)].items():
                candidates.append(dict(matmul=name, batch=batch, config=str(cand), ms=t.get("ms"),
                                       compile_s=t.get("compile_s"), error=t.get("error"),
                                       chosen=cand == chosen))
                print(candidates[-1], flush=True)
            ref = reference(x, w, b, gelu)
            err_torch = rel_err(torch_linear(x, w, b, gelu), ref)
            err_quack = rel_err(hopper_gemm.linear(x, w, b, gelu=gelu), ref)
            del ref
            runs = {}
            for label, fn in (("torch", lambda: torch_linear(x, w, b, gelu)),
                              ("quack", lambda: hopper_gemm.linear(x, w, b, gelu=gelu))):
                try:
                    runs[label] = (graphed(fn, 10), 10)
                except Exception as exc:  # capture failed: time plain calls (host launch cost included)
                    print(f"{label}: no CUDA graph ({type(exc).__name__}: {exc}); timing plain calls", flush=True)
                    torch.cuda.synchronize()
                    runs[label] = (lambda fn=fn: [fn() for _ in range(10)], 10)
            times = {label: [] for label in runs}
            for r in range(args.rounds):  # alternate, reversing the order every other round
                for label in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                    run, per = runs[label]
                    times[label].append(events_ms(run, 3, per))
            ms_t, ms_q = median(times["torch"]), median(times["quack"])
            rows.append(dict(matmul=name, batch=batch, M=m, N=n, K=k, torch_ms=ms_t, quack_ms=ms_q,
                             torch_tflops=flop / ms_t / 1e9, quack_tflops=flop / ms_q / 1e9,
                             quack_vs_torch=ms_q / ms_t, chosen=str(chosen), err_torch=err_torch,
                             err_quack=err_quack, ceiling=ceiling))
            print(rows[-1], flush=True)
    save_json(out / "quack_gemm.json", dict(ceiling_tflops=ceiling, rows=rows, candidates=candidates))
    print()
    print(table(candidates, ["matmul", "batch", "config", "ms", "compile_s", "chosen", "error"]))
    print()
    print(f"matmul ceiling {ceiling:.0f} TFLOP/s (bf16 8192^3, same run)")
    print(table(rows, ["matmul", "batch", "torch_ms", "quack_ms", "quack_vs_torch", "torch_tflops", "quack_tflops",
                       "chosen", "err_torch", "err_quack"]))


if __name__ == "__main__":
    main()
