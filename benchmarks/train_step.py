"""Training step: FlashI2V's trainer pieces vs diffusers' WanTransformer3DModel, one process, one GPU.

The step measured is the reference recipe's: 1.3B config (random weights), 49 x 480 x 832 (20,280
tokens), batch 1, float32 master weights, bf16 autocast, fused AdamW, flow-matching MSE loss. Variants:
  diffusers           WanTransformer3DModel + enable_gradient_checkpointing() (every block recomputed)
  ours[-cudnn][-compile][-MODE][@FRACTION]
                      FlashI2VObjective (phi(s), s_high, shifted interpolation, DiT, loss) with
                      flashi2v.train.parallel.apply_activation_checkpointing(transformer, MODE, FRACTION)
                      (MODE: full (default), attention, selective, none; FRACTION of the blocks, default 1),
                      "cudnn": cuDNN attention (flashi2v.model.attention.set_attention_backend), "compile":
                      torch.compile of every block (flashi2v.fast_path.compile.apply_compile), as recipe.compile.
Reports seconds per step, tokens/s, MFU (3 x forward FLOPs per step, against a bf16 matmul ceiling
measured in the same run), peak memory and the first step's loss (the ours-* rows compute the same
function: their losses agree to bf16 rounding); the table is printed last, the JSON is rewritten after
every variant (a run cut short keeps what it measured).

    python benchmarks/train_step.py          # GPU
    python benchmarks/train_step.py --tiny   # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
import torch.nn.functional as F

from common import (device_info, diffusers_wan, dit_flops, load_into_diffusers, matmul_ceiling, out_dir, randomize_,
                    save_json, table)

from flashi2v import FlashI2VTransformer
from flashi2v.fast_path.compile import apply_compile
from flashi2v.model.attention import set_attention_backend
from flashi2v.train.objective import FlashI2VObjective
from flashi2v.train.parallel import CHECKPOINT_MODES, apply_activation_checkpointing


def parse_variant(name: str) -> tuple[str, float]:
    """'ours-compile-selective@0.5' -> ('selective', 0.5): the activation checkpointing of a variant."""
    name, _, fraction = name.partition("@")
    modes = [part for part in name.split("-") if part in CHECKPOINT_MODES]
    return (modes[-1] if modes else "full"), float(fraction or 1.0)


def time_steps(step, device, warmup: int, reps: int) -> tuple[float, float, float]:
    """(median seconds per step, seconds of the first warm-up step (compile included), its loss)."""
    t0 = time.perf_counter()
    loss = float(step())
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize() if device.type == "cuda" else None
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize() if device.type == "cuda" else None
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], first, loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--variants", nargs="+", default=[
        "diffusers", "ours", "ours-compile", "ours-compile-attention", "ours-compile-selective",
        "ours-compile-full@0.5", "ours-compile-none"])  # "none" last: the one that may run out of memory
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    preset_name = "tiny" if args.tiny else "flashi2v-1.3b"
    if args.tiny:
        args.frames, args.height, args.width = 5, 64, 64
    out = out_dir(args.out)
    ceiling = matmul_ceiling(device, n=1024 if args.tiny else 8192)
    print(f"device {device_info(device)}; bf16 matmul ceiling {ceiling:.0f} TFLOP/s", flush=True)

    torch.manual_seed(0)
    source = randomize_(FlashI2VTransformer.from_config(preset_name), seed=0)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    cfg = source.config
    del source
    lat = (cfg.in_dim, (args.frames - 1) // 4 + 1, args.height // 8, args.width // 8)
    grid = (lat[1], lat[2] // 2, lat[3] // 2)
    tokens = grid[0] * grid[1] * grid[2]
    flops = 3 * dit_flops(cfg, 1, grid)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, *lat, generator=g).to(device)
    s = torch.randn(1, lat[0], 1, *lat[2:], generator=g).to(device)
    eps = torch.randn(1, *lat, generator=g).to(device)
    context = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(device)
    sigma = torch.tensor([0.6], device=device)
    rho = torch.tensor([0.3], device=device)
    rows = []
    for name in args.variants:
        gc.collect()
        torch.cuda.empty_cache() if device.type == "cuda" else None
        torch.cuda.reset_peak_memory_stats() if device.type == "cuda" else None
        set_attention_backend("cudnn" if "cudnn" in name and device.type == "cuda" else "auto")
        try:
            if name == "diffusers":
                model = diffusers_wan(cfg, device, torch.float32).train().requires_grad_(True)
                load_into_diffusers(model, state)
                model.enable_gradient_checkpointing()
                params = list(model.parameters())

                def loss_fn():
                    z = sigma * eps + (1 - sigma) * x
                    v = model(z, 1000 * sigma, context, return_dict=False)[0]
                    return F.mse_loss(v.float(), eps - x)
            else:
                with torch.device("meta"):
                    transformer = FlashI2VTransformer.from_config(cfg)
                transformer.to_empty(device=device).train()
                transformer.load_state_dict(state)  # a copy: ``state`` stays the same for every variant
                objective = FlashI2VObjective(transformer)
                mode, fraction = parse_variant(name)
                apply_activation_checkpointing(transformer, mode, fraction)
                if "compile" in name.split("-"):
                    torch._dynamo.reset()  # a fresh cache per variant: no recompile limit across variants
                    apply_compile(transformer)
                params = list(objective.parameters())

                def loss_fn():
                    return objective(x, s, context, sigma, eps, rho)
            optimizer = torch.optim.AdamW(params, lr=2e-5, eps=1e-15, weight_decay=0.01, fused=device.type == "cuda")

            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = loss_fn()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return loss.detach()

            sec, first, loss = time_steps(step, device, args.warmup, args.reps)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            rows.append({"variant": name, "s/step": sec, "tokens/s": tokens / sec,
                         "MFU %": 100 * flops / sec / (ceiling * 1e12), "peak GiB": peak, "first step s": first,
                         "loss": loss})
        except Exception as err:  # noqa: BLE001 - report the variant as failed, keep measuring the others
            rows.append({"variant": name, "error": f"{type(err).__name__}: {str(err)[:200]}"})
        print(rows[-1], flush=True)
        model = transformer = objective = optimizer = params = loss_fn = step = None  # free before the next variant
        base = next((r["s/step"] for r in rows if r["variant"] == "diffusers" and "s/step" in r), None)
        for r in rows:
            if base and "s/step" in r:
                r["vs diffusers"] = r["s/step"] / base
        save_json(out / "train_step.json", {"device": device_info(device), "ceiling_tflops": ceiling,
                                            "tokens": tokens, "frames": args.frames, "size": [args.height, args.width],
                                            "rows": rows})
    print(f"\nTraining step, {preset_name}, {args.frames}x{args.height}x{args.width} ({tokens} tokens), batch 1, "
          f"bf16 autocast, fp32 master, fused AdamW; ceiling {ceiling:.0f} TFLOP/s")
    print(table(rows, ["variant", "s/step", "tokens/s", "MFU %", "peak GiB", "first step s", "loss", "vs diffusers",
                       "error"]))


if __name__ == "__main__":
    main()
