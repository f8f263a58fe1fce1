"""Training throughput of the built-in model: where a `flashi2v train builtin` step spends its time.

Runs the real trainer (`flashi2v.train.train`) on the kit from `scripts/builtin/prepare_kit.py` for a few
steps per variant and reports the median seconds per step over the last two thirds and clips (and noise
draws) per second. The "loader" row is the data side alone: a step cannot be faster than it. Variants:

  loader         the DataLoader alone (rendering camera-motion clips in data.num_workers processes)
  host-repeat    the trainer with each clip's noise draws made by repeating the pixel batch on the host
                 before the codec and the copy to the GPU (how the trainer did it until the eleventh session)
  device-repeat  the trainer as it is: each clip encoded once, its latents repeated on the GPU
  compile        device-repeat with recipe.compile=true (torch.compile of every block)

    python benchmarks/builtin_train.py --kit .kit                       # GPU (the device tool)
    python benchmarks/builtin_train.py --kit .kit --steps 6 --batch 2   # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import device_info, out_dir, save_json, table

from flashi2v.train import load_config, train
from flashi2v.train import trainer as trainer_module

VARIANTS = ("loader", "host-repeat", "device-repeat", "compile")


def host_repeat(conditioner_call):
    """Conditioner.__call__ with the draws made on the host: every tensor of the pixel batch repeated first."""

    def call(self, batch, drop, repeats=1):
        batch = {k: v.repeat_interleave(repeats, dim=0) if isinstance(v, torch.Tensor) else
                 [x for x in v for _ in range(repeats)] if k == "caption" else v for k, v in batch.items()}
        return conditioner_call(self, batch, drop, 1)

    return call


def median_pace(metrics: Path) -> float:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return statistics.median(r["sec_per_step"] for r in rows[len(rows) // 3:])


def time_loader(cfg, steps: int) -> float:
    """Seconds per batch of the DataLoader alone, as a rate over ``steps`` batches.

    The workers render ahead (num_workers x prefetch_factor batches), so per-batch waits right after the start
    read that queue, not the rendering: the queue is drained first, then ``steps`` batches are timed together."""
    _, _, loader, _ = trainer_module.build_data(cfg, 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    batches = iter(loader)
    for _ in range(1 + max(loader.num_workers, 1) * (loader.prefetch_factor or 1)):
        next(batches)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", default=".kit", help="folder from scripts/builtin/prepare_kit.py")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--noise-draws", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="data.num_workers (default: the preset's)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--init", default="src/flashi2v/builtin_model/transformer")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = out_dir(args.out)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kit = Path(args.kit)
    base = [f"model.components={kit / 'components'}", f"data.photos={kit / 'photos'}",
            f"data.real_clips={kit / 'real_clips.pt'}", f"model.init={args.init}", f"recipe.batch_size={args.batch}",
            f"recipe.noise_draws={args.noise_draws}", f"recipe.steps={args.steps}", "output.checkpoint_every=100000",
            "output.tensorboard=false"]
    if args.workers is not None:
        base.append(f"data.num_workers={args.workers}")
    rows, original = [], trainer_module.Conditioner.__call__
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as scratch:
            cfg = load_config("builtin", base + [f"output.dir={scratch}", f"recipe.compile={variant == 'compile'}"])
            if variant == "loader":
                pace = time_loader(cfg, args.steps)
            else:
                trainer_module.Conditioner.__call__ = host_repeat(original) if variant == "host-repeat" else original
                try:
                    train(cfg, device=device, progress=False)
                finally:
                    trainer_module.Conditioner.__call__ = original
                pace = median_pace(Path(scratch) / "metrics.jsonl")
        rows.append({"variant": variant, "s_per_step": pace, "clips_per_s": args.batch / pace,
                     "draws_per_s": args.batch * args.noise_draws / pace})
        print(rows[-1], flush=True)
        save_json(out / "builtin_train.json", {"device": device_info(device), "args": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows})
    for row in rows:
        row["vs_host_repeat"] = next((r["s_per_step"] for r in rows if r["variant"] == "host-repeat"), None)
        row["vs_host_repeat"] = row["vs_host_repeat"] and row["s_per_step"] / row["vs_host_repeat"]
    print(table(rows, ["variant", "s_per_step", "clips_per_s", "draws_per_s", "vs_host_repeat"]))


if __name__ == "__main__":
    main()
