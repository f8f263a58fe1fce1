"""End-to-end generation: the full FlashI2V-1.3B pipeline with random weights, timed stage by stage.

Components at their real sizes, randomly initialised on the GPU (no downloads): the 1.3B transformer,
umT5-XXL (d_model 4096, d_ff 10240, 24 layers, 64 heads, vocab 256384, gated-gelu; 5.7B parameters,
bf16) with a small stand-in tokenizer, and the Wan2.1 VAE (diffusers AutoencoderKLWan default config,
float32). 49 frames at 480x832, 50 Euler steps, CFG 5.0 with cond and uncond in one batch.

Reports: text encoding, image encoding, each denoising step (one batched-CFG DiT forward plus the
Euler update), VAE decode, total wall time of the call, and peak GPU memory (whole call and per stage).
A short warm-up call (2 steps: compiles the blocks for this shape, tunes cuDNN) runs first and is
reported apart. Table printed last.

    python benchmarks/generate.py                 # fast, then fast + CUDA graphs; text encoder offloaded
    python benchmarks/generate.py --configs plain fast --vae-probe
    python benchmarks/generate.py --tiny          # CPU smoke test with the tiny pipeline
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from common import device_info, median, out_dir, randomize_, save_json, table

from flashi2v import FlashI2VPipeline, FlashI2VTransformer
from flashi2v.optimize import apply_cuda_graphs, apply_fast_path


def umt5_xxl(device, dtype):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                        relative_attention_num_buckets=32, relative_attention_max_distance=128,
                        feed_forward_proj="gated-gelu", dropout_rate=0.0, tie_word_embeddings=False)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = UMT5EncoderModel(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).eval().requires_grad_(False)


def build(args, device):
    from diffusers import AutoencoderKLWan

    from flashi2v.encoders import UMT5TextEncoder, WanVAE
    from flashi2v.tiny import make_tiny_tokenizer, random_tiny_pipeline

    if args.tiny:
        return random_tiny_pipeline()
    dtype = torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        transformer = FlashI2VTransformer.from_config("flashi2v-1.3b")
    transformer = randomize_(transformer).to(dtype).eval().requires_grad_(False)
    with torch.device(device):
        vae = WanVAE(AutoencoderKLWan())
    text = UMT5TextEncoder(umt5_xxl(device, dtype), make_tiny_tokenizer())
    return FlashI2VPipeline(transformer, vae, text)


class StepTimer:
    """CUDA events at the start of every transformer call: step i = event i -> event i+1."""

    def __init__(self, model, device):
        self.cuda = device.type == "cuda"
        self.marks = []
        model.register_forward_pre_hook(lambda *_: self.mark())

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def steps_ms(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks[:-1], self.marks[1:])]
        return [1000 * (b - a) for a, b in zip(self.marks[:-1], self.marks[1:])]


def staged(pipe, device, stats: dict, timer: StepTimer):
    """Wrap the pipeline's stages to record their wall time and peak GPU memory (allocated and reserved).

    The peak of the stretch before a stage is kept too: before "vae_decode" that is the denoising loop.
    """
    cuda = device.type == "cuda"

    def peaks(key):
        if cuda:
            stats[key + "_alloc_gib"] = max(stats.get(key + "_alloc_gib", 0.0), torch.cuda.max_memory_allocated() / 2**30)
            stats[key + "_reserved_gib"] = max(stats.get(key + "_reserved_gib", 0.0), torch.cuda.max_memory_reserved() / 2**30)
            torch.cuda.reset_peak_memory_stats()

    def wrap(obj, attr, name):
        fn = getattr(obj, attr)

        def timed(*a, **k):
            if name == "vae_decode":
                timer.mark()  # end of the last denoising step
            if cuda:
                torch.cuda.synchronize()
            peaks("before_" + name)
            t0 = time.perf_counter()
            out = fn(*a, **k)
            if cuda:
                torch.cuda.synchronize()
            stats[name + "_s"] = stats.get(name + "_s", 0.0) + time.perf_counter() - t0
            peaks(name)
            return out

        setattr(obj, attr, timed)

    wrap(pipe, "encode_prompt", "text_encode")
    wrap(pipe, "encode_image", "image_encode")
    wrap(pipe.vae, "decode", "vae_decode")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--configs", nargs="+", default=["fast", "fast+graphs"],
                    help="in this order, on one set of components: plain (eager), fast (apply_fast_path), "
                         "fast+graphs (+ apply_cuda_graphs)")
    ap.add_argument("--no-offload", action="store_true", help="keep the text encoder on the GPU")
    ap.add_argument("--qkv", action="store_true", help="apply_fast_path(qkv=True): fused QKV too")
    ap.add_argument("--vae-probe", action="store_true", help="also time the VAE decode in two width tiles")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = out_dir(args.out)
    device = torch.device("cpu" if args.tiny else "cuda")
    if args.tiny:
        args.frames, args.height, args.width, args.steps = 9, 64, 64, 3
    info = device_info(device)
    print("device:", info, flush=True)

    t0 = time.perf_counter()
    pipe = build(args, device)
    build_s = time.perf_counter() - t0
    n_text = sum(p.numel() for p in pipe.text_encoder.parameters())
    print(f"built in {build_s:.1f}s: transformer {sum(p.numel() for p in pipe.transformer.parameters()) / 1e9:.2f}B, "
          f"text encoder {n_text / 1e9:.2f}B, VAE {sum(p.numel() for p in pipe.vae.parameters()) / 1e6:.0f}M", flush=True)
    check = {}
    if not args.no_offload:
        # same embeddings with the encoder resident on the GPU and streamed from the CPU?
        prompts = ["a red car drives quickly", "a cat walks on the grass"]
        resident = pipe.encode_prompt(prompts)
        t0 = time.perf_counter()
        pipe.enable_text_encoder_offload()
        offload_setup_s = time.perf_counter() - t0
        streamed = pipe.encode_prompt(prompts)
        check = dict(offload_rel_err=float((streamed - resident).norm() / resident.norm()),
                     offload_setup_s=offload_setup_s, embed_norm=float(resident.norm()))
        print("text encoder offload check:", check, flush=True)
        del resident, streamed
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))
    prompt = "a red car drives quickly on a city street at night, the camera pans left"
    kwargs = dict(num_frames=args.frames, height=args.height, width=args.width, guidance=args.guidance, seed=0,
                  progress=False)
    cuda = device.type == "cuda"
    stats: dict = {}
    timer = StepTimer(pipe.transformer, device)
    staged(pipe, device, stats, timer)
    rows, runs, fast_applied, result = [], {}, False, None
    for config in args.configs:
        t0 = time.perf_counter()
        if config.startswith("fast") and not fast_applied:
            apply_fast_path(pipe.transformer, qkv=args.qkv)
            fast_applied = True
        if config == "fast+graphs":
            if not cuda:
                continue
            apply_cuda_graphs(pipe.transformer)
        setup_s = time.perf_counter() - t0
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            print(f"[{config}] GPU memory held before generating: {torch.cuda.memory_allocated() / 2**30:.2f} GiB", flush=True)

        # warm-up: compile (or capture) for this shape, cuDNN autotuning, allocator growth
        t0 = time.perf_counter()
        try:
            pipe(image, prompt, steps=2, **kwargs)
        except Exception as err:  # report and go on
            import traceback

            print("".join(traceback.format_exception(err)[-6:])[-3000:], flush=True)
            print(f"[{config}] FAILED: {type(err).__name__}: {str(err)[:500]}", flush=True)
            continue
        if cuda:
            torch.cuda.synchronize()
        warmup_s = time.perf_counter() - t0
        print(f"[{config}] warm-up call (2 steps, includes compile/capture): {warmup_s:.1f}s", flush=True)

        stats.clear()
        timer.marks.clear()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = pipe(image, prompt, steps=args.steps, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        total_s = time.perf_counter() - t0
        steps = timer.steps_ms()
        denoise_s = total_s - sum(stats.get(k, 0.0) for k in ("text_encode_s", "image_encode_s", "vae_decode_s"))
        peak = max((v for k, v in stats.items() if k.endswith("_alloc_gib")), default=None)
        reserved = max((v for k, v in stats.items() if k.endswith("_reserved_gib")), default=None)
        finite = bool(torch.isfinite(result.latents).all())
        name = config + ("+qkv" if args.qkv and config.startswith("fast") else "") + (" +offload" if not args.no_offload else "")
        row = dict(config=name, text_encode_s=stats.get("text_encode_s"), image_encode_s=stats.get("image_encode_s"),
                   step_ms_median=median(steps) if steps else None, denoise_s=denoise_s,
                   vae_decode_s=stats.get("vae_decode_s"), total_s=total_s, peak_gib=peak,
                   peak_reserved_gib=reserved, peak_gb=peak * 2**30 / 1e9 if peak else None, warmup_s=warmup_s)
        rows.append(row)
        runs[name] = dict(row=row, stats=dict(stats), steps_ms=steps, setup_s=setup_s, latents_finite=finite)
        print(f"[{config}] frames {tuple(result.frames.shape)} {result.frames.dtype}; latents finite: {finite}")
        print(f"[{config}] peaks (GiB):", {k: round(v, 2) for k, v in stats.items() if k.endswith("_gib")})
        print(f"[{config}] step ms: first", [round(x, 1) for x in steps[:3]], "median", round(median(steps), 1) if steps else None,
              "max", round(max(steps), 1) if steps else None, "| total", round(total_s, 2), "s", flush=True)

    probe = {}
    if args.vae_probe and result is not None:
        probe = vae_probe(pipe, result.latents, device)
        print("VAE decode probe:", probe, flush=True)
    save_json(out / "generate.json", dict(device=info, rows=rows, runs=runs, args=vars(args), build_s=build_s,
                                          offload_check=check, vae_probe=probe))
    print(f"\ngenerate, {info.get('gpu', 'cpu')}, torch {info['torch']}, {args.frames}x{args.height}x{args.width}, "
          f"{args.steps} steps, CFG {args.guidance} (cond + uncond in one batch); peak = max allocated over the call")
    if rows:
        print(table(rows, list(rows[0])))


def vae_probe(pipe, latents, device) -> dict:
    """Decode the same latents exactly and in two overlapping width tiles: time, peak memory, difference."""
    cuda = device.type == "cuda"
    vae = pipe.vae.vae
    res = {}
    pixels = {}
    for mode in ("full", "two-tiles"):
        if mode == "two-tiles":
            h, w = latents.shape[-2] * 8, latents.shape[-1] * 8
            vae.enable_tiling(tile_sample_min_height=h, tile_sample_min_width=w // 2 + 64,
                              tile_sample_stride_height=h, tile_sample_stride_width=w // 2)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        pixels[mode] = type(pipe.vae).decode(pipe.vae, latents)  # not the timing wrapper (it resets peaks)
        if cuda:
            torch.cuda.synchronize()
        res[mode + "_s"] = time.perf_counter() - t0
        if cuda:
            res[mode + "_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    vae.disable_tiling()
    a, b = pixels["two-tiles"].double(), pixels["full"].double()
    res["two_tiles_rel_err"] = float((a - b).norm() / b.norm())
    res["two_tiles_max_abs"] = float((a - b).abs().max())
    return res


if __name__ == "__main__":
    main()
