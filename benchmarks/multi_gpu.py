"""Multi-GPU: FSDP2 training steps with Ulysses context parallel in {1, 2, ...}, and DiT forwards with
context parallel vs one GPU. Launch with torchrun (one process per GPU); rank 0 prints the table last.

    torchrun --nproc_per_node 8 benchmarks/multi_gpu.py                 # 1.3B, 49x480x832 (and --frames 81)
    torchrun --nproc_per_node 2 benchmarks/multi_gpu.py --tiny          # CPU smoke test (gloo)

Training rows: seconds per step (batch 1 per data-parallel group), peak memory per GPU, the first loss
(same inputs for every configuration: it must agree with the 1-GPU row to bf16 tolerance) and scaling
efficiency = (1-GPU s/step) / (s/step) x (data-parallel groups) / (GPUs). Forward rows: one DiT forward
with the sequence split over the context-parallel group vs the same forward on one GPU, and their
relative difference. Keep NCCL_NVLS_ENABLE=0 (set by flashi2v.train.parallel.init_distributed).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist

from common import dit_flops, out_dir, randomize_, rel_err, save_json, table

from flashi2v import FlashI2VTransformer
from flashi2v.train.objective import FlashI2VObjective
from flashi2v.train.parallel import (apply_activation_checkpointing, apply_context_parallel_groups, apply_fsdp,
                                     init_distributed)


def inputs(cfg, frames, height, width, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    lat = (1, cfg.in_dim, (frames - 1) // 4 + 1, height // 8, width // 8)
    x, eps = torch.randn(lat, generator=g), torch.randn(lat, generator=g)
    s = torch.randn(1, cfg.in_dim, 1, *lat[3:], generator=g)
    context = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    sigma, rho = torch.tensor([0.6]), torch.tensor([0.3])
    return [t.to(device) for t in (x, s, context, sigma, eps, rho)]  # FlashI2VObjective's argument order


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_row(args, info, state, cfg, cp, device):
    transformer = FlashI2VTransformer.from_config(cfg)
    transformer.load_state_dict(state)
    apply_activation_checkpointing(transformer)
    dp_rank, dp_size = apply_context_parallel_groups(transformer, info, cp)
    objective = FlashI2VObjective(transformer)
    apply_fsdp(objective, transformer.blocks)
    objective.to(device)
    opt = torch.optim.AdamW(objective.parameters(), lr=1e-5, eps=1e-15, fused=device.type == "cuda")
    batch = inputs(cfg, args.frames, args.height, args.width, device)  # same sample on every rank
    losses, times = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.warmup + args.reps):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = objective(*batch)
        (loss * cp).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    times = sorted(times[args.warmup:])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"what": "train step", "gpus": info.world_size, "cp": cp, "dp": dp_size, "s/step": times[len(times) // 2],
            "peak GiB": peak, "first loss": losses[0]}


@torch.no_grad()
def forward_rows(args, info, state, cfg, cp, device):
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = FlashI2VTransformer.from_config(cfg)
    model.load_state_dict(state)
    model.to(device=device, dtype=dtype).eval()
    x, s, context, sigma, eps, rho = inputs(cfg, args.frames, args.height, args.width, device)
    run = lambda: model(x, 1000 * sigma, context, x.abs())  # noqa: E731
    single = run()
    apply_context_parallel_groups(model, info, cp)
    split = run()
    times = []
    for _ in range(args.warmup + args.reps):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - t0)
    times = sorted(times[args.warmup:])
    return {"what": "DiT forward", "gpus": info.world_size, "cp": cp, "s/step": times[len(times) // 2],
            "rel diff vs 1 GPU": rel_err(split.float(), single.float())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--cp", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    info = init_distributed("cpu" if args.tiny else "auto")
    device = info.device
    name = "tiny" if args.tiny else "flashi2v-1.3b"
    if args.tiny:
        args.frames, args.height, args.width = 5, 32, 64
    torch.manual_seed(0)  # every rank must build the same weights (module __init__ draws some of them)
    source = randomize_(FlashI2VTransformer.from_config(name), seed=0)
    state, cfg = source.state_dict(), source.config
    rows = []
    for cp in args.cp:
        rows.append(train_row(args, info, state, cfg, cp, device))
    for cp in args.cp:
        if cp > 1:
            rows.append(forward_rows(args, info, state, cfg, cp, device))
    if info.is_main:
        grid = ((args.frames - 1) // 4 + 1, args.height // 16, args.width // 16)
        print(f"{name}, {args.frames}x{args.height}x{args.width} ({grid[0] * grid[1] * grid[2]} tokens), "
              f"{info.world_size} processes on {device.type}; forward {dit_flops(cfg, 1, grid) / 1e12:.1f} TFLOP")
        save_json(out_dir(args.out) / f"multi_gpu_{info.world_size}.json", rows)
        print(table(rows, ["what", "gpus", "cp", "dp", "s/step", "peak GiB", "first loss", "rel diff vs 1 GPU"]))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
