"""Training configuration: dataclasses loaded from YAML, with ``section.key=value`` overrides.

Presets ship inside the package (``flashi2v/configs/*.yaml``): ``tiny`` (CPU-friendly, random tiny
components) and ``flashi2v-1.3b`` (the reference recipe, docs/method.md section 7).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..config import LORA_TARGETS, PARADIGM_NAMES, PRESETS, PROJ_KERNELS
from ..errors import FlashI2VError


@dataclass
class ModelSection:
    preset: str = "flashi2v-1.3b"
    proj_kernel: str = "1x3x3"
    init: str | None = None  # transformer weights to start from (our format, or any layout `flashi2v convert` reads)
    components: str | None = "tiny-random"  # folder with vae/, text_encoder/, tokenizer/; "tiny-random" builds tiny ones
    signed_fourier: bool = False
    # how the condition image enters the model (flashi2v.paradigms); saved in the model's config.json
    paradigm: str = "flashi2v"


@dataclass
class DataSection:
    index: str | None = None  # clip index (.json/.jsonl) or a folder of videos with .txt captions
    cache: str | None = None  # folder written by `flashi2v data cache`; used instead of decoding videos
    photos: str | None = None  # folder of photos: camera-motion clips rendered on the fly (the built-in model)
    clips: str | None = None  # clip file (flashi2v.data.clip_file): pre-rendered uint8 clips, memory-mapped
    synthetic_clips: int = 100_000  # distinct rendered clips per epoch
    real_clips: str | None = None  # .pt list of pre-decoded real clips mixed in (~10 % of samples)
    colour_jitter: float = 0.0  # rendered clips: per-clip colour change of the photo (CameraMotionClips)
    vertical_flip: bool = False  # rendered clips: photos upside down half of the time
    num_frames: int = 49
    height: int = 480
    width: int = 832
    fps: float = 16.0
    num_workers: int = 2
    # Resolution and length buckets for a clip index of mixed sizes: a list of [frames, height, width]. Each clip
    # goes to the bucket with the most frames, then the largest area, among those it fills without upscaling and
    # whose aspect ratio is within bucket_aspect_tolerance of its own; every batch comes from one bucket.
    # Unset: every clip is cropped and resized to num_frames x height x width.
    buckets: list | None = None
    bucket_aspect_tolerance: float = 0.15  # |width/height of clip over bucket - 1| allowed (the crop's share)


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
    # AdamW with 8-bit moment estimates (torchao.optim.AdamW8bit, pip install torchao): a quarter of the
    # optimizer's memory; only worth it for full fine-tuning (a LoRA's states are small)
    eight_bit_states: bool = False


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
class LoraSection:
    """LoRA through peft (flashi2v.lora): rank 0 trains the whole model (the reference recipe)."""

    rank: int = 0
    alpha: float | None = None  # the update is scaled by alpha / rank; unset: alpha = rank (scale 1)
    targets: list = field(default_factory=lambda: list(LORA_TARGETS))  # Linear layers of every block
    # FlashI2V's learnable_proj and fourier_embedding: "train" them in full (they are new to a Wan2.1-T2V base)
    # or "freeze" them (adapting a FlashI2V model that already has them)
    flashi2v_modules: str = "train"


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
    lora: LoraSection = field(default_factory=LoraSection)
    output: OutputSection = field(default_factory=OutputSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)}

# Allowed values beyond the type, one home for every key: (low, high) bounds (None: open), or a tuple of choices.
# A key not listed only needs the right type.
RANGES: dict[str, tuple] = {
    "model.preset": tuple(sorted(PRESETS)), "model.proj_kernel": PROJ_KERNELS, "model.paradigm": PARADIGM_NAMES,
    "data.synthetic_clips": (1, None), "data.colour_jitter": (0, None), "data.num_frames": (1, None),
    "data.height": (16, None), "data.width": (16, None), "data.fps": (1e-3, None), "data.num_workers": (0, None),
    "optim.lr": (0, None, "> 0"), "optim.eps": (0, None, "> 0"), "optim.weight_decay": (0, None),
    "optim.warmup_steps": (0, None), "optim.decay": LR_DECAYS, "optim.min_lr_ratio": (0, 1),
    "optim.grad_clip": (0, None, "> 0"), "optim.ema_decay": (0, 1),
    "recipe.steps": (1, None), "recipe.batch_size": (1, None), "recipe.grad_accum": (1, None),
    "recipe.noise_draws": (1, None), "recipe.precision": ("bf16", "fp32"),
    "recipe.activation_checkpointing": ("none", "full", "attention", "selective"),
    "recipe.caption_dropout": (0, 1), "recipe.sigma_sampling": ("logit_normal", "uniform"),
    "recipe.rho_range": (0, 1), "recipe.mean_loss_weight": (0, None), "recipe.channel_loss_power": (0, 4),
    "recipe.seed": (0, None), "recipe.context_parallel": (1, None), "recipe.time_limit_min": (0, None, "> 0"),
    "data.bucket_aspect_tolerance": (0, 1),
    "lora.rank": (0, None), "lora.alpha": (0, None, "> 0"), "lora.flashi2v_modules": ("train", "freeze"),
    "output.checkpoint_every": (1, None), "output.keep": (1, None), "output.log_every": (1, None),
    "output.sample_every": (0, None), "output.sample_steps": (1, None),
}


def _number(value, kind: type, key: str):
    """``value`` as an int or a finite float; YAML reads ``1e-5`` (no dot) as a string, so numeric strings count."""
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float else int(value.strip())
        except ValueError:
            raise FlashI2VError(f"{key}: {value!r} is not a{'n integer' if kind is int else ' number'}: "
                                f"give e.g. {key}={'100' if kind is int else '1e-5'}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FlashI2VError(f"{key}: {value!r} is not a{'n integer' if kind is int else ' number'}: "
                            f"give e.g. {key}={'100' if kind is int else '1e-5'}")
    if kind is int and value != int(value):
        raise FlashI2VError(f"{key} must be a whole number, got {value!r}")
    if not math.isfinite(value):
        raise FlashI2VError(f"{key} must be a finite number, got {value!r}")
    return int(value) if kind is int else float(value)


def _typed(value, annotation, key: str):
    """``value`` checked (and coerced where lossless) against a field annotation of the config dataclasses."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _typed(value, options[0], key)
        try:  # str | float (recipe.shift): a number if it reads as one, else a keyword that validate() checks
            return _number(value, float, key)
        except FlashI2VError:
            if isinstance(value, str):
                return value
            raise
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise FlashI2VError(f"{key} must be a list of {len(args)} numbers, got {value!r}: give e.g. "
                                f"{key}=[0.9,0.999]")
        return tuple(_typed(v, a, key) for v, a in zip(value, args))
    if annotation is bool:
        if not isinstance(value, bool):
            raise FlashI2VError(f"{key}: {value!r} is not true/false: give {key}=true or {key}=false")
        return value
    if annotation in (int, float):
        return _number(value, annotation, key)
    if annotation is str:
        if not isinstance(value, str):
            raise FlashI2VError(f"{key}: {value!r} is not a string: quote it, e.g. {key}='{value}'")
        return value
    return value


def build_dataclass(cls, values, where: str):
    if not isinstance(values, dict):
        raise FlashI2VError(f"config section {where!r} must be a mapping of key: value, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise FlashI2VError(f"unknown config key(s) {[f'{where}.{k}' if where else k for k in unknown]}: valid keys "
                            f"{'in ' + where + ' ' if where else ''}are {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        sub = names[key].default_factory if names[key].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise FlashI2VError(f"config section {key!r} must be a mapping of key: value, got {value!r}")
            value = build_dataclass(sub, value, key)
        else:
            value = _typed(value, hints[key], f"{where}.{key}" if where else key)
        kwargs[key] = value
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise FlashI2VError(f"override {text!r} is not of the form section.key=value (e.g. recipe.steps=100)")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if len(keys) != 2 or not all(keys):
        raise FlashI2VError(f"override {text!r}: the key must be section.key (e.g. recipe.steps=100)")
    try:
        return keys, yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise FlashI2VError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(e)}): quote it") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


def preset_path(name: str) -> Path:
    return Path(str(resources.files("flashi2v") / "configs" / f"{name}.yaml"))


def config_from_mapping(values: dict) -> TrainConfig:
    """A checked TrainConfig from the sections of a training YAML already read into a dict."""
    config = build_dataclass(TrainConfig, values, "")
    validate(config)
    return config


def read_config_mapping(source: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """The sections of a YAML file (or a preset name such as 'tiny') with dotted overrides applied, unchecked."""
    values: dict = {}
    if source is not None:
        path = Path(source)
        if not path.is_file() and preset_path(str(source)).is_file():
            path = preset_path(str(source))
        if not path.is_file():
            raise FlashI2VError(f"config {source!r} not found: give a YAML file or a preset name (tiny, flashi2v-1.3b)")
        try:
            values = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise FlashI2VError(f"config '{path}' is not valid YAML ({_yaml_problem(e)}): fix the file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise FlashI2VError(f"config '{path}' could not be read ({e}): give a UTF-8 YAML file") from None
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise FlashI2VError(f"config '{path}' must be a mapping of sections (model:, data:, optim:, recipe:, lora:, "
                                f"output:), got a {type(values).__name__}")
    for text in overrides or []:
        (section, key), value = _parse_override(text)
        node = values.setdefault(section, {})
        if not isinstance(node, dict):
            raise FlashI2VError(f"config section {section!r} must be a mapping of key: value, got {node!r}")
        node[key] = value
    return values


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML file (or a preset name such as 'tiny'), apply dotted overrides, validate."""
    return config_from_mapping(read_config_mapping(source, overrides))


def check_range(key: str, value, rule: tuple) -> None:
    if value is None:
        return  # optional and unset
    if isinstance(rule[0], str):
        if value not in rule:
            raise FlashI2VError(f"{key} {value!r}: use one of {', '.join(rule)}")
        return
    low, high, *strict = rule
    for v in value if isinstance(value, tuple) else (value,):
        bad = (low is not None and (v <= low if strict else v < low)) or (high is not None and v > high)
        if bad:
            span = strict[0] if strict else (f"in [{low}, {high}]" if high is not None else f">= {low}")
            raise FlashI2VError(f"{key} must be {span}, got {value!r}: fix it in the config or override {key}=...")


def validate(c: TrainConfig) -> None:
    """Every key against RANGES, then the rules that tie keys together. Types were checked by build_dataclass."""
    for key, rule in RANGES.items():
        section, name = key.split(".")
        check_range(key, getattr(getattr(c, section), name), rule)
    if c.recipe.shift != "dynamic" and not (isinstance(c.recipe.shift, (int, float)) and c.recipe.shift > 0):
        raise FlashI2VError(f"recipe.shift {c.recipe.shift!r}: use 'dynamic' or a positive number")
    if c.recipe.rho_range[0] > c.recipe.rho_range[1]:
        raise FlashI2VError(f"recipe.rho_range {list(c.recipe.rho_range)}: give [low, high] with low <= high")
    if (c.data.num_frames - 1) % 4:
        raise FlashI2VError(f"data.num_frames {c.data.num_frames} is not of the form 4k+1: use e.g. 49")
    if c.data.height % 16 or c.data.width % 16:
        raise FlashI2VError(f"data.height/width {c.data.height}x{c.data.width} must be multiples of 16")
    if not c.output.dir.strip():
        raise FlashI2VError("output.dir is empty: give the run folder, e.g. output.dir=runs/my-run")
    sources = [k for k in ("index", "cache", "photos", "clips") if getattr(c.data, k) is not None]
    if not sources:
        raise FlashI2VError("no training data: set data.index (clip index or video folder), data.cache, data.photos "
                            "or data.clips")
    if c.data.buckets is not None:
        check_buckets(c.data.buckets)
    if not (isinstance(c.lora.targets, list) and c.lora.targets and all(isinstance(t, str) and t for t in c.lora.targets)):
        raise FlashI2VError(f"lora.targets {c.lora.targets!r}: give a list of block layer names, e.g. {list(LORA_TARGETS[:2])}")
    if not all(0 <= b < 1 for b in c.optim.betas):
        raise FlashI2VError(f"optim.betas must both be in [0, 1), got {list(c.optim.betas)}")


def check_buckets(buckets) -> list[tuple[int, int, int]]:
    """data.buckets as (frames, height, width) triples: 4k+1 frames, sides multiples of 16, no duplicates."""
    example = "data.buckets=[[49,480,832],[49,832,480],[81,480,480]]"
    if not isinstance(buckets, list) or not buckets:
        raise FlashI2VError(f"data.buckets {buckets!r}: give a list of [frames, height, width], e.g. {example}")
    out = []
    for b in buckets:
        if not (isinstance(b, (list, tuple)) and len(b) == 3 and all(type(v) is int and v > 0 for v in b)):
            raise FlashI2VError(f"data.buckets entry {b!r} is not [frames, height, width] of positive integers: "
                                f"e.g. {example}")
        frames, height, width = b
        if (frames - 1) % 4:
            raise FlashI2VError(f"data.buckets entry {list(b)}: {frames} frames is not of the form 4k+1 (e.g. 49)")
        if height % 16 or width % 16:
            raise FlashI2VError(f"data.buckets entry {list(b)}: height and width must be multiples of 16")
        out.append((frames, height, width))
    if len(set(out)) != len(out):
        raise FlashI2VError(f"data.buckets lists a bucket twice: {buckets}")
    return out
