"""End-to-end generation: the full FlashI2V-1.3B pipeline with random weights, timed stage by stage.

Components at their real sizes, randomly initialised on the GPU (no downloads): the 1.3B transformer,
umT5-XXL (d_model 4096, d_ff 10240, 24 layers, 64 heads, vocab 256384, gated-gelu; 5.7B parameters,
bf16) with a small stand-in tokenizer, and the Wan2.1 VAE (diffusers AutoencoderKLWan default config,
float32). 49 frames at 480x832, 50 Euler steps, CFG 5.0 with cond and uncond in one batch.

Reports: text encoding, image encoding, each denoising step (one batched-CFG DiT forward plus the
Euler update), VAE decode, total wall time of the call, and peak GPU memory (whole call and per stage).
A short warm-up call (2 steps: compiles the blocks for this shape, tunes cuDNN) runs first and is
reported apart. Every configuration uses the same seed: the script reports how far each one's video
(uint8 frames) and latents are from the first configuration's. Table printed last.

A configuration is a base, "plain" (eager) or "fast" (apply_fast_path with cuDNN attention), with
"+"-joined options:
"bf16-decode" (pipe.enable_bf16_vae_decode()), "dit-offload" (pipe.enable_transformer_offload(): the
transformer in CPU memory during the VAE decode), "fa4" (FlashAttention-4 attention, needs flash-attn-4),
"fa3" (FlashAttention-3, needs flash_attn_3: build_fa3.sh), "graphs" (apply_cuda_graphs; irreversible, so last).

    python benchmarks/generate.py                 # fast, fast+bf16-decode (the CLI's default), +dit-offload
    python benchmarks/generate.py --configs plain fast fast+graphs --vae-probe
    python benchmarks/generate.py --tiny          # CPU smoke test with the tiny pipeline
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from common import device_info, median, out_dir, randomize_, reset_memory, save_json, table

from flashi2v import FlashI2VPipeline, FlashI2VTransformer
from flashi2v.fast_path.compile import apply_cuda_graphs
from flashi2v.fast_path.recipe import apply_fast_path
from flashi2v.model.attention import set_attention_backend


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
    from flashi2v.random_components import make_tiny_tokenizer, random_tiny_pipeline

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
            if name == "dit_offload":
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
    wrap(pipe, "_transformer_to_device", "dit_reload")
    wrap(pipe, "_offload_transformer", "dit_offload")  # called right before the decode, a no-op unless enabled
    wrap(pipe.vae, "decode", "vae_decode")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=49)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--configs", nargs="+",
                    default=["fast", "fast+bf16-decode", "fast+bf16-decode+dit-offload"],
                    help="in this order, on one set of components: plain (eager) or fast (apply_fast_path), "
                         "+bf16-decode, +dit-offload, +graphs (apply_cuda_graphs, irreversible: put it last)")
    ap.add_argument("--no-offload", action="store_true", help="keep the text encoder on the GPU")
    ap.add_argument("--no-qkv", action="store_true", help="apply_fast_path(qkv=False): q, k, v as three matmuls")
    ap.add_argument("--vae-probe", action="store_true",
                    help="also time the VAE decode alone: float32, bf16 (fused / unfused, cudnn.benchmark), two width tiles")
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
    rows, runs, fast_applied, result, reference = [], {}, False, None, None
    for config in args.configs:
        base, *options = config.split("+")
        unknown = set(options) - {"bf16-decode", "dit-offload", "graphs", "fa3", "fa4"}
        if base not in ("plain", "fast") or unknown:
            raise SystemExit(f"unknown configuration {config!r}")
        t0 = time.perf_counter()
        if base == "fast" and not fast_applied:
            apply_fast_path(pipe.transformer, qkv=not args.no_qkv)
            fast_applied = True
        if base == "fast":  # cuDNN unless "+fa3" / "+fa4": the comparison must not depend on what is installed
            flash = [o for o in options if o in ("fa3", "fa4")]
            set_attention_backend(flash[0] if flash else "cudnn" if cuda else "auto")
        if "graphs" in options:
            if not cuda:
                continue
            pipe.enable_transformer_offload(False)
            apply_cuda_graphs(pipe.transformer)
        pipe.enable_bf16_vae_decode("bf16-decode" in options)
        pipe.enable_transformer_offload("dit-offload" in options)
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
        name = config + ("-qkv" if args.no_qkv and config.startswith("fast") else "") + (" +offload" if not args.no_offload else "")
        if reference is None:
            reference = dict(config=name, latents=result.latents.cpu(), frames=result.frames)
        versus = compare(result, reference)
        print(f"[{config}] vs {reference['config']} (same seed):", versus, flush=True)
        row = dict(config=name, text_encode_s=stats.get("text_encode_s"), image_encode_s=stats.get("image_encode_s"),
                   step_ms_median=median(steps) if steps else None, denoise_s=denoise_s,
                   vae_decode_s=stats.get("vae_decode_s"), total_s=total_s, peak_gib=peak,
                   peak_reserved_gib=reserved, peak_gb=peak * 2**30 / 1e9 if peak else None, warmup_s=warmup_s)
        rows.append(row)
        runs[name] = dict(row=row, stats=dict(stats), steps_ms=steps, setup_s=setup_s, latents_finite=finite,
                          versus_first=versus)
        print(f"[{config}] frames {tuple(result.frames.shape)} {result.frames.dtype}; latents finite: {finite}")
        print(f"[{config}] peaks (GiB):", {k: round(v, 2) for k, v in stats.items() if k.endswith("_gib")})
        print(f"[{config}] step ms: first", [round(x, 1) for x in steps[:3]], "median", round(median(steps), 1) if steps else None,
              "max", round(max(steps), 1) if steps else None, "| total", round(total_s, 2), "s", flush=True)

    probe = {}
    if args.vae_probe and result is not None:
        pipe._transformer_to_device()  # as during a generation without dit-offload
        probe = vae_probe(pipe, result.latents, device)
        print("VAE decode probe:", probe, flush=True)
    save_json(out / "generate.json", dict(device=info, rows=rows, runs=runs, args=vars(args), build_s=build_s,
                                          offload_check=check, vae_probe=probe))
    print(f"\ngenerate, {info.get('gpu', 'cpu')}, torch {info['torch']}, {args.frames}x{args.height}x{args.width}, "
          f"{args.steps} steps, CFG {args.guidance} (cond + uncond in one batch); peak = max allocated over the call")
    if rows:
        print(table(rows, list(rows[0])))


def compare(result, reference) -> dict:
    """Relative difference of the latents and uint8 frame statistics against the reference config's."""
    la, lb = result.latents.detach().cpu().double(), reference["latents"].double()
    fa, fb = result.frames.to(torch.int16), reference["frames"].to(torch.int16)
    d = (fa - fb).abs()
    return dict(latents_rel_err=float((la - lb).norm() / lb.norm()), frames_max_abs=int(d.max()),
                frames_mean_abs=float(d.float().mean()), frames_differ=float((d > 0).float().mean()),
                frames_differ_gt1=float((d > 1).float().mean()))


def vae_probe(pipe, latents, device) -> dict:
    """Decode the same latents in several ways (one untimed decode first, then one timed): time, peak memory
    (allocated, with the transformer on the GPU; ``extra`` = above what was allocated before the decode),
    relative difference to the float32 decode and the difference of the uint8 pixels."""
    from flashi2v.video import to_uint8

    cuda = device.type == "cuda"
    wan = pipe.vae
    vae = wan.vae
    res, pixels = {}, {}
    h, w = latents.shape[-2] * 8, latents.shape[-1] * 8
    # (name, dtype, cudnn.benchmark, two width tiles, fused decoder forwards for low precision)
    variants = [("fp32", torch.float32, False, False, True), ("bf16", torch.bfloat16, False, False, True),
                ("bf16-unfused", torch.bfloat16, False, False, False), ("bf16+bench", torch.bfloat16, True, False, True),
                ("bf16-two-tiles", torch.bfloat16, False, True, True)]
    for mode, dtype, bench, tiles, fused in variants:
        wan.decode_dtype, wan.cudnn_benchmark, wan.fuse_decoder = dtype, bench, fused
        if tiles:
            vae.enable_tiling(tile_sample_min_height=h, tile_sample_min_width=w // 2 + 64,
                              tile_sample_stride_height=h, tile_sample_stride_width=w // 2)
        try:
            type(wan).decode(wan, latents)  # warm-up (cuDNN autotuning with bench); not the timing wrapper
            base = reset_memory(device)
            t0 = time.perf_counter()
            out = type(wan).decode(wan, latents)
            if cuda:
                torch.cuda.synchronize()
            res[mode + "_s"] = time.perf_counter() - t0
            if cuda:
                res[mode + "_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                res[mode + "_extra_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
            pixels[mode] = out.cpu()
            del out
        except Exception as err:  # report and go on
            res[mode + "_error"] = f"{type(err).__name__}: {str(err)[:300]}"
        finally:
            vae.disable_tiling()
        print(f"  VAE probe {mode}: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in res.items() if k.startswith(mode + "_")), flush=True)
    wan.decode_dtype, wan.cudnn_benchmark, wan.fuse_decoder = torch.float32, False, True
    ref = pixels["fp32"].double()
    ref_u8 = to_uint8(pixels["fp32"].permute(0, 2, 3, 4, 1)).to(torch.int16)
    for mode, out in pixels.items():
        if mode == "fp32":
            continue
        a = out.double()
        d8 = (to_uint8(out.permute(0, 2, 3, 4, 1)).to(torch.int16) - ref_u8).abs()
        res[mode + "_rel_err"] = float((a - ref).norm() / ref.norm())
        res[mode + "_max_abs"] = float((a - ref).abs().max())
        res[mode + "_uint8_max"] = int(d8.max())
        res[mode + "_uint8_mean"] = float(d8.float().mean())
        res[mode + "_uint8_differ"] = float((d8 > 0).float().mean())
    res["pixels_std"] = float(ref.std())
    res["pixels_saturated"] = float((ref.abs() >= 1).float().mean())
    return res


if __name__ == "__main__":
    main()
