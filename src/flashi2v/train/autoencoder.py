"""`flashi2v train` for a video autoencoder (the built-in model's ``CausalVideoAutoencoder``), resumable exactly.

The same data sources, optimizer settings, checkpoints (atomic, damaged ones passed over), EMA and run-folder
rules as the DiT trainer; the objective is reconstruction. A YAML with an ``autoencoder:`` section (instead of
``model:``) trains one, e.g. the preset ``builtin-autoencoder``. The exported ``autoencoder/`` folder holds the EMA
weights with per-channel latent statistics measured on training clips, ready to be a pipeline's ``vae/``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..encoders.video_autoencoder import CausalVideoAutoencoder
from ..errors import FlashI2VError
from .checkpoint import load_checkpoint, save_checkpoint
from .config import DataSection, OptimSection, OutputSection, lr_multiplier
from .ema import ema_decay, make_ema, update_ema
from .parallel import DistInfo, all_mean, barrier, init_distributed

log = logging.getLogger("flashi2v.train")

EXPORT = "autoencoder"  # the EMA weights with their latent statistics, in output.dir


@dataclass
class AutoencoderSection:
    """CausalVideoAutoencoder's constructor arguments (its config.json), and where to start from."""

    channels: int = 64
    features: int = 128
    trunk: int = 192
    encoder_widths: list = field(default_factory=lambda: [32, 64, 128])
    renderer_widths: list = field(default_factory=lambda: [64, 48])
    linear_path: bool = True  # a linear codec beside the convolutions, fitted before training (see the class)
    # The encoder is the linear path alone, fitted before training and then frozen with its latent statistics: the
    # latent space is fixed from the start, so the DiT can train on it while the decoder trains.
    linear_encoder: bool = False
    init: str | None = None  # a saved autoencoder folder to continue from (its architecture wins)


@dataclass
class AutoencoderRecipe:
    steps: int = 10_000
    batch_size: int = 16  # clips per process
    precision: str = "bf16"  # bf16 autocast over fp32 weights, or fp32
    seed: int = 0
    # Latent noise while training: each clip's latents get Gaussian noise of std u x latent_noise x each channel's
    # spread (u uniform in [0, 1] per clip), so the decoder tolerates the small errors of generated latents.
    latent_noise: float = 0.1
    l1_weight: float = 0.5  # loss = MSE + l1_weight x L1 on pixels in [-1, 1] (L1 sharpens early training)
    # Weight of frame 0 against one later frame in the loss. Frame 0 is the condition image's frame, the one every
    # generated video starts from, but only 1 of 4k + 1 frames: with weight 1 it gets 1/17 of a 17-frame loss.
    first_frame_weight: float = 1.0
    statistics_clips: int = 512  # clips the exported latent statistics are measured on
    linear_fit_clips: int = 256  # clips the linear path is fitted on before training (not when resuming or from init)
    compile: bool = False
    time_limit_min: float | None = None  # stop (checkpoint + export) once this much wall time has passed


@dataclass
class AutoencoderTrainConfig:
    autoencoder: AutoencoderSection = field(default_factory=AutoencoderSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    recipe: AutoencoderRecipe = field(default_factory=AutoencoderRecipe)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)


AUTOENCODER_RANGES: dict[str, tuple] = {
    "autoencoder.channels": (1, None), "autoencoder.features": (1, None), "autoencoder.trunk": (1, None),
    "recipe.steps": (1, None), "recipe.batch_size": (1, None), "recipe.precision": ("bf16", "fp32"),
    "recipe.seed": (0, None), "recipe.latent_noise": (0, None), "recipe.l1_weight": (0, None),
    "recipe.statistics_clips": (1, None), "recipe.linear_fit_clips": (1, None), "recipe.first_frame_weight": (0, None, "> 0"), "recipe.time_limit_min": (0, None, "> 0"),
}


def autoencoder_config_from_mapping(values: dict) -> AutoencoderTrainConfig:
    """A checked AutoencoderTrainConfig from the sections of a training YAML (one with an ``autoencoder:`` section)."""
    from .config import RANGES, build_dataclass, check_range

    c = build_dataclass(AutoencoderTrainConfig, values, "")
    shared = {k: v for k, v in RANGES.items() if k.split(".")[0] in ("data", "optim", "output")}
    for key, rule in {**shared, **AUTOENCODER_RANGES}.items():
        section, name = key.split(".")
        check_range(key, getattr(getattr(c, section), name), rule)
    a = c.autoencoder
    for key, widths, n in (("encoder_widths", a.encoder_widths, 3), ("renderer_widths", a.renderer_widths, 2)):
        if not (isinstance(widths, list) and len(widths) == n and all(type(w) is int and w > 0 for w in widths)):
            raise FlashI2VError(f"autoencoder.{key} {widths!r}: give {n} positive integers, e.g. "
                                f"{AutoencoderSection().__dict__[key]}")
    if (c.data.num_frames - 1) % 4:
        raise FlashI2VError(f"data.num_frames {c.data.num_frames} is not of the form 4k+1: use e.g. 17")
    if c.data.height % 8 or c.data.width % 8:
        raise FlashI2VError(f"data.height/width {c.data.height}x{c.data.width} must be multiples of 8")
    if not any(getattr(c.data, k) is not None for k in ("index", "cache", "photos", "clips")) or c.data.cache:
        raise FlashI2VError("an autoencoder trains on pixels: set data.photos, data.clips or data.index "
                            "(not data.cache, which holds latents)")
    if c.data.buckets is not None:
        raise FlashI2VError("data.buckets is not supported for an autoencoder: unset it (one clip size)")
    if not c.output.dir.strip():
        raise FlashI2VError("output.dir is empty: give the run folder, e.g. output.dir=runs/autoencoder")
    return c


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of a mean squared error on pixels in [-1, 1] (peak-to-peak 2)."""
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def reconstruction_loss(model, video: torch.Tensor, noise: float, l1_weight: float, generator: torch.Generator,
                        first_frame_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, MSE, frame 0's MSE) of ``model(video)`` (CausalVideoAutoencoder.forward, or a data-parallel wrapper of
    it) with latent noise of std u x ``noise`` x each channel's spread, u ~ U(0, 1) per clip. The loss is a weighted
    mean over frames of MSE + l1_weight x L1, frame 0 weighted ``first_frame_weight`` against 1 for each later frame."""
    b, _, f, h, w = video.shape
    scale = eps = None
    if noise > 0:
        codec = getattr(model, "module", model)  # through DistributedDataParallel
        t, sp = codec.temporal_factor, codec.spatial_factor
        latent = (b, codec.latent_channels, (f - 1) // t + 1, h // sp, w // sp)
        scale = noise * torch.rand(b, device=video.device, generator=generator)
        eps = torch.randn(latent, device=video.device, generator=generator)
    error = model(video, scale, eps).float() - video.float()
    mse_f, l1_f = error.square().mean(dim=(0, 1, 3, 4)), error.abs().mean(dim=(0, 1, 3, 4))  # per frame
    weights = torch.ones_like(mse_f)
    weights[0] = first_frame_weight
    loss = (weights * (mse_f + l1_weight * l1_f)).sum() / weights.sum()
    return loss, mse_f.mean().detach(), mse_f[0].detach()


def build_autoencoder(cfg: AutoencoderTrainConfig) -> CausalVideoAutoencoder:
    a = cfg.autoencoder
    if a.init:
        model = CausalVideoAutoencoder.from_pretrained(a.init).requires_grad_(True).train()
        log.info("initialised from %s", a.init)
        return model
    try:
        return CausalVideoAutoencoder(a.channels, a.features, a.trunk, tuple(a.encoder_widths), tuple(a.renderer_widths),
                                      a.linear_path, a.linear_encoder)
    except (TypeError, ValueError) as err:
        raise FlashI2VError(f"autoencoder.* does not describe an autoencoder ({err}): fix the widths") from None


def _settings(cfg: AutoencoderTrainConfig) -> dict:
    a = cfg.autoencoder
    return {"channels": a.channels, "features": a.features, "trunk": a.trunk,
            "encoder_widths": list(a.encoder_widths), "renderer_widths": list(a.renderer_widths),
            "linear_path": a.linear_path, "linear_encoder": a.linear_encoder}


def train_autoencoder(cfg: AutoencoderTrainConfig, resume: str | bool | None = None, device: str = "auto",
                      progress: bool = True, overwrite: bool = False):
    """Train (or continue training) the autoencoder; the EMA weights and latent statistics go to output.dir/autoencoder."""
    from .trainer import TrainResult, agreed_timeout, build_data, claim_output_dir, plot_losses

    info = init_distributed(device)
    out = Path(cfg.output.dir)
    claim_output_dir(out, info, resume, overwrite)
    torch.manual_seed(cfg.recipe.seed)
    dataset, sampler, loader, _ = build_data(cfg, info.rank, info.world_size, info.device)
    model = build_autoencoder(cfg)
    if model.linear_path and not cfg.autoencoder.init and not resume:
        # the first clips of the dataset, the same on every rank (resuming restores the fitted weights instead)
        count = min(cfg.recipe.linear_fit_clips, len(dataset))
        clips = torch.stack([dataset[i]["video"] for i in range(count)])
        model.fit_linear(clips)
        if model.linear_encoder:  # the latent space is final now: so are its statistics
            model.fit_statistics(clips.split(32))
    if model.linear_encoder:
        for p in model.encoder_parameters():
            p.requires_grad_(False)
    model = model.to(info.device)
    ema = make_ema(model)
    trained = model
    if info.distributed:  # data parallel: every rank a copy, gradients averaged
        trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=[info.device.index]
                                                            if info.device.type == "cuda" else None)
    forward = torch.compile(model) if cfg.recipe.compile else model
    o = cfg.optim
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                  weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(
        s, o.warmup_steps, cfg.recipe.steps, o.decay, o.min_lr_ratio))
    step = 0
    if resume:
        step = _restore(out / "checkpoints", resume, cfg, info, trained, ema, optimizer, scheduler, sampler)
    result = TrainResult(output_dir=str(out))
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({"task": "autoencoder", **cfg.to_dict()}, indent=2))
    bar = tqdm(total=cfg.recipe.steps, initial=step, desc="training autoencoder", unit="step",
               disable=not (progress and info.is_main))
    autocast = torch.autocast(info.device.type, dtype=torch.bfloat16, enabled=cfg.recipe.precision == "bf16")
    batches, consumed, started, last_step, t_last = iter(loader), 0, time.perf_counter(), cfg.recipe.steps, time.perf_counter()
    while step < last_step:
        batch = next(batches)
        result.skipped.update(dict(batch["skipped"]))
        consumed += len(batch["caption"])
        video = batch["video"].to(info.device, non_blocking=True)
        # the noise of step s is the same whether the run was resumed or not
        generator = torch.Generator(info.device).manual_seed(cfg.recipe.seed * 1_000_003 + step * 1009 + info.rank)
        with autocast:
            loss, mse, mse_first = reconstruction_loss(trained if info.distributed else forward, video,
                                                       cfg.recipe.latent_noise, cfg.recipe.l1_weight, generator,
                                                       cfg.recipe.first_frame_weight)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        update_ema(ema, model, ema_decay(o.ema_decay, step, o.ema_warmup))
        loss_value, mse_value = all_mean(loss.detach(), info).item(), all_mean(mse, info).item()
        mse_first = all_mean(mse_first, info).item()
        result.losses.append(loss_value)
        if cfg.recipe.time_limit_min and agreed_timeout(started, cfg.recipe.time_limit_min, info):
            last_step = step  # out of time: this step becomes the final one (checkpoint, export)
        if info.is_main:
            now = time.perf_counter()
            row = {"step": step, "loss": loss_value, "psnr": float(psnr(torch.tensor(mse_value))),
                   "psnr_frame0": float(psnr(torch.tensor(mse_first))),
                   "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm, "sec_per_step": now - t_last}
            t_last = now
            with (out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.update(1)
            if step % cfg.output.log_every == 0 or step == last_step:
                bar.set_postfix(loss=f"{loss_value:.4f}", psnr=f"{row['psnr']:.2f}", psnr0=f"{row['psnr_frame0']:.2f}",
                                lr=f"{row['lr']:.2e}")
        if step % cfg.output.checkpoint_every == 0 or step == last_step:
            state = {"step": step, "scheduler": scheduler.state_dict(), "sampler": sampler.state_dict(consumed=consumed),
                     "autoencoder": _settings(cfg)}
            save_checkpoint(out / "checkpoints", step, info, model=trained, ema=ema, optimizer=optimizer,
                            train_state=state, keep=cfg.output.keep)
            if info.is_main:
                plot_losses(out / "metrics.jsonl", out / "loss_curve.png", ylabel="MSE + L1 on pixels")
    bar.close()
    if info.is_main:
        export_autoencoder(ema, loader, cfg.recipe.statistics_clips, out / EXPORT)
    barrier(info)
    result.final_step = step
    return result


def _restore(root: Path, resume, cfg, info: DistInfo, model, ema, optimizer, scheduler, sampler) -> int:
    """The newest complete checkpoint (or the given step folder): weights, optimizer, RNG, schedule, data position."""
    from .checkpoint import resume_point

    folder, state = resume_point(root, resume, announce=info.is_main)
    if state.get("autoencoder") != _settings(cfg):
        raise FlashI2VError(f"checkpoint '{folder}' was trained with other autoencoder settings "
                            f"({state.get('autoencoder')}): resume with the same autoencoder.* settings, or start a "
                            "new run in another output.dir")
    state = load_checkpoint(folder, info, model=model, ema=ema, optimizer=optimizer)
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    if info.is_main:
        log.info("resumed from %s at step %d", folder, state["step"])
    return state["step"]


@torch.no_grad()
def export_autoencoder(ema: torch.nn.Module, loader, clips: int, folder: Path) -> CausalVideoAutoencoder:
    """The EMA weights with per-channel latent statistics measured on ``clips`` training clips, saved to ``folder``.
    A linear encoder keeps the statistics it was fitted with: a DiT may already be training on those latents."""
    model = ema.eval()
    if model.linear_encoder:
        model.save_pretrained(folder)
        return model

    def videos():
        seen = 0
        for batch in loader:
            if seen >= clips:
                return
            yield batch["video"][: clips - seen]
            seen += len(batch["video"])

    model.fit_statistics(videos())
    model.save_pretrained(folder)
    return model
