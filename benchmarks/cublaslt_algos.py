"""Every cuBLASLt algorithm its heuristic offers for the 1.3B DiT's matmuls at 49 x 480 x 832 (20,280
tokens; 40,560 with CFG in one batch), timed against torch's own call (F.linear / _addmm_activation, which
runs the heuristic's first choice) in the same run; then the fastest candidate of that scan against
torch's call again, in alternation. Says whether choosing the algorithm by timing pays (it does
not: docs/performance.md, "Where the missed target stands"; so flashi2v does not ship it, and the cuBLASLt calls live here).
Table printed last.

cuBLASLt through ctypes: row-major y (M x N) = x (M x K) @ W.T, W (N x K) row-major, is column-major
y.T = W.T-as-stored @ x.T: cuBLASLt's A is W (transposed), B is x, D is y, the bias along D's rows.

    python benchmarks/cublaslt_algos.py [--candidates 16]
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os

import torch
import torch.nn.functional as F

from common import events_ms, matmul_ceiling, median, rel_err, table


_CUBLAS_COMPUTE_32F, _CUDA_R_32F = 68, 0
_DTYPES = {torch.bfloat16: 14, torch.float16: 2}
_DESC_TRANSA, _DESC_TRANSB, _DESC_EPILOGUE, _DESC_BIAS_POINTER = 3, 4, 7, 8
_EPILOGUE = {"bias": 4, "gelu_bias": 36}
_OP_N, _OP_T = 0, 1
_PREF_MAX_WORKSPACE_BYTES = 1
WORKSPACE_BYTES = 32 << 20


class _HeuristicResult(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves_count", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


_LIB = None


def _lib() -> ctypes.CDLL:
    """libcublasLt as loaded by torch (found in this process's mapped files after a torch matmul), else the
    nvidia-cublas wheel's copy, else the system's."""
    global _LIB
    if _LIB is None:
        torch.ones(8, 8, device="cuda", dtype=torch.bfloat16) @ torch.ones(8, 8, device="cuda", dtype=torch.bfloat16)
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libcublasLt" in line})
        try:
            import nvidia.cublas

            for root in nvidia.cublas.__path__:
                paths += sorted(glob.glob(os.path.join(root, "lib", "libcublasLt.so*")))
        except ImportError:
            pass
        _LIB = ctypes.CDLL(paths[0] if paths else "libcublasLt.so")
    return _LIB


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"cuBLASLt {what} failed with status {status}")


class LtMatmul:
    """One problem shape: y (M x N) = epilogue(x (M x K) @ W.T + b), with up to ``candidates`` algorithms."""

    _handle = None

    def __init__(self, m: int, n: int, k: int, dtype: torch.dtype, epilogue: str = "bias", candidates: int = 16):
        lib = _lib()
        if LtMatmul._handle is None:
            LtMatmul._handle = ctypes.c_void_p()
            _check(lib.cublasLtCreate(ctypes.byref(LtMatmul._handle)), "create")
        self.shape, self.dtype, self.epilogue = (m, n, k), dtype, epilogue
        self.desc = ctypes.c_void_p()
        _check(lib.cublasLtMatmulDescCreate(ctypes.byref(self.desc), _CUBLAS_COMPUTE_32F, _CUDA_R_32F), "desc")
        self._set(_DESC_TRANSA, ctypes.c_int32(_OP_T))
        self._set(_DESC_TRANSB, ctypes.c_int32(_OP_N))
        self._set(_DESC_EPILOGUE, ctypes.c_uint32(_EPILOGUE[epilogue]))
        cuda_type = _DTYPES[dtype]
        self.a, self.b, self.d = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        for layout, rows, cols in ((self.a, k, n), (self.b, k, m), (self.d, n, m)):
            _check(lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), cuda_type, ctypes.c_uint64(rows),
                                                  ctypes.c_uint64(cols), ctypes.c_int64(rows)), "layout")
        pref = ctypes.c_void_p()
        _check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "preference")
        ws = ctypes.c_uint64(WORKSPACE_BYTES)
        _check(lib.cublasLtMatmulPreferenceSetAttribute(pref, _PREF_MAX_WORKSPACE_BYTES, ctypes.byref(ws),
                                                        ctypes.c_size_t(ctypes.sizeof(ws))), "preference attribute")
        results = (_HeuristicResult * candidates)()
        found = ctypes.c_int(0)
        _check(lib.cublasLtMatmulAlgoGetHeuristic(LtMatmul._handle, self.desc, self.a, self.b, self.d, self.d, pref,
                                                  candidates, results, ctypes.byref(found)), "heuristic")
        lib.cublasLtMatmulPreferenceDestroy(pref)
        self.algos = [results[i] for i in range(found.value) if results[i].state == 0]
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def _set(self, attr: int, value) -> None:
        _check(_lib().cublasLtMatmulDescSetAttribute(self.desc, attr, ctypes.byref(value),
                                                     ctypes.c_size_t(ctypes.sizeof(value))),
               f"attribute {attr}")

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, algo: int,
                 workspace: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x: M x K, weight: N x K, bias: N, all contiguous, of this problem's dtype, on one GPU."""
        m, n, _ = self.shape
        out = torch.empty((m, n), dtype=x.dtype, device=x.device) if out is None else out
        self._set(_DESC_BIAS_POINTER, ctypes.c_void_p(bias.data_ptr()))
        result = self.algos[algo]
        _check(_lib().cublasLtMatmul(
            LtMatmul._handle, self.desc, ctypes.byref(self.alpha), ctypes.c_void_p(weight.data_ptr()), self.a,
            ctypes.c_void_p(x.data_ptr()), self.b, ctypes.byref(self.beta), ctypes.c_void_p(out.data_ptr()), self.d,
            ctypes.c_void_p(out.data_ptr()), self.d, ctypes.byref(result.algo), ctypes.c_void_p(workspace.data_ptr()),
            ctypes.c_size_t(WORKSPACE_BYTES), ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)), "matmul")
        return out


def algo_config(result: _HeuristicResult) -> dict:
    """What cuBLASLt says about one candidate: its algorithm id, tile id, stages id, split-k, waves."""
    out = {"waves": round(result.waves_count, 2)}
    for name, attr in (("algo_id", 0), ("tile_id", 1), ("split_k", 2), ("stages_id", 6)):
        value, written = ctypes.c_int32(0), ctypes.c_size_t(0)
        status = _lib().cublasLtMatmulAlgoConfigGetAttribute(ctypes.byref(result.algo), attr, ctypes.byref(value),
                                                            ctypes.c_size_t(ctypes.sizeof(value)), ctypes.byref(written))
        out[name] = value.value if status == 0 else None
    return out


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
    return events_ms(lambda: [fn() for _ in range(calls)], samples, calls)


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
            # the scan's fastest candidate against torch's call, in alternation (a drifting clock favours neither)
            alt = {"torch": [], "best": []}
            if best is not None:
                out = torch.empty(m, n, device=dev, dtype=dt)
                for _ in range(6):
                    alt["torch"].append(timed(ref_fn, samples=3))
                    alt["best"].append(timed(lambda: plan(x, w, b, best[0], workspace, out), samples=3))
            rows.append(dict(shape=name, rows=m, candidates=len(plan.algos), torch_ms=round(base, 4),
                             torch_tflops=round(flop / base / 1e9), best=best[0] if best else None,
                             best_ms=round(best[1], 4) if best else None,
                             best_tflops=round(flop / best[1] / 1e9) if best else None,
                             best_vs_torch=round(best[1] / base, 3) if best else None,
                             per_forward_gain_ms=round((base - best[1]) * (90 if n == D and k == D else 30), 2) if best else None,
                             alt_torch_ms=round(median(alt["torch"]), 4) if best else None,
                             alt_best_ms=round(median(alt["best"]), 4) if best else None,
                             alt_best_vs_torch=round(median(alt["best"]) / median(alt["torch"]), 3) if best else None))
    print(f"\ncuBLASLt candidates vs torch's call, bf16, matmul ceiling {ceiling:.0f} TFLOP/s "
          f"(per_forward_gain_ms: x90 for d->d, x30 for the others, batch of that many rows)")
    print(table(rows, ["shape", "rows", "candidates", "torch_ms", "torch_tflops", "best", "best_ms", "best_tflops",
                       "best_vs_torch", "per_forward_gain_ms", "alt_torch_ms", "alt_best_ms", "alt_best_vs_torch"]))


if __name__ == "__main__":
    main()
