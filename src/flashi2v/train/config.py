"""Training configuration: dataclasses loaded from YAML, with ``section.key=value`` overrides.

Presets ship inside the package (``flashi2v/configs/*.yaml``): ``tiny`` (CPU-friendly, random tiny
components) and ``flashi2v-1.3b`` (the reference recipe, docs/method.md section 7).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..errors import FlashI2VError


@dataclass
class ModelSection:
    preset: str = "flashi2v-1.3b"
    proj_kernel: str = "1x3x3"
    init: str | None = None  # transformer weights to start from (our format, or any layout `flashi2v convert` reads)
    components: str = "tiny-random"  # folder with vae/, text_encoder/, tokenizer/; "tiny-random" builds tiny ones
    signed_fourier: bool = False


@dataclass
class DataSection:
    index: str | None = None  # clip index (.json/.jsonl) or a folder of videos with .txt captions
    cache: str | None = None  # folder written by `flashi2v data cache`; used instead of decoding videos
    photos: str | None = None  # folder of photos: camera-motion clips rendered on the fly (the built-in model)
    synthetic_clips: int = 100_000  # distinct rendered clips per epoch
    real_clips: str | None = None  # .pt list of pre-decoded real clips mixed in (~10 % of samples)
    colour_jitter: float = 0.0  # rendered clips: per-clip colour change of the photo (CameraMotionClips)
    vertical_flip: bool = False  # rendered clips: photos upside down half of the time
    num_frames: int = 49
    height: int = 480
    width: int = 832
    fps: float = 16.0
    num_workers: int = 2


LR_DECAYS = ("constant", "linear", "cosine")


def lr_multiplier(step: int, warmup: int, total: int, decay: str = "constant", min_ratio: float = 0.0) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a fraction of optim.lr: a linear warmup over
    ``warmup`` steps, then constant, or a linear / half-cosine decay to ``min_ratio`` at step ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * shape


@dataclass
class OptimSection:
    lr: float = 2e-5
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-15
    weight_decay: float = 0.01
    warmup_steps: int = 0
    # After the warmup: "constant" (the reference recipe), or "linear" / "cosine" decay to min_lr_ratio x lr
    # at recipe.steps (annealing a fine-tuning run to its end)
    decay: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = False  # ramp the decay up from 0.1 (for models trained from scratch)


@dataclass
class RecipeSection:
    steps: int = 1000
    batch_size: int = 1  # per process
    grad_accum: int = 1
    # Noise draws per clip and step: each clip enters the loss this many times with its own sigma, eps, rho
    # and caption drop. Pays when clips are cheap to encode but slow to load (the built-in model's steps wait
    # on clip rendering, the GPU idles); 1 is the reference recipe.
    noise_draws: int = 1
    precision: str = "bf16"  # bf16 autocast over fp32 master weights, or fp32
    grad_checkpointing: bool = True
    # Which activations checkpointed blocks keep (only with grad_checkpointing: true; false means "none"):
    # full (recompute whole blocks), attention (keep attention outputs), selective (keep attention and
    # matmul outputs, recompute elementwise work), none. See train.parallel.apply_activation_checkpointing.
    activation_checkpointing: str = "full"
    caption_dropout: float = 0.1
    sigma_sampling: str = "logit_normal"  # or "uniform"
    shift: str | float = "dynamic"  # "dynamic" (from the token count) or a static factor
    rho_range: tuple[float, float] = (0.05, 0.95)
    # Extra weight on the error of each latent frame's channel means (flow.flow_loss's mean_weight); 0 is
    # the reference recipe's plain MSE
    mean_loss_weight: float = 0.0
    # Loss weight of each latent channel ~ (pixels one unit of it moves)^power (flow.channel_loss_weights): 0 is
    # the reference recipe's plain MSE; 2 is the MSE in pixels for a linear codec (the built-in BlockPCACodec)
    channel_loss_power: float = 0.0
    seed: int = 0
    compile: bool = False
    context_parallel: int = 1  # Ulysses degree: ranks that share one sample's tokens (divides the world size)
    time_limit_min: float | None = None  # stop (checkpoint + export) once this much wall time has passed


@dataclass
class OutputSection:
    dir: str = "runs/flashi2v"
    checkpoint_every: int = 500
    keep: int = 3
    log_every: int = 10
    sample_every: int = 0  # 0: no sample videos
    sample_image: str | None = None
    sample_prompt: str = "the camera pans left"
    sample_steps: int = 20
    tensorboard: bool = True


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    recipe: RecipeSection = field(default_factory=RecipeSection)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: dict, where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise FlashI2VError(f"unknown config key(s) {unknown} in {where or 'top level'}: valid keys are {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        sub = names[key].default_factory if names[key].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise FlashI2VError(f"config section {key!r} must be a mapping, got {value!r}")
            value = _build(sub, value, key)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise FlashI2VError(f"override {text!r} is not of the form section.key=value (e.g. recipe.steps=100)")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def preset_path(name: str) -> Path:
    return Path(str(resources.files("flashi2v") / "configs" / f"{name}.yaml"))


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (or a preset name such as 'tiny'), apply dotted overrides, validate."""
    values: dict = {}
    if source is not None:
        path = Path(source)
        if not path.is_file() and preset_path(str(source)).is_file():
            path = preset_path(str(source))
        if not path.is_file():
            raise FlashI2VError(f"config {source!r} not found: give a YAML file or a preset name (tiny, flashi2v-1.3b)")
        values = yaml.safe_load(path.read_text()) or {}
    for text in overrides or []:
        keys, value = _parse_override(text)
        node = values
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    config = _build(TrainConfig, values, "")
    validate(config)
    return config


def validate(c: TrainConfig) -> None:
    if c.recipe.precision not in ("bf16", "fp32"):
        raise FlashI2VError(f"recipe.precision {c.recipe.precision!r}: use bf16 or fp32")
    if c.recipe.activation_checkpointing not in ("none", "full", "attention", "selective"):
        raise FlashI2VError(f"recipe.activation_checkpointing {c.recipe.activation_checkpointing!r}: "
                            "use none, full, attention or selective")
    if c.recipe.sigma_sampling not in ("logit_normal", "uniform"):
        raise FlashI2VError(f"recipe.sigma_sampling {c.recipe.sigma_sampling!r}: use logit_normal or uniform")
    if c.recipe.shift != "dynamic" and not (isinstance(c.recipe.shift, (int, float)) and c.recipe.shift > 0):
        raise FlashI2VError(f"recipe.shift {c.recipe.shift!r}: use 'dynamic' or a positive number")
    if (c.data.num_frames - 1) % 4:
        raise FlashI2VError(f"data.num_frames {c.data.num_frames} is not of the form 4k+1: use e.g. 49")
    if c.data.height % 16 or c.data.width % 16:
        raise FlashI2VError(f"data.height/width {c.data.height}x{c.data.width} must be multiples of 16")
    if c.data.index is None and c.data.cache is None and c.data.photos is None:
        raise FlashI2VError("no training data: set data.index (clip index or video folder), data.cache or data.photos")
    if min(c.recipe.steps, c.recipe.batch_size, c.recipe.grad_accum) < 1:
        raise FlashI2VError("recipe.steps, batch_size and grad_accum must be >= 1")
    if c.recipe.mean_loss_weight < 0:
        raise FlashI2VError(f"recipe.mean_loss_weight must be >= 0, got {c.recipe.mean_loss_weight}")
    if not 0 <= c.recipe.channel_loss_power <= 4:
        raise FlashI2VError(f"recipe.channel_loss_power must be in [0, 4] (0: plain MSE, 2: MSE in pixels), "
                            f"got {c.recipe.channel_loss_power}")
    if c.recipe.noise_draws < 1:
        raise FlashI2VError(f"recipe.noise_draws must be >= 1, got {c.recipe.noise_draws}")
    if c.optim.decay not in LR_DECAYS:
        raise FlashI2VError(f"optim.decay {c.optim.decay!r}: use one of {', '.join(LR_DECAYS)}")
    if not 0.0 <= c.optim.min_lr_ratio <= 1.0:
        raise FlashI2VError(f"optim.min_lr_ratio must be in 0..1, got {c.optim.min_lr_ratio}")
