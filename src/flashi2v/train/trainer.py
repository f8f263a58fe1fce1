"""`flashi2v train`: the FlashI2V recipe on one process or many (torchrun + FSDP2), resumable exactly."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import flow
from ..errors import FlashI2VError
from ..model import FlashI2VTransformer, load_state_dict_strict
from .checkpoint import full_state_dict, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, lr_multiplier
from .ema import ema_decay, make_ema, update_ema
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

    base = preset(cfg.model.preset, proj_kernel=cfg.model.proj_kernel)
    if not cfg.model.init:
        return FlashI2VTransformer.from_config(base)
    from ..weights import load_transformer_weights

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
        dataset = VideoClipDataset(records, DataConfig(d.num_frames, d.fps, d.height, d.width))
        collate, cached = collate_clips, False
    sampler = ResumableSampler(len(dataset), dp_rank, dp_size, seed=cfg.recipe.seed)
    loader = DataLoader(dataset, batch_size=cfg.recipe.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.data.num_workers > 0)
    return dataset, sampler, loader, cached


def latent_shape(cfg: TrainConfig, vae) -> tuple[int, int, int, int]:
    d = cfg.data
    return (vae.latent_channels, (d.num_frames - 1) // vae.temporal_factor + 1,
            d.height // vae.spatial_factor, d.width // vae.spatial_factor)


def training_shift(cfg: TrainConfig, shape, patch_size) -> float:
    if cfg.recipe.shift == "dynamic":
        return flow.dynamic_shift(flow.image_tokens_per_frame(shape[2], shape[3], patch_size))
    return float(cfg.recipe.shift)


class Conditioner:
    """Turns a data batch into the DiT's inputs (x, s, context), from raw clips or from the latent cache.

    Caption dropout swaps in the empty caption's embedding; in both paths the same frozen encoders
    compute the same tensors, so the loss does not depend on which path fed it.
    """

    def __init__(self, vae, text_encoder, text_len: int, cached_null: torch.Tensor | None, device):
        self.vae, self.text_encoder, self.text_len, self.device = vae, text_encoder, text_len, device
        self.null = cached_null

    @torch.no_grad()
    def __call__(self, batch: dict, drop: torch.Tensor, repeats: int = 1):
        """(x, s, context) with each clip ``repeats`` times in a row (its noise draws; ``drop`` has one entry
        per draw). Clips are encoded once and repeated on the device: repeating the pixel batch on the host
        first would copy and transfer ``repeats`` times its size at every step."""
        from ..data.cache import encode_videos, pad_contexts

        def per_draw(items: list) -> list:
            return [item for item in items for _ in range(repeats)]

        if "x" in batch:  # cached latents
            x, s = batch["x"], batch["s"]
            contexts = [self.null if d else c for c, d in zip(per_draw(batch["context"]), drop.tolist())]
            context = pad_contexts(contexts)
        else:
            x, s = encode_videos(self.vae, batch["video"], batch["image"])
            captions = ["" if d else c for c, d in zip(per_draw(batch["caption"]), drop.tolist())]
            context = self.text_encoder.encode(captions, max_length=self.text_len)
        x, s = (t.to(self.device).repeat_interleave(repeats, dim=0) for t in (x, s))
        return x, s, context.to(self.device)


def save_sample(cfg: TrainConfig, step: int, transformer_state: dict, transformer_config, vae, text_encoder,
                out_dir: Path) -> Path:
    """Generate the fixed validation video with the current weights; save mp4 and a PNG strip."""
    from ..pipeline import FlashI2VPipeline
    from ..video import save_png_strip

    with torch.device("meta"):
        model = FlashI2VTransformer.from_config(transformer_config)
    load_state_dict_strict(model, transformer_state, source="training state")
    model.to(vae.device).eval()
    pipe = FlashI2VPipeline(model, vae, text_encoder, signed_fourier=cfg.model.signed_fourier)
    d = cfg.data
    out = pipe(cfg.output.sample_image, cfg.output.sample_prompt, num_frames=d.num_frames, height=d.height,
               width=d.width, steps=cfg.output.sample_steps, seed=0, progress=False)
    path = out_dir / "samples" / f"step-{step:08d}.mp4"
    out.save(path)
    save_png_strip(out.frames, path.with_suffix(".png"))
    return path


def plot_losses(metrics_file: Path, png: Path) -> None:
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
    ax.set_xlabel("step"), ax.set_ylabel("flow-matching loss"), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def train(cfg: TrainConfig, resume: str | bool | None = None, device: str = "auto", progress: bool = True) -> TrainResult:
    """Run (or continue) training. ``resume``: True for the latest checkpoint of the run, or a step folder."""
    info = init_distributed(device)
    out_dir = Path(cfg.output.dir)
    ckpt_dir = out_dir / "checkpoints"
    torch.manual_seed(cfg.recipe.seed)

    # 1. Model, EMA, objective; parallelism applied from outside.
    transformer = build_transformer(cfg)
    ema = make_ema(transformer)
    objective = FlashI2VObjective(transformer, cfg.model.signed_fourier, cfg.recipe.mean_loss_weight)
    if cfg.recipe.grad_checkpointing:  # the bool of older configs; the mode says which activations stay
        apply_activation_checkpointing(transformer, cfg.recipe.activation_checkpointing)
    if cfg.recipe.compile:
        from ..fast_path.compile import apply_compile

        apply_compile(transformer)  # per block, keys unchanged; 0.74x diffusers' step time on an H100
    cp_degree = cfg.recipe.context_parallel
    dp_rank, dp_size = apply_context_parallel_groups(transformer, info, cp_degree)
    if info.distributed:
        apply_fsdp(objective, transformer.blocks)
        apply_fsdp(ema, ema.blocks)
    objective.to(info.device)
    ema.to(info.device)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay,
                                  fused=info.device.type == "cuda" or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        lr_multiplier, warmup=cfg.optim.warmup_steps, total=cfg.recipe.steps, decay=cfg.optim.decay,
        min_ratio=cfg.optim.min_lr_ratio))

    # 2. Data and the frozen encoders.
    dataset, sampler, loader, cached = build_data(cfg, dp_rank, dp_size, info.device)
    need_encoders = not cached or cfg.output.sample_every or cfg.recipe.channel_loss_power
    vae, text_encoder = load_components(cfg.model.components, info.device) if need_encoders else (None, None)
    if cached:
        shape = tuple(dataset[0]["x"].shape)
        conditioner = Conditioner(vae, text_encoder, transformer.config.text_len, dataset.null_context, info.device)
    else:
        shape = latent_shape(cfg, vae)
        conditioner = Conditioner(vae, text_encoder, transformer.config.text_len, None, info.device)
    shift = training_shift(cfg, shape, transformer.config.patch_size)
    if cfg.recipe.channel_loss_power:
        if not hasattr(vae, "pixel_scales"):
            raise FlashI2VError(f"recipe.channel_loss_power needs a linear codec that knows its channels' pixel scales "
                                f"(the built-in BlockPCACodec); {type(vae).__name__} does not: set it to 0")
        objective.channel_weight = flow.channel_loss_weights(vae.pixel_scales(shape[1]),
                                                             cfg.recipe.channel_loss_power).to(info.device)

    # 3. Resume.
    step = 0
    if resume:
        folder = latest_checkpoint(ckpt_dir) if resume is True else Path(resume)
        if folder is None:
            raise FlashI2VError(f"--resume: no complete checkpoint under '{ckpt_dir}': start without --resume")
        state = load_checkpoint(folder, info, model=objective, ema=ema, optimizer=optimizer)
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        step = state["step"]
        if info.is_main:
            log.info("resumed from %s at step %d", folder, step)

    # 4. The loop.
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    metrics_file = out_dir / "metrics.jsonl"
    writer = _tensorboard(cfg, out_dir) if info.is_main else None
    result = TrainResult(output_dir=out_dir)
    batches, consumed = iter(loader), 0
    world, rank = dp_size, dp_rank
    samples_before = sampler.state_dict()["epoch"] * sampler.epoch_length + sampler.state_dict()["offset"]
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=cfg.recipe.precision == "bf16")
    bar = tqdm(total=cfg.recipe.steps, initial=step, desc="training", unit="step", disable=not (progress and info.is_main))
    objective.train()
    tokens_per_step = cfg.recipe.batch_size * cfg.recipe.grad_accum * dp_size * math.prod(shape[1:]) // 4
    t_last = time.perf_counter()
    started, last_step = time.perf_counter(), cfg.recipe.steps
    while step < last_step:
        total = torch.zeros((), device=info.device)
        for a in range(cfg.recipe.grad_accum):
            batch = next(batches)
            result.skipped.update(dict(batch["skipped"]))
            n = samples_before + consumed
            k = cfg.recipe.noise_draws  # draw j of the clip at position p is drawn as position p * k + j
            positions = [((n + i) * world + rank) * k + j for i in range(len(batch["caption"])) for j in range(k)]
            consumed += len(batch["caption"])
            noise = draw_noise(cfg.recipe.seed, positions, shape, caption_dropout=cfg.recipe.caption_dropout,
                               sigma_sampling=cfg.recipe.sigma_sampling, shift=shift, rho_range=tuple(cfg.recipe.rho_range),
                               device=info.device)
            x, s, context = conditioner(batch, noise.drop_caption, repeats=k)
            if info.distributed:
                objective.set_requires_gradient_sync(a == cfg.recipe.grad_accum - 1)
            with autocast:
                loss = objective(x, s, context, noise.sigma.to(info.device), noise.eps, noise.rho.to(info.device))
            # FSDP averages gradients over all ranks; each context-parallel peer holds only its tokens' share
            (loss * cp_degree / cfg.recipe.grad_accum).backward()
            total += loss.detach() / cfg.recipe.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.optim.grad_clip)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        update_ema(ema, transformer, ema_decay(cfg.optim.ema_decay, step, cfg.optim.ema_warmup))
        if cfg.recipe.time_limit_min and _agreed_timeout(started, cfg.recipe.time_limit_min, info):
            last_step = step  # out of time: this step becomes the final one (checkpoint, sample, export)

        loss_value = all_mean(total, info).item()
        result.losses.append(loss_value)
        if info.is_main:
            now = time.perf_counter()
            row = {"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                   "sec_per_step": now - t_last, "tokens_per_sec": tokens_per_step / max(now - t_last, 1e-9),
                   "skipped": len(result.skipped)}
            t_last = now
            with metrics_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            if writer is not None:
                for k in ("loss", "lr", "grad_norm", "sec_per_step", "tokens_per_sec"):
                    writer.add_scalar(f"train/{k}", row[k], step)
            bar.update(1)
            if step % cfg.output.log_every == 0 or step == last_step:
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{row['lr']:.2e}", gnorm=f"{row['grad_norm']:.3f}",
                                skipped=len(result.skipped))

        if step % cfg.output.checkpoint_every == 0 or step == last_step:
            sampler_state = sampler.state_dict(consumed=consumed)
            save_checkpoint(ckpt_dir, step, info, model=objective, ema=ema, optimizer=optimizer, keep=cfg.output.keep,
                            train_state={"step": step, "scheduler": scheduler.state_dict(), "sampler": sampler_state})
            if info.is_main:
                plot_losses(metrics_file, out_dir / "loss_curve.png")
        if cfg.output.sample_every and cfg.output.sample_image and (step % cfg.output.sample_every == 0 or step == last_step):
            state = {k.removeprefix("transformer."): v for k, v in full_state_dict(objective).items()}
            if info.is_main:
                save_sample(cfg, step, state, transformer.config, vae, text_encoder, out_dir)
            barrier(info)
    bar.close()

    # 5. Export the EMA weights in our pretrained format.
    ema_state = full_state_dict(ema)
    if info.is_main:
        with torch.device("meta"):
            exported = FlashI2VTransformer.from_config(transformer.config)
        load_state_dict_strict(exported, ema_state, source="EMA")
        exported.save_pretrained(out_dir / "ema_transformer")
        if result.skipped:
            counts: dict[str, int] = {}
            for reason in result.skipped.values():
                counts[reason] = counts.get(reason, 0) + 1
            log.warning("skipped %d bad clip(s): %s", len(result.skipped), counts)
        if writer is not None:
            writer.close()
    barrier(info)
    result.final_step = step
    return result


def _agreed_timeout(started: float, minutes: float, info: DistInfo) -> bool:
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
