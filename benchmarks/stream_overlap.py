"""Does a memory-bound norm kernel hide behind a matmul on a second stream? (issue 7's last structural lead)

The idea: split the 20,280 tokens of a 49 x 480 x 832 forward into two chunks and run one chunk's norm
kernels (which move memory and barely use the tensor cores) while the other chunk's matmuls run. It pays
only if the GPU runs the two at once, and only by more than the chunking costs (two half-size matmuls
instead of one). This script measures both at the 1.3B's shapes, bf16, each case a CUDA graph of 10 repeats:

- each matmul on all tokens and on one half; each norm kernel on one half;
- matmul then norm on one stream ("in turn") against the two on two streams ("together");
- hidden = (in turn - together) / norm alone: the share of the norm kernel's time that the overlap saves.

Table printed last. No FlashAttention-4 needed.

    python benchmarks/stream_overlap.py
"""

from __future__ import annotations

import torch

from common import events_ms, graphed, table

from flashi2v.kernels.qk_norm_rope import rms_norm_rope_qk
from flashi2v.kernels.residual_layer_norm import residual_layer_norm
from flashi2v.model.attention import RopeCache


def graph_ms(fn, calls: int = 10, samples: int = 9) -> float:
    return events_ms(graphed(fn, calls), samples, calls)


def together(first, second):
    """``first`` on the current stream and ``second`` on a side stream, joined afterwards."""
    side = torch.cuda.Stream()

    def run():
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            second()
        first()
        torch.cuda.current_stream().wait_stream(side)
    return run


def main() -> None:
    dev, dt, length, dim, ffn, heads = torch.device("cuda"), torch.bfloat16, 20280, 1536, 8960, 12
    half = length // 2
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    x_full = torch.randn(length, dim, device=dev, dtype=dt)
    x, h_ffn = x_full[:half], torch.randn(half, ffn, device=dev, dtype=dt)
    w_qkv, w_o, w_up, w_down = (torch.randn(o, i, device=dev, dtype=dt) * i**-0.5
                                for o, i in ((3 * dim, dim), (dim, dim), (ffn, dim), (dim, ffn)))
    b_qkv, b_o, b_up, b_down = (torch.zeros(w.shape[0], device=dev, dtype=dt) for w in (w_qkv, w_o, w_up, w_down))
    h_ffn_full = torch.randn(length, ffn, device=dev, dtype=dt)
    matmuls = {
        "qkv 1536->4608": (lambda a: torch.addmm(b_qkv, a, w_qkv.t()), x_full, x, 2 * dim * 3 * dim),
        "o 1536->1536": (lambda a: torch.addmm(b_o, a, w_o.t()), x_full, x, 2 * dim * dim),
        "ffn up + gelu": (lambda a: torch._addmm_activation(b_up, a, w_up.t(), use_gelu=True), x_full, x, 2 * dim * ffn),
        "ffn down": (lambda a: torch.addmm(b_down, a, w_down.t()), h_ffn_full, h_ffn, 2 * ffn * dim),
    }
    # the other chunk's norm kernels, as the fast path calls them
    other = torch.randn(4, 1, half, dim, device=dev, dtype=dt)
    gate, scale, shift = (torch.randn(3, 1, 1, dim, device=dev) * 0.1).unbind(0)
    q, k = other[2], other[3]
    w_norm = torch.ones(dim, device=dev, dtype=dt)
    cos, sin = RopeCache(dim // heads)((13, 30, 52), dev)
    cos, sin = cos[:half], sin[:half]
    norms = {
        "residual+layernorm+adaln": lambda: residual_layer_norm(other[0], other[1], gate, None, None, scale, shift, 1e-6),
        "q+k rmsnorm+rope": lambda: rms_norm_rope_qk(q, k, w_norm, w_norm, cos, sin, 1e-6),
    }
    norm_ms = {name: graph_ms(fn) for name, fn in norms.items()}
    print("norm kernels, one half:", {k: round(v * 1000, 1) for k, v in norm_ms.items()}, flush=True)
    rows = []
    for mname, (mm, a_full, a_half, flop_per_row) in matmuls.items():
        full, part = graph_ms(lambda: mm(a_full)), graph_ms(lambda: mm(a_half))
        for nname, norm in norms.items():
            in_turn = graph_ms(lambda: (mm(a_half), norm()))
            both = graph_ms(together(lambda: mm(a_half), norm))
            rows.append({
                "matmul": mname, "norm (other half)": nname,
                "matmul all tokens us": round(full * 1000, 1), "2 x half us": round(2 * part * 1000, 1),
                "chunking cost us": round((2 * part - full) * 1000, 1),
                "half TFLOP/s": round(flop_per_row * half / part / 1e9, 0),
                "norm alone us": round(norm_ms[nname] * 1000, 1),
                "in turn us": round(in_turn * 1000, 1), "together us": round(both * 1000, 1),
                "hidden": round((in_turn - both) / norm_ms[nname], 2),
            })
            print(rows[-1], flush=True)
    print()
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
