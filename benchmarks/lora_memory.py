"""Full fine-tuning vs LoRA: seconds per step and peak GPU memory of `flashi2v train`'s step, one GPU.

The step is the trainer's (FlashI2VObjective: phi(s), s_high, shifted interpolation, DiT, loss), on the 1.3B
config with random weights at 49 x 480 x 832 (20,280 tokens), batch 1, bf16 autocast, activation checkpointing,
gradient clipping, the optimizer step and the EMA update, as `flashi2v train` runs it. Text context and latents
are random tensors of the right shapes: the frozen text encoder and VAE are not loaded, as with a latent cache
(data.cache). Variants:
  full            fp32 master weights, fused AdamW, fp32 EMA of every weight (the reference recipe)
  full-8bit       the same with torchao's AdamW8bit (optim.eight_bit_states; needs torchao)
  lora            peft LoRA, rank --rank (lora.rank) on attention and FFN projections of every block, base frozen in
                  bf16, adapters and FlashI2V's learnable_proj / fourier_embedding trained in fp32, EMA of those only
  lora-compile    the same with every block compiled (recipe.compile)
Peak memory is torch.cuda.max_memory_allocated over the warm-up and timed steps, with the model, optimizer
state and EMA resident (reset after each variant is built); s/step is the median of --reps steps after --warmup.
The table is printed last; the JSON is rewritten after every variant (a run cut short keeps what it measured).

    python benchmarks/lora_memory.py          # GPU, < 4 minutes on an H100
    python benchmarks/lora_memory.py --tiny   # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import torch

from common import device_info, out_dir, randomize_, save_json, table

from flashi2v import FlashI2VTransformer
from flashi2v.lora import apply_lora
from flashi2v.train.ema import TrainableEMA, make_ema, update_ema
from flashi2v.train.objective import FlashI2VObjective
from flashi2v.train.parallel import CHECKPOINT_MODES, apply_activation_checkpointing


def import_peft() -> None:
    """benchmarks/kernels.py would pass for the `kernels` package that transformers (imported by peft) looks
    for: import peft once with this folder off the path (flashi2v.lora imports it when first used)."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        import peft  # noqa: F401
    finally:
        sys.path[:] = saved


def build_variant(name: str, state: dict, cfg, device, rank: int, checkpointing: str):
    """(objective, trainable params, optimizer, EMA) of a variant, built as flashi2v.train.trainer.build does."""
    parts = name.split("-")
    with torch.device("meta"):
        transformer = FlashI2VTransformer.from_config(cfg)
    transformer.to_empty(device=device).train()
    transformer.load_state_dict(state)
    lora = parts[0] == "lora"
    if lora:
        apply_lora(transformer, rank, rank, base_dtype=torch.bfloat16)
    ema = None if lora else make_ema(transformer)  # as the trainer: before checkpointing and compile
    objective = FlashI2VObjective(transformer)
    apply_activation_checkpointing(transformer, checkpointing)
    if "compile" in parts:
        from flashi2v.fast_path.compile import apply_compile

        torch._dynamo.reset()  # a fresh cache per variant
        apply_compile(transformer)
    ema = TrainableEMA(transformer) if lora else ema
    params = [p for p in objective.parameters() if p.requires_grad]
    if "8bit" in parts:
        from torchao.optim import AdamW8bit  # ImportError: the row reports it, the other variants still run

        optimizer = AdamW8bit(params, lr=2e-5, eps=1e-15, weight_decay=0.01)
    else:
        optimizer = torch.optim.AdamW(params, lr=2e-5, eps=1e-15, weight_decay=0.01, fused=device.type == "cuda")
    return objective, params, optimizer, ema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--rank", type=int, default=32, help="LoRA rank (default %(default)s)")
    ap.add_argument("--checkpointing", default="full", choices=CHECKPOINT_MODES,
                    help="activation checkpointing mode of every variant (default %(default)s)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="tiny config on the CPU: checks that the script runs")
    ap.add_argument("--variants", nargs="+", default=["full", "lora", "lora-compile", "full-8bit"])
    ap.add_argument("--out", default=None, help="folder for lora_memory.json (default $OUT)")
    args = ap.parse_args()
    import_peft()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    preset_name = "tiny" if args.tiny else "flashi2v-1.3b"
    if args.tiny:
        args.frames, args.height, args.width, args.rank = 5, 64, 64, 4
    out = out_dir(args.out)
    print(f"device {device_info(device)}", flush=True)

    torch.manual_seed(0)
    source = randomize_(FlashI2VTransformer.from_config(preset_name), seed=0)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    cfg = source.config
    del source
    lat = (cfg.out_dim, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    tokens = lat[1] * (lat[2] // 2) * (lat[3] // 2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, *lat, generator=g).to(device)
    s = torch.randn(1, lat[0], 1, *lat[2:], generator=g).to(device)
    eps = torch.randn(1, *lat, generator=g).to(device)
    context = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(device)
    sigma = torch.tensor([0.6], device=device)
    rho = torch.tensor([0.3], device=device)
    cuda = device.type == "cuda"
    rows = []
    for name in args.variants:
        objective = params = optimizer = ema = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        try:
            t_build = time.perf_counter()
            objective, params, optimizer, ema = build_variant(name, state, cfg, device, args.rank, args.checkpointing)
            built = time.perf_counter() - t_build
            trainable = sum(p.numel() for p in params)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated() / 2**30 if cuda else float("nan")

            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = objective(x, s, context, sigma, eps, rho)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                update_ema(ema, objective.transformer, 0.9999)
                return float(loss)

            t0 = time.perf_counter()
            loss = step()
            first = time.perf_counter() - t0
            for _ in range(args.warmup - 1):
                step()
            times = []
            for _ in range(args.reps):
                torch.cuda.synchronize() if cuda else None
                t0 = time.perf_counter()
                step()
                torch.cuda.synchronize() if cuda else None
                times.append(time.perf_counter() - t0)
            times.sort()
            sec = times[len(times) // 2]
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            rows.append({"variant": name, "s/step": sec, "tokens/s": tokens / sec, "peak GiB": peak,
                         "resident GiB": resident, "trainable M": trainable / 1e6, "first step s": first,
                         "build s": built, "loss": loss})
        except Exception as err:  # noqa: BLE001 - report the variant as failed, keep measuring the others
            rows.append({"variant": name, "error": f"{type(err).__name__}: {str(err)[:200]}"})
        print(rows[-1], flush=True)
        objective = params = optimizer = ema = step = None  # free before the next variant
        full = next((r for r in rows if r["variant"] == "full" and "s/step" in r), None)
        for r in rows:
            if full and "s/step" in r:
                r["time vs full"] = r["s/step"] / full["s/step"]
                r["memory vs full"] = r["peak GiB"] / full["peak GiB"] if cuda else float("nan")
        save_json(out / "lora_memory.json", {"device": device_info(device), "preset": preset_name, "tokens": tokens,
                                             "frames": args.frames, "size": [args.height, args.width],
                                             "rank": args.rank, "checkpointing": args.checkpointing, "rows": rows})
    print(f"\nFull fine-tuning vs LoRA (rank {args.rank}), {preset_name}, {args.frames}x{args.height}x{args.width} "
          f"({tokens} tokens), batch 1, bf16 autocast, activation checkpointing {args.checkpointing}, EMA on")
    print(table(rows, ["variant", "s/step", "tokens/s", "peak GiB", "resident GiB", "trainable M", "build s",
                       "first step s", "loss", "time vs full", "memory vs full", "error"]))


if __name__ == "__main__":
    main()
