"""Peak GPU memory and time per generation of each memory configuration (flashi2v.memory), in one run.

The FlashI2V-1.3B pipeline with random weights at real sizes (benchmarks/generate.py's components: the 1.3B
transformer in bf16, umT5-XXL in bf16, the Wan2.1 VAE), 49 x 480 x 832, 50 Euler steps, CFG 5 in one batch of 2,
fast path (compiled blocks; cuDNN attention unless --attention), bf16 VAE decode (the CLI's default). The
configurations run in ``flashi2v.memory.MEMORY_CONFIGS`` order on one set of components (streaming the text
encoder cannot be undone, so the resident one comes first). Each: a 2-step warm-up call (compiles, tunes), then
one timed call with the peak counter reset before it.

Per configuration: seconds per generation, the ratio to the fastest configuration that streams the text encoder
("text-encoder-streamed", the CLI's usual setup), peak torch.cuda.max_memory_allocated (GiB and GB) and reserved,
the per-stage peaks, ``flashi2v.memory.estimate_peak``'s estimate (what --memory-budget decides by), the median
step and how far the latents are from the first configuration's (same seed: block swapping must give 0).

    python benchmarks/memory_configs.py --out results/         # H100: about 4 minutes
    python benchmarks/memory_configs.py --tiny                 # CPU smoke test
    python benchmarks/memory_configs.py --markdown results/memory_configs.json   # docs/performance.md's table
"""

from __future__ import annotations

import os
import sys

# benchmarks/kernels.py shadows the PyPI package ``kernels`` that recent transformers probes for when its models
# are imported: import them before this folder is on the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
import transformers.models.umt5.modeling_umt5  # noqa: E402,F401

sys.path.insert(0, _HERE)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from common import device_info, median, out_dir, save_json, table  # noqa: E402
from generate import StepTimer, build, compare, staged  # noqa: E402

from flashi2v.fast_path.recipe import apply_fast_path  # noqa: E402
from flashi2v.memory import CONFIG_NAMES, MEMORY_CONFIGS, apply_memory_config, estimate_peak  # noqa: E402
from flashi2v.model.attention import set_attention_backend  # noqa: E402
from flashi2v.settings import GenerationSettings  # noqa: E402

BASELINE = "text-encoder-streamed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--configs", nargs="+", default=list(CONFIG_NAMES), choices=CONFIG_NAMES,
                    help="in MEMORY_CONFIGS order (the text encoder's streaming cannot be undone)")
    ap.add_argument("--attention", default=None, help="attention backend (default cudnn on a GPU)")
    ap.add_argument("--no-fast", action="store_true", help="eager blocks (no apply_fast_path)")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test with the tiny random pipeline")
    ap.add_argument("--estimate-only", action="store_true",
                    help="no GPU: build the components on the meta device and print only the estimated peaks")
    ap.add_argument("--markdown", metavar="JSON", default=None,
                    help="no run: print a results file (memory_configs.json) as docs/performance.md's table")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.markdown:
        return print(markdown(args.markdown))
    out = out_dir(args.out)
    if args.estimate_only:
        return estimate_only(args)
    device = torch.device("cpu" if args.tiny else "cuda")
    if args.tiny:
        args.frames, args.height, args.width, args.steps = 9, 64, 64, 3
    info = device_info(device)
    print("device:", info, flush=True)
    cuda = device.type == "cuda"

    t0 = time.perf_counter()
    pipe = build(args, device)
    build_s = time.perf_counter() - t0
    if not args.no_fast and cuda:
        apply_fast_path(pipe.transformer)
    if cuda:
        set_attention_backend(args.attention or "cudnn")
    pipe.enable_bf16_vae_decode()
    print(f"built in {build_s:.1f}s", flush=True)

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))
    prompt = "a red car drives quickly on a city street at night, the camera pans left"
    kwargs = dict(num_frames=args.frames, height=args.height, width=args.width, guidance=args.guidance, seed=0,
                  progress=False)
    settings = pipe.resolve_settings(GenerationSettings(num_frames=args.frames, height=args.height, width=args.width,
                                                        steps=args.steps, guidance=args.guidance))
    stats: dict = {}
    timer = StepTimer(pipe.transformer, device)
    staged(pipe, device, stats, timer)
    rows, runs, reference = [], {}, None
    configs = [c for c in MEMORY_CONFIGS if c.name in args.configs]
    for config in configs:
        t0 = time.perf_counter()
        apply_memory_config(pipe, config)
        setup_s = time.perf_counter() - t0
        estimate = estimate_peak(pipe, settings, config)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        held = torch.cuda.memory_allocated() / 2**30 if cuda else None
        print(f"[{config.name}] {config.describe()}; set up in {setup_s:.1f}s; held before generating: {held} GiB",
              flush=True)
        try:
            t0 = time.perf_counter()
            pipe(image, prompt, steps=2, **kwargs)  # warm-up: compile for this shape, allocator growth
            warmup_s = time.perf_counter() - t0
            stats.clear()
            timer.marks.clear()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            result = pipe(image, prompt, steps=args.steps, **kwargs)
            if cuda:
                torch.cuda.synchronize()
            total_s = time.perf_counter() - t0
        except Exception as err:  # report and go on to the next configuration
            import traceback

            print("".join(traceback.format_exception(err)[-6:])[-3000:], flush=True)
            print(f"[{config.name}] FAILED: {type(err).__name__}: {str(err)[:500]}", flush=True)
            continue
        steps = timer.steps_ms()
        peak = max((v for k, v in stats.items() if k.endswith("_alloc_gib")), default=None)
        reserved = max((v for k, v in stats.items() if k.endswith("_reserved_gib")), default=None)
        if reference is None:
            reference = dict(config=config.name, latents=result.latents.cpu(), frames=result.frames)
        versus = compare(result, reference)
        row = dict(config=config.name, s_per_generation=total_s, vs_baseline=None, peak_gib=peak,
                   peak_gb=peak * 2**30 / 1e9 if peak is not None else None, reserved_gib=reserved,
                   estimate_gib=estimate["peak"] / 2**30, step_ms_median=median(steps) if steps else None,
                   vae_decode_s=stats.get("vae_decode_s"), latents_rel_err=versus["latents_rel_err"])
        rows.append(row)
        runs[config.name] = dict(row=row, config=config.__dict__, describe=config.describe(), stats=dict(stats),
                                 estimate_gib={k: v / 2**30 for k, v in estimate.items()}, steps_ms=steps,
                                 setup_s=setup_s, warmup_s=warmup_s, held_before_gib=held, versus_first=versus)
        save_json(out / "memory_configs.json", dict(device=info, rows=rows, runs=runs, args=vars(args), build_s=build_s,
                                                    partial=True))  # kept if a later configuration runs out of time
        print(f"[{config.name}] {total_s:.2f} s, peak {peak} GiB (estimate {estimate['peak'] / 2**30:.2f}), "
              f"stage peaks {({k: round(v, 2) for k, v in stats.items() if k.endswith('_alloc_gib')})}, "
              f"vs {reference['config']}: {versus}", flush=True)
    base = next((r for r in rows if r["config"] == BASELINE), rows[0] if rows else None)
    for row in rows:
        row["vs_baseline"] = row["s_per_generation"] / base["s_per_generation"]
    save_json(out / "memory_configs.json", dict(device=info, rows=rows, runs=runs, args=vars(args), build_s=build_s,
                                                baseline=base["config"] if base else None))
    print(f"\nmemory configurations, {info.get('gpu', 'cpu')}, torch {info['torch']}, {args.frames}x{args.height}x"
          f"{args.width}, {args.steps} steps, CFG {args.guidance}; peak = max allocated over the timed call; "
          f"vs_baseline = time / {base['config'] if base else '-'}'s")
    if rows:
        print(table(rows, list(rows[0])))


def markdown(path: str) -> str:
    """docs/performance.md's "Memory configurations" table from a results file: times relative to the first row,
    what was held before the timed generation (a leftover of an earlier configuration shows there first)."""
    with open(path) as f:
        result = json.load(f)
    rows, runs = result["rows"], result["runs"]
    first = rows[0]
    lines = [f"| configuration | s / generation | vs {first['config']} | peak GiB | peak GB | estimate GiB | "
             f"held before GiB | latents vs {first['config']} |", "|---|---|---|---|---|---|---|---|"]

    def sig3(x: float | None) -> str:  # three significant digits, trailing zeros kept (24.0, 7.60); "-": not measured
        if x is None:
            return "-"
        return f"{x:.{max(0, 2 - math.floor(math.log10(abs(x))))}f}" if x else "0"

    for row in rows:
        run = runs[row["config"]]
        err = row["latents_rel_err"]
        same = "-" if row is first else "identical" if err == 0 else f"{100 * err:.1f} %"
        if same.endswith("%") and run["config"].get("vae_tiling"):
            same += " (tiled decode)"
        lines.append(f"| {row['config']} | {sig3(row['s_per_generation'])} | "
                     f"{row['s_per_generation'] / first['s_per_generation']:.2f} | {sig3(row['peak_gib'])} | "
                     f"{sig3(row['peak_gb'])} | {sig3(row['estimate_gib'])} | {sig3(run['held_before_gib'])} | {same} |")
    return "\n".join(lines)


def estimate_only(args) -> None:
    """The estimated peak of every configuration and stage, from the components' sizes alone (meta device)."""
    from diffusers import AutoencoderKLWan

    from generate import umt5_xxl

    from flashi2v import FlashI2VPipeline, FlashI2VTransformer
    from flashi2v.encoders import UMT5TextEncoder, WanVAE
    from flashi2v.random_components import make_tiny_tokenizer

    with torch.device("meta"):
        transformer = FlashI2VTransformer.from_config("flashi2v-1.3b").to(torch.bfloat16)
        vae = WanVAE(AutoencoderKLWan())
    pipe = FlashI2VPipeline(transformer, vae, UMT5TextEncoder(umt5_xxl("meta", torch.bfloat16), make_tiny_tokenizer()))
    pipe.enable_bf16_vae_decode()
    settings = pipe.resolve_settings(GenerationSettings(num_frames=args.frames, height=args.height, width=args.width,
                                                        steps=args.steps, guidance=args.guidance))
    rows = []
    for config in MEMORY_CONFIGS:
        estimate = estimate_peak(pipe, settings, config)
        rows.append(dict(config=config.name, **{f"{k}_gib": v / 2**30 for k, v in estimate.items()},
                         peak_gb=estimate["peak"] / 1e9))
    print(f"estimated peak allocated memory (flashi2v.memory.estimate_peak), 1.3B, {args.frames}x{args.height}x"
          f"{args.width}, CFG {args.guidance}, bf16 decode")
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
