"""Self-attention kernels at the 1.3B's shapes (12 heads x 128, bf16, non-causal): torch's cuDNN SDPA,
FlashAttention-3 (package flash_attn_3, built by build_fa3.sh) and FlashAttention-4 through flashi2v's
``fa4_attention`` (192 x 128 tiles, wave split), whichever are installed.

The kernels are timed in rounds, the order reversed every other round, so that clock drift favours none;
each timing is a CUDA graph of 10 calls (no host overhead), medians over rounds. Relative error is against
cuDNN's output.
    python benchmarks/attention_kernels.py [--frames 49 81] [--rounds 6] [--out DIR]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import device_info, events_ms, graphed, median, out_dir, rel_err, save_json, table
from torch.nn.attention import SDPBackend, sdpa_kernel

from flashi2v.model.attention import fa3_attention, fa3_available, fa4_attention, fa4_available


def cudnn(q, k, v):
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, nargs="+", default=[49, 81])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev, H, D = torch.device("cuda"), 12, 128
    kernels = {"cudnn": cudnn}
    if fa3_available():
        kernels["fa3"] = fa3_attention
    if fa4_available():
        kernels["fa4"] = fa4_attention
    rows = []
    for frames in args.frames:
        for b in args.batch:
            L = ((frames - 1) // 4 + 1) * 30 * 52  # latent tokens at 480 x 832
            q, k, v = (torch.randn(b, L, H, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
            flops = 4 * b * L * L * H * D
            ref = cudnn(q, k, v)
            replays = {name: graphed(lambda f=f: f(q, k, v), 10) for name, f in kernels.items()}
            times: dict[str, list[float]] = {name: [] for name in kernels}
            for r in range(args.rounds):
                for name in (list(kernels) if r % 2 == 0 else list(reversed(kernels))):
                    times[name].append(events_ms(replays[name], samples=5, per=10))
            for name, f in kernels.items():
                ms = median(times[name])
                rows.append(dict(frames=frames, tokens=L, batch=b, kernel=name, ms=ms, tflops=flops / ms / 1e9,
                                 vs_cudnn=ms / median(times["cudnn"]), rel_err=rel_err(f(q, k, v), ref)))
                print(rows[-1], flush=True)
            del replays
    cols = ["frames", "tokens", "batch", "kernel", "ms", "tflops", "vs_cudnn", "rel_err"]
    print(f"\nSelf-attention forward, {torch.cuda.get_device_name()}, {H} heads x {D}, bf16, medians of {args.rounds} rounds")
    print(table(rows, cols))
    if args.out:
        save_json(out_dir(args.out) / "attention_kernels.json", dict(device=device_info(dev), rows=rows))


if __name__ == "__main__":
    main()
