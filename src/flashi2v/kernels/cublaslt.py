"""``x @ W.T + b`` (optionally GELU(tanh) after it) through cuBLASLt with the algorithm chosen by timing
(ctypes; CUDA only, inference).

torch asks cuBLASLt's heuristic for one algorithm per shape and runs it. ``LtMatmul`` asks for up to
``candidates`` algorithms for one shape and runs any of them by index; ``tuned_linear`` times them at the
first call of each shape and keeps the fastest. On an H100 at 20,280 tokens the heuristic's first choice for
the DiT's 1,536 -> 8,960 matmul with the GELU epilogue runs at ~610 TFLOP/s and its second at ~690
(``benchmarks/cublaslt_algos.py``, docs/performance.md). Same kernels family, same result bits.

Row-major y (M x N) = x (M x K) @ W.T, W (N x K) row-major, is column-major y.T = W.T-as-stored @ x.T:
cuBLASLt's A is W (transposed), B is x, D is y, and the bias runs along D's rows (the N output features).
"""

from __future__ import annotations

import ctypes
import glob
import os

import torch
import torch.nn.functional as F

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


# -- the fastest candidate per shape, as a custom op -----------------------------------------------------

_PLANS: dict[tuple, tuple[LtMatmul, int]] = {}
_WORKSPACES: dict[int, torch.Tensor] = {}
TUNING_CALLS = 5


def _workspace(device: torch.device) -> torch.Tensor:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _WORKSPACES:
        _WORKSPACES[index] = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)
    return _WORKSPACES[index]


def _time_candidates(plan: LtMatmul, x, weight, bias, workspace) -> int:
    """Index of the fastest candidate: each run TUNING_CALLS times back to back, twice, best of the two."""
    out = torch.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
    best, best_ms = 0, float("inf")
    for i in range(len(plan.algos)):
        try:
            plan(x, weight, bias, i, workspace, out)
        except RuntimeError:
            continue
        for _ in range(2):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(TUNING_CALLS):
                plan(x, weight, bias, i, workspace, out)
            end.record()
            end.synchronize()
            if start.elapsed_time(end) < best_ms:
                best, best_ms = i, start.elapsed_time(end)
    return best


def _aligned(*tensors: torch.Tensor) -> bool:
    return all(t.data_ptr() % 256 == 0 for t in tensors)  # what the heuristic's candidates assume by default


@torch.library.custom_op("flashi2v::tuned_linear", mutates_args=())
def tuned_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gelu: bool) -> torch.Tensor:
    """``x @ weight.T + bias`` (then GELU(tanh) when ``gelu``) for x of any leading shape, through the fastest
    cuBLASLt candidate for its shape (timed at the shape's first call outside a CUDA-graph capture). torch's
    own call where cuBLASLt offers nothing for the shape or a pointer is not 256-byte aligned."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    weight, bias = weight.contiguous(), bias.contiguous()
    m, k, n = x2.shape[0], x2.shape[1], weight.shape[0]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    key = (m, n, k, x.dtype, gelu, x.device)
    plan = _PLANS.get(key)
    if plan is None and x.dtype in _DTYPES and _aligned(x2, weight, bias, out):
        lt = LtMatmul(m, n, k, x.dtype, "gelu_bias" if gelu else "bias")
        if not lt.algos:
            plan = _PLANS[key] = (None, -1)
        elif torch.cuda.is_current_stream_capturing():  # no timing inside a capture: the heuristic's choice
            plan = (lt, 0)
        else:
            plan = _PLANS[key] = (lt, _time_candidates(lt, x2, weight, bias, _workspace(x.device)))
    if plan is None or plan[0] is None or not _aligned(x2, weight, bias, out):
        if gelu:
            return torch._addmm_activation(bias, x2, weight.t(), use_gelu=True).view(*x.shape[:-1], n)
        return F.linear(x2, weight, bias).view(*x.shape[:-1], n)
    plan[0](x2, weight, bias, plan[1], _workspace(x.device), out)
    return out.view(*x.shape[:-1], n)


@tuned_linear.register_fake
def _(x, weight, bias, gelu):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
