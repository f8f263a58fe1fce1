"""The 1.3B DiT's matmuls through quack's Hopper GEMM (the CuTe-DSL kernels flash-attn-4 depends on) against
cuBLAS through torch: alone, and (via ``use_quack_gemm``, which dit_forward.py's "+quack" variants apply) in
the forward.

Why: alone, cuBLASLt's bias + GELU(tanh) epilogue ran the FFN up-projection at ~640 TFLOP/s on an H100 against
~740 for the plain matmul; quack's persistent warp-specialised kernels hide their epilogue behind the next
tile's main loop. Result (docs/performance.md, "Where the missed target stands"): alone, 10 calls replayed back to back, quack was
up to 0.79x cuBLAS at batch 1, but in the forward its kernels took as long as cuBLAS's and the forward got
1.2-3.9 ms slower (runs of at least 12 forwards per variant), so the library does not use it; this script keeps the probe.

For each matmul of a block (fused q/k/v, o, FFN up with bias + GELU(tanh), FFN down) at batch 1 and 2 (CFG
in one batch): every candidate configuration (its compile time and ms), the fastest, then it and torch's call
timed in alternation (CUDA graphs of 10 calls each, ``--rounds`` rounds, medians), TFLOP/s against the bf16
matmul ceiling measured in the same run, and each one's relative error against a float32 matmul of the same
bf16 inputs. Table printed last; JSON to $OUT (or --out).

    python benchmarks/quack_gemm.py      # GPU (sm_90), needs quack-kernels (flash-attn-4 installs it)

quack must be installed under a path with "site-packages" in it: quack fingerprints functions of packages
elsewhere by their globals, and cutlass-dsl's hold a ContextVar it cannot key (the GELU epilogue then fails).
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import events_ms, graphed, matmul_ceiling, median, out_dir, rel_err, save_json, table

from flashi2v.fast_path.fusion import FusedQKVAttention, LinearGELU, fuse_ffn_gelu

# (tile_m, tile_n, pingpong, cluster_m, cluster_n): quack's SM90 default first, then cooperative (two warp
# groups on one 256-row tile) and ping-pong (one tile per warp group) shapes that fit N = 1,536 / 4,608 / 8,960
CANDIDATES = ((128, 192, True, 2, 1), (128, 192, True, 1, 2), (128, 256, False, 2, 1), (256, 128, False, 2, 1),
              (256, 192, False, 2, 1), (128, 128, True, 2, 1), (192, 128, True, 2, 1), (256, 160, False, 2, 1))

# (name, in features, out features, GELU epilogue) of the 1.3B block's matmuls
SHAPES = [("qkv (fused)", 1536, 4608, False), ("o", 1536, 1536, False),
          ("ffn up + gelu", 1536, 8960, True), ("ffn down", 8960, 1536, False)]

_chosen: dict = {}   # (M, N, K, gelu, dtype) -> fastest candidate
_timings: dict = {}  # same key -> {candidate: {"ms", "compile_s"} or {"error"}}


def quack_available() -> bool:
    return (importlib.util.find_spec("quack") is not None and torch.cuda.is_available()
            and torch.cuda.get_device_capability()[0] == 9)


def run_quack(x2d, weight, bias, gelu: bool, candidate, out=None):
    """``x2d @ weight.T + bias`` (then GELU(tanh)) by quack with one pinned configuration."""
    from quack import gemm_interface as qi
    from quack.gemm_config import GemmConfig

    tile_m, tile_n, pingpong, cluster_m, cluster_n = candidate
    config = GemmConfig(tile_m=tile_m, tile_n=tile_n, pingpong=pingpong, cluster_m=cluster_m, cluster_n=cluster_n,
                        swap_ab=False, is_dynamic_persistent=False, device_capacity=9)
    w_kn = weight.t()  # (K, N) view of the (N, K) nn.Linear weight: K-major, read as it is
    if gelu:
        return qi.gemm_act(x2d, w_kn, bias=bias, activation="gelu_tanh_approx", store_preact=False,
                           postact_out=out, tuned=False, config=config)[1]
    if out is None:
        out = torch.empty(x2d.shape[0], weight.shape[0], dtype=x2d.dtype, device=x2d.device)
    qi.gemm_tuned.fn(x2d, w_kn, out, bias=bias, config=config)  # .fn: the function without quack's autotuner
    return out


def choose(x2d, weight, bias, gelu: bool):
    """The fastest candidate for this shape, timed once (after quack compiles each candidate)."""
    key = (x2d.shape[0], weight.shape[0], weight.shape[1], gelu, x2d.dtype)
    if key in _chosen:
        return _chosen[key]
    out = torch.empty(x2d.shape[0], weight.shape[0], dtype=x2d.dtype, device=x2d.device)
    timings = {}
    for cand in CANDIDATES:
        try:
            t0 = time.perf_counter()
            run_quack(x2d, weight, bias, gelu, cand, out)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
        except Exception as exc:
            timings[cand] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        ms = events_ms(lambda c=cand: run_quack(x2d, weight, bias, gelu, c, out), 10)
        timings[cand] = {"ms": ms, "compile_s": compile_s}
    timed = {c: t["ms"] for c, t in timings.items() if "ms" in t}
    if not timed:
        raise RuntimeError(f"quack built none of the candidates for {key[:4]}: {timings}")
    _chosen[key], _timings[key] = min(timed, key=timed.get), timings
    return _chosen[key]


@torch.library.custom_op("flashi2v_bench::quack_linear", mutates_args=())
def quack_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gelu: bool) -> torch.Tensor:
    """Opaque to torch.compile, as the library's norm kernels are."""
    x2d = x.reshape(-1, x.shape[-1]).contiguous()
    return run_quack(x2d, weight, bias, gelu, choose(x2d, weight, bias, gelu)).view(*x.shape[:-1], weight.shape[0])


@quack_linear.register_fake
def _(x, weight, bias, gelu):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class QuackLinear(nn.Linear):
    def forward(self, x):
        return quack_linear(x, self.weight, self.bias, False) if x.is_cuda else super().forward(x)


class QuackLinearGELU(LinearGELU):
    def forward(self, x):
        return quack_linear(x, self.weight, self.bias, True) if x.is_cuda else super().forward(x)


class QuackQKVAttention(FusedQKVAttention):
    def project(self, x, context):
        if context is not None or not x.is_cuda:
            return super().project(x, context)
        return quack_linear(x, self.qkv_weight, self.qkv_bias, False).chunk(3, dim=-1)


def use_quack_gemm(model: nn.Module, ffn_up: bool = True, others: bool = True) -> nn.Module:
    """The blocks' FFN up-projection (bias + GELU epilogue; ``ffn_up``) and every other block matmul
    (self- / cross-attention q / k / v / o, fused QKV included, FFN down; ``others``) by quack, in place.
    Apply after ``apply_fast_path`` and before the first call (the compiled blocks trace on their first call)."""
    fuse_ffn_gelu(model)
    for block in model.blocks:
        if ffn_up:
            block.ffn[0].__class__ = QuackLinearGELU
        if others:
            for m in [block.ffn[2]] + [getattr(a, n) for a in (block.self_attn, block.cross_attn) for n in "qkvo"]:
                if type(m) is nn.Linear:
                    m.__class__ = QuackLinear
            attn = block.self_attn
            if isinstance(attn, FusedQKVAttention) and not isinstance(attn, QuackQKVAttention):
                attn.__class__ = type("Quack" + type(attn).__name__, (QuackQKVAttention, type(attn)), {})
    return model


def torch_linear(x, w, b, gelu):
    """What the fast path runs: F.linear, or cuBLASLt's bias + GELU epilogue (flashi2v.fast_path.fusion.LinearGELU)."""
    return torch._addmm_activation(b, x, w.t(), use_gelu=True) if gelu else F.linear(x, w, b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=20280)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not quack_available():
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
                chosen = choose(x, w, b, gelu)
            except RuntimeError as exc:  # quack built none of the candidates: say so, go on
                print(f"{name} batch {batch}: {exc}"[:2000], flush=True)
                rows.append(dict(matmul=name, batch=batch, M=m, N=n, K=k, chosen="none built"))
                continue
            for cand, t in _timings[(m, n, k, gelu, dt)].items():
                candidates.append(dict(matmul=name, batch=batch, config=str(cand), ms=t.get("ms"),
                                       compile_s=t.get("compile_s"), error=t.get("error"), chosen=cand == chosen))
                print(candidates[-1], flush=True)
            ref = F.linear(x.float(), w.float(), b.float())
            ref = F.gelu(ref, approximate="tanh") if gelu else ref
            err_torch = rel_err(torch_linear(x, w, b, gelu), ref)
            err_quack = rel_err(quack_linear(x, w, b, gelu), ref)
            del ref
            runs = {"torch": graphed(lambda: torch_linear(x, w, b, gelu), 10),
                    "quack": graphed(lambda: quack_linear(x, w, b, gelu), 10)}
            times = {label: [] for label in runs}
            for r in range(args.rounds):  # alternate, reversing the order every other round
                for label in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                    times[label].append(events_ms(runs[label], 3, 10))
            ms_t, ms_q = median(times["torch"]), median(times["quack"])
            rows.append(dict(matmul=name, batch=batch, M=m, N=n, K=k, torch_ms=ms_t, quack_ms=ms_q,
                             torch_tflops=flop / ms_t / 1e9, quack_tflops=flop / ms_q / 1e9,
                             quack_vs_torch=ms_q / ms_t, chosen=str(chosen), err_torch=err_torch,
                             err_quack=err_quack))
            print(rows[-1], flush=True)
    save_json(out / "quack_gemm.json", dict(ceiling_tflops=ceiling, rows=rows, candidates=candidates))
    print()
    print(table(candidates, ["matmul", "batch", "config", "ms", "compile_s", "chosen", "error"]))
    print()
    print(f"matmul ceiling {ceiling:.0f} TFLOP/s (bf16 8192^3, same run); alone = CUDA graphs of 10 calls")
    print(table(rows, ["matmul", "batch", "torch_ms", "quack_ms", "quack_vs_torch", "torch_tflops", "quack_tflops",
                       "chosen", "err_torch", "err_quack"]))


if __name__ == "__main__":
    main()
