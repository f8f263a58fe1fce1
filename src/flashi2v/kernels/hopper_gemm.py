"""The DiT's linear layers through quack's Hopper GEMM (the CuTe-DSL kernels flash-attn-4 is built on).

cuBLASLt's bias + GELU(tanh) epilogue runs the 1.3B's FFN up-projection at ~640 TFLOP/s on an H100, against
~740 for the same matmul without it (docs/performance.md): its kernels for that epilogue do not hide the
epilogue behind the next tile's main loop. quack's persistent, warp-specialised kernels (ping-pong or
cooperative warp groups, clusters, TMA stores) do. ``linear`` computes ``x @ weight.T + bias``, optionally
followed by GELU(tanh) in the epilogue, in float32 with one rounding to x's dtype at the end, like the cuBLAS
calls it replaces.

Which tile / cluster configuration runs is chosen by timing a few candidates on the first call of each
shape (``CANDIDATES``; a CUDA-event race of a few calls each, after quack compiles each candidate once), as
the Triton norm kernels autotune theirs. Opaque custom ops, as in ``flashi2v.kernels.qk_norm_rope`` (which
says why). Needs quack-kernels (installed with flash-attn-4, ``pip install flashi2v[fa4]``) and an sm_90 GPU.
"""

from __future__ import annotations

import importlib.util
import time

import torch

__all__ = ["CANDIDATES", "chosen_configs", "linear", "quack_available"]

# (tile_m, tile_n, pingpong, cluster_m, cluster_n): quack's own SM90 default first, then its cooperative
# (two warp groups on one 256-row tile) and ping-pong (one tile per warp group) shapes that fit these
# matmuls' N (1,536 / 4,608 / 8,960) without a mostly empty last column of tiles.
CANDIDATES: tuple[tuple[int, int, bool, int, int], ...] = (
    (128, 192, True, 2, 1),
    (128, 192, True, 1, 2),
    (128, 256, False, 2, 1),
    (256, 128, False, 2, 1),
    (256, 192, False, 2, 1),
    (128, 128, True, 2, 1),
    (192, 128, True, 2, 1),
    (256, 160, False, 2, 1),
)

_chosen: dict[tuple, tuple] = {}  # (M, N, K, gelu, bias?, dtype, device) -> the candidate that won
_timings: dict[tuple, dict] = {}


def quack_available(device: torch.device | str | None = None) -> bool:
    """True when quack is importable and ``device`` (default: the current CUDA device) is a Hopper GPU."""
    if importlib.util.find_spec("quack") is None or not torch.cuda.is_available():
        return False
    device = torch.device(device if device is not None else "cuda")
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def _config(candidate):
    from quack.gemm_config import GemmConfig

    tile_m, tile_n, pingpong, cluster_m, cluster_n = candidate
    return GemmConfig(tile_m=tile_m, tile_n=tile_n, pingpong=pingpong, cluster_m=cluster_m, cluster_n=cluster_n,
                      swap_ab=False, is_dynamic_persistent=False, device_capacity=9)


def _run(x2d, weight, bias, gelu: bool, candidate, out=None):
    from quack import gemm_interface as qi

    w_kn = weight.t()  # (K, N) view of the (N, K) nn.Linear weight: K-major, quack reads it as it is
    config = _config(candidate)
    if gelu:
        return qi.gemm_act(x2d, w_kn, bias=bias, activation="gelu_tanh_approx", store_preact=False,
                           postact_out=out, tuned=False, config=config)[1]
    if out is None:
        out = torch.empty(x2d.shape[0], weight.shape[0], dtype=x2d.dtype, device=x2d.device)
    qi.gemm_tuned.fn(x2d, w_kn, out, bias=bias, config=config)  # .fn: the untuned function, config pinned
    return out


def _events_ms(fn, calls: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def _choose(x2d, weight, bias, gelu: bool):
    key = (x2d.shape[0], weight.shape[0], weight.shape[1], gelu, bias is not None, x2d.dtype, x2d.device)
    if key in _chosen:
        return _chosen[key]
    if torch.cuda.is_current_stream_capturing():  # no timing inside a CUDA-graph capture: quack's default
        return CANDIDATES[0]
    out = torch.empty(x2d.shape[0], weight.shape[0], dtype=x2d.dtype, device=x2d.device)
    timings = {}
    for candidate in CANDIDATES:
        try:
            t0 = time.perf_counter()
            _run(x2d, weight, bias, gelu, candidate, out)  # compiles it (cached by quack afterwards)
            torch.cuda.synchronize(x2d.device)
            compile_s = time.perf_counter() - t0
        except Exception as exc:  # a configuration quack cannot build for this shape: not a candidate here
            timings[candidate] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        # two short races, the better kept: the first call after a compile can still be cold
        ms = min(_events_ms(lambda c=candidate: _run(x2d, weight, bias, gelu, c, out), 5) for _ in range(2))
        timings[candidate] = {"ms": ms, "compile_s": compile_s}
    timed = {c: t["ms"] for c, t in timings.items() if "ms" in t}
    if not timed:
        raise RuntimeError(f"quack could build none of its candidate GEMMs for {key[:3]}: {timings}")
    _chosen[key] = min(timed, key=timed.get)
    _timings[key] = timings
    return _chosen[key]


def chosen_configs() -> dict:
    """What the first calls chose: {(M, N, K, gelu, bias?): {"chosen": candidate, "timings": {...}}}."""
    return {k[:5]: {"chosen": v, "timings": _timings.get(k, {})} for k, v in _chosen.items()}


@torch.library.custom_op("flashi2v::quack_linear", mutates_args=())
def _quack_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    x2d = x.reshape(-1, x.shape[-1])
    if not x2d.is_contiguous():
        x2d = x2d.contiguous()
    out = _run(x2d, weight, bias, gelu, _choose(x2d, weight, bias, gelu))
    return out.view(*x.shape[:-1], weight.shape[0])


@_quack_linear.register_fake
def _(x, weight, bias, gelu):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, gelu: bool = False) -> torch.Tensor:
    """``x @ weight.T + bias``, then GELU(tanh) when ``gelu``: what ``F.linear`` (and ``F.gelu(...,
    approximate="tanh")``) compute, by quack's GEMM with the bias and GELU in its epilogue. Inference only
    (no autograd); x, weight and bias on one sm_90 GPU in one 16-bit dtype."""
    return _quack_linear(x, weight, bias, gelu)
