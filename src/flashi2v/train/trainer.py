"""`flashi2v train`: the FlashI2V recipe on one process or many (torchrun + FSDP2), resumable exactly."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import flow
from ..errors import FlashI2VError
from ..model import FlashI2VTransformer, load_state_dict_strict
from ..paradigms import ConditionLatents, Paradigm, check_input_width, paradigm_config
from .checkpoint import full_state_dict, load_checkpoint, save_checkpoint
from .config import TrainConfig, lr_multiplier
from .ema import TrainableEMA, ema_decay, make_ema, update_ema
from .objective import FlashI2VObjective, draw_noise
from .parallel import (DistInfo, all_mean, apply_activation_checkpointing, apply_context_parallel_groups, apply_fsdp,
                       barrier, init_distributed)

log = logging.getLogger("flashi2v.train")


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # global mean loss per optimizer step, this run
    skipped: dict[str, str] = field(default_factory=dict)  # bad clip path -> reason
    output_dir: Path | None = None
    final_step: int = 0


def load_components(name: str | None, device):
    """(vae, text_encoder) from a folder with vae/, text_encoder/, tokenizer/ or the tiny random ones."""
    from ..encoders import load_text_encoder, load_vae

    if name is None:
        raise FlashI2VError("model.components is not set: give a folder with vae/, text_encoder/ and tokenizer/ "
                            "(e.g. Wan2.1-T2V-1.3B-Diffusers)")
    if name == "tiny-random":
        from ..random_components import random_tiny_pipeline

        pipe = random_tiny_pipeline(seed=0)
        return pipe.vae.to(device), pipe.text_encoder.to(device)
    folder = Path(name)
    return load_vae(folder / "vae", device=device), load_text_encoder(folder / "text_encoder", folder / "tokenizer", device=device)


def build_transformer(cfg: TrainConfig) -> FlashI2VTransformer:
    """The preset at its init, or weights of any published layout (a Wan2.1-T2V source leaves the two
    FlashI2V modules at their zero-output init); float32 master weights either way."""
    from ..config import preset

    # The input width follows from the paradigm; the VAE's temporal factor (4 for every VAE here: Wan's, the
    # built-in codec, the tiny ones) is checked against the loaded one in build().
    base = paradigm_config(preset(cfg.model.preset, proj_kernel=cfg.model.proj_kernel), cfg.model.paradigm,
                           temporal_factor=4)
    if not cfg.model.init:
        return FlashI2VTransformer.from_config(base)
    from ..weights import load_transformer_weights

    if cfg.model.paradigm != "flashi2v":
        raise FlashI2VError(f"model.init starts FlashI2V from published weights; paradigm {cfg.model.paradigm!r} "
                            "trains from the preset's init: leave model.init unset")
    model, report = load_transformer_weights(cfg.model.init, proj_kernel=cfg.model.proj_kernel,
                                             num_heads=base.num_heads, text_len=base.text_len, dtype=torch.float32)
    if model.config.proj_kernel != cfg.model.proj_kernel:
        raise FlashI2VError(f"model.init has a {model.config.proj_kernel} projection but model.proj_kernel is "
                            f"{cfg.model.proj_kernel}: make them agree")
    log.info("initialised from %s (%s layout, %d tensors loaded%s)", cfg.model.init, report.layout, report.loaded,
             f"; zero-init: {', '.join(sorted({k.split('.')[0] for k in report.zero_init}))}" if report.zero_init else "")
    return model


def build_data(cfg: TrainConfig, dp_rank: int, dp_size: int, device: torch.device):
    """(dataset, sampler, loader, cached?) for this data-parallel rank (context-parallel peers share it)."""
    from ..data import DataConfig, ResumableSampler, VideoClipDataset, collate_clips, load_clip_index
    from ..data.cache import CachedLatentDataset, collate_cached

    d = cfg.data
    if cfg.data.cache:
        dataset, collate, cached = CachedLatentDataset(cfg.data.cache), collate_cached, True
    elif cfg.data.clips:
        from ..data.clip_file import ClipFile

        dataset, collate, cached = ClipFile(cfg.data.clips), collate_clips, False
    elif cfg.data.photos:
        from torch.utils.data import ConcatDataset

        from ..data import TensorClips
        from ..data.synthetic.camera_clips import CameraMotionClips

        photos = sorted(p for p in Path(d.photos).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        parts = [CameraMotionClips(photos, d.synthetic_clips, d.num_frames, d.height, d.width, seed=cfg.recipe.seed,
                                   colour_jitter=d.colour_jitter, vertical_flip=d.vertical_flip)]
        if d.real_clips:
            parts.append(TensorClips(torch.load(d.real_clips, weights_only=True), length=d.synthetic_clips // 9))
        dataset, collate, cached = ConcatDataset(parts), collate_clips, False
    else:
        records = load_clip_index(cfg.data.index)
        if d.buckets is not None:
            return bucketed_data(cfg, records, dp_rank, dp_size, device)
        dataset = VideoClipDataset(records, DataConfig(d.num_frames, d.fps, d.height, d.width))
        collate, cached = collate_clips, False
    if d.buckets is not None:
        raise FlashI2VError("data.buckets groups the clips of data.index by size; it does not apply to data.cache or "
                            "data.photos (one size each): unset data.buckets")
    sampler = ResumableSampler(len(dataset), dp_rank, dp_size, seed=cfg.recipe.seed)
    loader = DataLoader(dataset, batch_size=cfg.recipe.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.data.num_workers > 0)
    return dataset, sampler, loader, cached


def bucketed_data(cfg: TrainConfig, records, dp_rank: int, dp_size: int, device: torch.device):
    """Clips of mixed sizes in resolution / length buckets (flashi2v.data.buckets): each batch from one bucket.
    Clips that fit no bucket are left out, counted by reason in one warning."""
    from ..data import DataConfig, FilterConfig, VideoClipDataset, collate_clips, filter_clips
    from ..data.buckets import BucketBatchSampler, assign_buckets, bucket_histogram
    from .config import check_buckets

    d = cfg.data
    buckets = check_buckets(d.buckets)
    # sizes and lengths from the index, or probed now (containers only) for the records that lack them
    probed, rejected = filter_clips(records, FilterConfig(num_frames=min(b[0] for b in buckets), fps=d.fps),
                                    progress=False)
    assigned, unassigned = assign_buckets(probed, buckets, d.fps, d.bucket_aspect_tolerance)
    unassigned.update({reason: n for reason, n in rejected.items() if n})
    total, records = len(records), probed
    kept = [(r, buckets[i], i) for r, i in zip(records, assigned) if i is not None]
    if dp_rank == 0 and sum(unassigned.values()):
        log.warning("%d of %d clips fit no bucket and are left out (%s); `flashi2v data filter --buckets` shows "
                    "the histogram", sum(unassigned.values()), total,
                    ", ".join(f"{k}: {n}" for k, n in unassigned.items() if n))
    if not kept:
        reasons = ", ".join(f"{k}: {n}" for k, n in unassigned.items() if n)
        raise FlashI2VError(f"no clip of data.index fits a bucket of data.buckets ({reasons}): add buckets of the "
                            "clips' sizes or raise data.bucket_aspect_tolerance (`flashi2v data filter --buckets` "
                            "shows the histogram)")
    if dp_rank == 0:
        log.info("buckets:\n%s", "\n".join(bucket_histogram(assigned, buckets, unassigned)))
    dataset = VideoClipDataset([r for r, _, _ in kept], DataConfig(d.num_frames, d.fps, d.height, d.width),
                               shapes=[b for _, b, _ in kept])
    sampler = BucketBatchSampler([i for _, _, i in kept], cfg.recipe.batch_size, dp_rank, dp_size, seed=cfg.recipe.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_clips, num_workers=d.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=d.num_workers > 0)
    return dataset, sampler, loader, False


def latent_shape(cfg: TrainConfig, vae) -> tuple[int, int, int, int]:
    d = cfg.data
    return (vae.latent_channels, (d.num_frames - 1) // vae.temporal_factor + 1,
            d.height // vae.spatial_factor, d.width // vae.spatial_factor)


def training_shift(cfg: TrainConfig, shape, patch_size) -> float:
    if cfg.recipe.shift == "dynamic":
        return flow.dynamic_shift(flow.image_tokens_per_frame(shape[2], shape[3], patch_size))
    return float(cfg.recipe.shift)


class Conditioner:
    """Turns a data batch into the DiT's inputs (x, condition latents, context), from raw clips or from the
    latent cache. The paradigm says which condition latents (``Paradigm.encode_condition``).

    Caption dropout swaps in the empty caption's embedding; in both paths the same frozen encoders
    compute the same tensors, so the loss does not depend on which path fed it.
    """

    def __init__(self, vae, text_encoder, text_len: int, cached_null: torch.Tensor | None, device,
                 paradigm: Paradigm, seed: int):
        self.vae, self.text_encoder, self.text_len, self.device = vae, text_encoder, text_len, device
        self.null = cached_null
        self.paradigm, self.seed = paradigm, seed

    @torch.no_grad()
    def __call__(self, batch: dict, drop: torch.Tensor, repeats: int = 1, position: int = 0):
        """(x, condition latents, context) with each clip ``repeats`` times in a row (its noise draws; ``drop``
        has one entry per draw). Clips are encoded once and repeated on the device: repeating the pixel batch
        on the host first would copy and transfer ``repeats`` times its size at every step. ``position``:
        the batch's first global sample position, which seeds a paradigm's noise augmentation (exact resume)."""
        from ..data.cache import encode_videos, pad_contexts

        def per_draw(items: list) -> list:
            return [item for item in items for _ in range(repeats)]

        if "x" in batch:  # cached latents
            x, latents = batch["x"], ConditionLatents(s=batch["s"])
            contexts = [self.null if d else c for c, d in zip(per_draw(batch["context"]), drop.tolist())]
            context = pad_contexts(contexts)
        else:
            if self.paradigm.uses_shift or self.paradigm.uses_fourier:
                x, s = encode_videos(self.vae, batch["video"], batch["image"])
                latents = ConditionLatents(s=s)
            else:
                x = self.vae.encode(batch["video"].to(self.vae.device))
                g = torch.Generator(self.vae.device).manual_seed(
                    int(np.random.SeedSequence([self.seed, position, 1]).generate_state(1)[0]))
                latents = self.paradigm.encode_condition(self.vae.encode, batch["image"][:, :, None].to(self.vae.device),
                                                         batch["video"].shape[2], self.vae.temporal_factor,
                                                         training=True, generator=g)
            captions = ["" if d else c for c, d in zip(per_draw(batch["caption"]), drop.tolist())]
            context = self.text_encoder.encode(captions, max_length=self.text_len)
        x = x.to(self.device).repeat_interleave(repeats, dim=0)
        latents = ConditionLatents(*(None if t is None else t.to(self.device).repeat_interleave(repeats, dim=0)
                                     for t in (latents.s, latents.extra)))
        return x, latents, context.to(self.device)


def save_sample(cfg: TrainConfig, step: int, transformer_state: dict, transformer_config, vae, text_encoder,
                out_dir: Path, lora_config=None) -> Path:
    """Generate the fixed validation video with the current weights; save mp4 and a PNG strip. ``lora_config``:
    the state holds a LoRA's base and adapters, merged here for sampling."""
    from ..pipeline import FlashI2VPipeline
    from ..video import save_png_strip

    with torch.device("meta"):
        model = FlashI2VTransformer.from_config(transformer_config)
    if lora_config is not None:
        from ..lora import inject_lora

        inject_lora(model, lora_config)
    load_state_dict_strict(model, transformer_state, source="training state")
    if lora_config is not None:
        from ..lora import merge_lora

        merge_lora(model)
    model.to(vae.device).float().eval()
    pipe = FlashI2VPipeline(model, vae, text_encoder, signed_fourier=cfg.model.signed_fourier)
    d = cfg.data
    out = pipe(cfg.output.sample_image, cfg.output.sample_prompt, num_frames=d.num_frames, height=d.height,
               width=d.width, steps=cfg.output.sample_steps, seed=0, progress=False)
    path = out_dir / "samples" / f"step-{step:08d}.mp4"
    out.save(path)
    save_png_strip(out.frames, path.with_suffix(".png"))
    return path


def plot_losses(metrics_file: Path, png: Path, ylabel: str = "flow-matching loss") -> None:
    """Loss curve (raw and smoothed) as PNG next to metrics.jsonl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional; the numbers are in metrics.jsonl
        return
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return
    steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
    window = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps, smooth, label=f"mean of {window}")
    ax.set_xlabel("step"), ax.set_ylabel(ylabel), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "loss_curve.png", "config.json", "ema_transformer", "samples",
               "tensorboard", "lora", "ema_lora", "autoencoder")  # what a run writes into output.dir; --overwrite removes these and nothing else


@dataclass
class Run:
    """One training run's live objects: made by build(), advanced by train_step(), saved by checkpoint()."""
    cfg: TrainConfig
    info: DistInfo
    transformer: FlashI2VTransformer
    ema: torch.nn.Module
    objective: FlashI2VObjective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: object
    loader: DataLoader
    conditioner: Conditioner
    vae: object
    text_encoder: object
    shape: tuple
    shift: float
    dp_rank: int
    dp_size: int
    out_dir: Path
    step: int = 0
    consumed: int = 0  # clips this rank drew from the loader since (re)start
    samples_before: int = 0  # the sampler's position at (re)start, in clips of this rank
    batches: Iterator | None = None
    result: TrainResult = field(default_factory=TrainResult)

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def lora(self) -> bool:
        return bool(self.cfg.lora.rank)


def train(cfg: TrainConfig, resume: str | bool | None = None, device: str = "auto", progress: bool = True,
          overwrite: bool = False) -> TrainResult:
    """Run (or continue) training. ``resume``: True for the newest complete checkpoint of the run, or a step
    folder. ``overwrite``: start over in an output.dir that holds a run (its outputs are removed)."""
    info = init_distributed(device)
    claim_output_dir(Path(cfg.output.dir), info, resume, overwrite)
    torch.manual_seed(cfg.recipe.seed)
    run = build(cfg, info)
    if resume:
        restore(run, resume)
    logger = MetricsLogger(run, progress)
    started, last_step = time.perf_counter(), cfg.recipe.steps
    while run.step < last_step:
        loss, grad_norm = train_step(run)
        if cfg.recipe.time_limit_min and agreed_timeout(started, cfg.recipe.time_limit_min, info):
            last_step = run.step  # out of time: this step becomes the final one (checkpoint, sample, export)
        logger.log(run, loss, grad_norm, final=run.step == last_step)
        if run.step % cfg.output.checkpoint_every == 0 or run.step == last_step:
            checkpoint(run)
        if cfg.output.sample_every and cfg.output.sample_image and (
                run.step % cfg.output.sample_every == 0 or run.step == last_step):
            sample(run)
    logger.close()
    export_ema(run)
    run.result.final_step = run.step
    return run.result


def existing_run(out_dir: Path) -> int | None:
    """The newest checkpoint step of the run in ``out_dir`` (0: outputs but no checkpoint), None if it holds none."""
    from .checkpoint import STEP_DIR, step_folders

    folders = step_folders(out_dir / "checkpoints", complete_only=False)
    if folders:
        return int(STEP_DIR.match(folders[-1].name).group(1))
    return 0 if any((out_dir / name).exists() for name in RUN_OUTPUTS) else None


def claim_output_dir(out_dir: Path, info: DistInfo, resume, overwrite: bool) -> None:
    """Refuse to train a new run over an existing one unless told to (--overwrite removes its outputs)."""
    if resume and overwrite:
        raise FlashI2VError("--resume and --overwrite exclude each other: pass one of them")
    found = None if resume else existing_run(out_dir)
    barrier(info)  # every rank looked before rank 0 removes anything
    if found is None:
        return
    if not overwrite:
        held = f"checkpoints up to step {found}" if found else "outputs, no checkpoint yet"
        raise FlashI2VError(f"'{out_dir}' already holds a run ({held}): pass --resume to continue it, "
                            "or --overwrite to start over")
    if info.is_main:
        log.warning("--overwrite: removing the earlier run's outputs in %s", out_dir)
        for name in RUN_OUTPUTS:
            path = out_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    barrier(info)


def build(cfg: TrainConfig, info: DistInfo) -> Run:
    """Model, EMA, objective (parallelism applied from outside), optimizer, schedule, data, frozen encoders."""
    transformer = build_transformer(cfg)
    if cfg.lora.rank:  # before checkpointing, compile and FSDP, which wrap the layers peft replaces
        from ..lora import apply_lora

        if not cfg.model.init and info.is_main:
            log.warning("lora.rank is set but model.init is not: the adapters fine-tune the preset's random "
                        "initialisation; set model.init to the model to adapt")
        apply_lora(transformer, cfg.lora.rank, cfg.lora.alpha or cfg.lora.rank, cfg.lora.targets,
                   train_flashi2v_modules=cfg.lora.flashi2v_modules == "train",
                   base_dtype=torch.bfloat16 if cfg.recipe.precision == "bf16" else torch.float32)
    ema = None if cfg.lora.rank else make_ema(transformer)  # a LoRA's EMA follows its trainable weights (below)
    objective = FlashI2VObjective(transformer, cfg.model.signed_fourier, cfg.recipe.mean_loss_weight)
    if cfg.recipe.grad_checkpointing:  # the bool of older configs; the mode says which activations stay
        apply_activation_checkpointing(transformer, cfg.recipe.activation_checkpointing)
    if cfg.recipe.compile:
        from ..fast_path.compile import apply_compile

        apply_compile(transformer)  # per block, keys unchanged (step time: docs/performance.md, "Training step")
    dp_rank, dp_size = apply_context_parallel_groups(transformer, info, cfg.recipe.context_parallel)
    if info.distributed:
        apply_fsdp(objective, transformer.blocks)
        if ema is not None:
            apply_fsdp(ema, ema.blocks)
    objective.to(info.device)
    ema = TrainableEMA(transformer) if ema is None else ema.to(info.device)
    optimizer = build_optimizer(cfg, [p for p in objective.parameters() if p.requires_grad], info.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_multiplier, warmup=cfg.optim.warmup_steps, total=cfg.recipe.steps, decay=cfg.optim.decay,
        min_ratio=cfg.optim.min_lr_ratio))

    dataset, sampler, loader, cached = build_data(cfg, dp_rank, dp_size, info.device)
    need_encoders = not cached or cfg.output.sample_every or cfg.recipe.channel_loss_power
    vae, text_encoder = load_components(cfg.model.components, info.device) if need_encoders else (None, None)
    shape = tuple(dataset[0]["x"].shape) if cached else latent_shape(cfg, vae)
    paradigm = objective.paradigm
    if cached and not (paradigm.uses_shift or paradigm.uses_fourier):
        raise FlashI2VError(f"paradigm {paradigm.name!r} encodes its condition from the image at every step (noise "
                            "augmentation, or the whole masked clip): train it from data.index, not data.cache")
    if vae is not None:
        check_input_width(transformer.config, vae.temporal_factor)
    conditioner = Conditioner(vae, text_encoder, transformer.config.text_len, dataset.null_context if cached else None,
                              info.device, paradigm, cfg.recipe.seed)
    if cfg.recipe.channel_loss_power:
        if not hasattr(vae, "pixel_scales"):
            raise FlashI2VError(f"recipe.channel_loss_power needs a linear codec that knows its channels' pixel scales "
                                f"(the built-in codecs); {type(vae).__name__} does not: set it to 0")
        objective.channel_weight = flow.channel_loss_weights(vae.pixel_scales(shape[1]),
                                                             cfg.recipe.channel_loss_power).to(info.device)
    return Run(cfg, info, transformer, ema, objective, optimizer, scheduler, sampler, loader, conditioner, vae,
               text_encoder, shape, training_shift(cfg, shape, transformer.config.patch_size), dp_rank, dp_size,
               Path(cfg.output.dir), result=TrainResult(output_dir=Path(cfg.output.dir)))


def build_optimizer(cfg: TrainConfig, params: list, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; with optim.eight_bit_states, torchao's AdamW8bit (8-bit moments)."""
    o = cfg.optim
    if o.eight_bit_states:
        try:
            from torchao.optim import AdamW8bit
        except ImportError:
            raise FlashI2VError("optim.eight_bit_states needs torchao (pip install torchao), or set it to false") from None
        return AdamW8bit(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                             fused=device.type == "cuda" or None)


def model_settings(cfg: TrainConfig) -> dict:
    """The settings a checkpoint's weights depend on; a resume must keep them."""
    settings = {"preset": cfg.model.preset, "proj_kernel": cfg.model.proj_kernel,
                "signed_fourier": cfg.model.signed_fourier, "paradigm": cfg.model.paradigm}
    if cfg.lora.rank:  # absent for full fine-tuning, as in checkpoints written before LoRA existed
        settings["lora"] = {"rank": cfg.lora.rank, "alpha": cfg.lora.alpha or cfg.lora.rank,
                            "targets": list(cfg.lora.targets), "flashi2v_modules": cfg.lora.flashi2v_modules}
    return settings


def restore(run: Run, resume: str | bool) -> None:
    """Weights, optimizer, RNG, schedule and data position from the newest complete checkpoint (damaged
    newer ones are named and passed over) or from the given step folder."""
    from .checkpoint import resume_point

    folder, state = resume_point(run.ckpt_dir, resume, announce=run.info.is_main)
    mine = model_settings(run.cfg)
    saved = {"paradigm": "flashi2v", **state.get("model", mine)}  # checkpoints from before paradigms were FlashI2V
    differ = [f"model.{k}={saved.get(k)!r} there, {v!r} here" for k, v in mine.items() if saved.get(k) != v]
    if differ:
        raise FlashI2VError(f"checkpoint '{folder}' was trained with other model settings ({'; '.join(differ)}): "
                            "resume with the same model.* settings, or start a new run in another output.dir")
    state = load_checkpoint(folder, run.info, model=run.objective, ema=run.ema, optimizer=run.optimizer,
                            trainable_only=run.lora)
    run.scheduler.load_state_dict(state["scheduler"])
    run.sampler.load_state_dict(state["sampler"])
    run.step = state["step"]
    if run.info.is_main:
        log.info("resumed from %s at step %d", folder, run.step)


def batch_shape(run: Run, batch: dict) -> tuple[tuple, float]:
    """(latent shape, timestep shift) of a batch: the run's, or a bucket's (data.buckets: sizes differ by batch)."""
    if run.cfg.data.buckets is None or "video" not in batch:
        return run.shape, run.shift
    _, _, frames, height, width = batch["video"].shape
    vae = run.vae
    shape = (run.shape[0], (frames - 1) // vae.temporal_factor + 1, height // vae.spatial_factor,
             width // vae.spatial_factor)
    return shape, training_shift(run.cfg, shape, run.transformer.config.patch_size)


def train_step(run: Run) -> tuple[float, float]:
    """One optimizer step over grad_accum micro-batches; (global mean loss, gradient norm)."""
    cfg, info = run.cfg, run.info
    if run.batches is None:  # the loader and the noise positions continue from the (restored) sampler position
        position = run.sampler.state_dict()
        run.samples_before = position["epoch"] * run.sampler.epoch_length + position["offset"]
        run.batches = iter(run.loader)
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=cfg.recipe.precision == "bf16")
    run.objective.train()
    total = torch.zeros((), device=info.device)
    for a in range(cfg.recipe.grad_accum):
        batch = next(run.batches)
        run.result.skipped.update(dict(batch["skipped"]))
        n, k = run.samples_before + run.consumed, cfg.recipe.noise_draws
        # draw j of the clip at position p is drawn as position p * k + j
        positions = [((n + i) * run.dp_size + run.dp_rank) * k + j for i in range(len(batch["caption"])) for j in range(k)]
        run.consumed += len(batch["caption"])
        shape, shift = batch_shape(run, batch)
        noise = draw_noise(cfg.recipe.seed, positions, shape, caption_dropout=cfg.recipe.caption_dropout,
                           sigma_sampling=cfg.recipe.sigma_sampling, shift=shift,
                           rho_range=tuple(cfg.recipe.rho_range), device=info.device)
        x, latents, context = run.conditioner(batch, noise.drop_caption, repeats=k, position=positions[0])
        if info.distributed:
            run.objective.set_requires_gradient_sync(a == cfg.recipe.grad_accum - 1)
        with autocast:
            loss = run.objective(x, latents, context, noise.sigma.to(info.device), noise.eps, noise.rho.to(info.device))
        # FSDP averages gradients over all ranks; each context-parallel peer holds only its tokens' share
        (loss * cfg.recipe.context_parallel / cfg.recipe.grad_accum).backward()
        total += loss.detach() / cfg.recipe.grad_accum
    grad_norm = torch.nn.utils.clip_grad_norm_(run.objective.parameters(), cfg.optim.grad_clip)
    if hasattr(grad_norm, "full_tensor"):
        grad_norm = grad_norm.full_tensor()
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    update_ema(run.ema, run.transformer, ema_decay(cfg.optim.ema_decay, run.step, cfg.optim.ema_warmup))
    loss_value = all_mean(total, info).item()
    run.result.losses.append(loss_value)
    return loss_value, float(grad_norm)


class MetricsLogger:
    """metrics.jsonl (one row per step), TensorBoard scalars and the progress bar; rank 0 only."""

    def __init__(self, run: Run, progress: bool):
        self.main = run.info.is_main
        if self.main:
            run.out_dir.mkdir(parents=True, exist_ok=True)
            (run.out_dir / "config.json").write_text(json.dumps(run.cfg.to_dict(), indent=2))
        self.file = run.out_dir / "metrics.jsonl"
        self.writer = _tensorboard(run.cfg, run.out_dir) if self.main else None
        self.bar = tqdm(total=run.cfg.recipe.steps, initial=run.step, desc="training", unit="step",
                        disable=not (progress and self.main))
        self.tokens_per_step = (run.cfg.recipe.batch_size * run.cfg.recipe.grad_accum * run.dp_size
                                * math.prod(run.shape[1:]) // 4)
        self.t_last = time.perf_counter()

    def log(self, run: Run, loss: float, grad_norm: float, final: bool) -> None:
        if not self.main:
            return
        now = time.perf_counter()
        row = {"step": run.step, "loss": loss, "lr": run.scheduler.get_last_lr()[0], "grad_norm": grad_norm,
               "sec_per_step": now - self.t_last, "tokens_per_sec": self.tokens_per_step / max(now - self.t_last, 1e-9),
               "skipped": len(run.result.skipped)}
        self.t_last = now
        with self.file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k in ("loss", "lr", "grad_norm", "sec_per_step", "tokens_per_sec"):
                self.writer.add_scalar(f"train/{k}", row[k], run.step)
        self.bar.update(1)
        if run.step % run.cfg.output.log_every == 0 or final:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{row['lr']:.2e}", gnorm=f"{grad_norm:.3f}",
                                 skipped=len(run.result.skipped))

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def checkpoint(run: Run) -> None:
    """Save step run.step (collective) with the data position of what was trained on; refresh the loss plot."""
    train_state = {"step": run.step, "scheduler": run.scheduler.state_dict(),
                   "sampler": run.sampler.state_dict(consumed=run.consumed), "model": model_settings(run.cfg)}
    save_checkpoint(run.ckpt_dir, run.step, run.info, model=run.objective, ema=run.ema, optimizer=run.optimizer,
                    keep=run.cfg.output.keep, train_state=train_state, trainable_only=run.lora)
    if run.info.is_main:
        plot_losses(run.out_dir / "metrics.jsonl", run.out_dir / "loss_curve.png")


def sample(run: Run) -> None:
    """The fixed validation video with the current weights (gathered on every rank, generated on rank 0)."""
    state = {k.removeprefix("transformer."): v for k, v in full_state_dict(run.objective).items()}
    if run.info.is_main:
        save_sample(run.cfg, run.step, state, run.transformer.config, run.vae, run.text_encoder, run.out_dir,
                    lora_config=getattr(run.transformer, "lora_config", None))
    barrier(run.info)


def export_lora(run: Run) -> None:
    """A LoRA run's adapters in peft's layout: lora/ (the final weights) and ema_lora/ (their EMA)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from ..lora import save_lora

    live = get_model_state_dict(run.objective, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True, ignore_frozen_params=True))
    live = {k.removeprefix("transformer."): v for k, v in live.items()}
    averages = run.ema.named_averages()
    if run.info.is_main:
        save_lora(run.transformer, run.out_dir / "lora", state=live)
        save_lora(run.transformer, run.out_dir / "ema_lora", state=averages)


def export_ema(run: Run) -> None:
    """The EMA weights in our pretrained format (ema_transformer/; a LoRA run: its adapters, lora/ and
    ema_lora/), and the bad clips' summary."""
    if run.lora:
        export_lora(run)
    ema_state = None if run.lora else full_state_dict(run.ema)
    if run.info.is_main:
        if ema_state is not None:
            with torch.device("meta"):
                exported = FlashI2VTransformer.from_config(run.transformer.config)
            load_state_dict_strict(exported, ema_state, source="EMA")
            exported.save_pretrained(run.out_dir / "ema_transformer")
        if run.result.skipped:
            counts: dict[str, int] = {}
            for reason in run.result.skipped.values():
                counts[reason] = counts.get(reason, 0) + 1
            log.warning("skipped %d bad clip(s): %s", len(run.result.skipped), counts)
    barrier(run.info)


def agreed_timeout(started: float, minutes: float, info: DistInfo) -> bool:
    """True once the time budget is spent, decided by rank 0 so every rank stops at the same step."""
    flag = torch.tensor([float(time.perf_counter() - started > 60 * minutes)], device=info.device)
    if info.distributed:
        torch.distributed.broadcast(flag, 0)
    return bool(flag.item())


def _tensorboard(cfg: TrainConfig, out_dir: Path):
    if not cfg.output.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed (pip install tensorboard): scalars go to metrics.jsonl only")
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))
