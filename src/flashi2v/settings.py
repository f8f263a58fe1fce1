"""Generation settings: one dataclass, resolved against the model's own defaults and checked against the
model's real latent factors (VAE compression x patch size) before anything is allocated. One set of rules:
``GenerationSettings.check``; the CLI runs it before loading a model on the flags given (with the built-in
model's factors, read from its config files), the pipeline on the resolved settings.

No torch here: the CLI imports this module (choice lists, defaults for its help) while it only parses flags.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Mapping

from .errors import FlashI2VError

# Choice lists, one home each; sampling.py and the CLI use these names (tests/test_settings.py checks that
# sampling's and model/attention.py's tables have exactly these keys).
SOLVER_NAMES = ("euler", "heun", "dpmpp_2m")  # sampling.SOLVERS
GUIDANCE_MODES = ("cfg", "mean_free")  # sampling.GUIDANCE
ATTENTION_BACKEND_NAMES = ("auto", "cudnn", "flash", "fa3", "fa4", "efficient", "math")  # model.attention.ATTENTION_BACKENDS

MAX_STEPS = 1000
MAX_GUIDANCE = 50.0
MAX_SHIFT = 100.0  # the reference uses 7; at 100 half of the steps are spent above sigma 0.99
TRAINED_SIZE_MARGIN = 2.0  # warn beyond this many times the frames or area a model was made for


@dataclass(frozen=True)
class GenerationSettings:
    """What one generation does besides its inputs. None means unset: ``resolved`` fills it from the
    model's defaults (its pipeline.json), then from FlashI2V-1.3B's (``REFERENCE``).

    cutoff is rho, the low-frequency energy ratio of the Fourier guidance (docs/method.md section 5); the radius
    derived from it per sample is ``fourier.cutoff_radius``.
    """

    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_mode: str | None = None
    solver: str | None = None
    shift: float | None = None
    cutoff: float | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def given(self) -> dict:
        """The settings that are set, as keywords (for ``FlashI2VPipeline.__call__``)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def resolved(self, defaults: Mapping | None = None) -> "GenerationSettings":
        """Every setting filled: as given, else the model's default, else FlashI2V-1.3B's."""
        defaults = defaults or {}
        return GenerationSettings(**{name: next(v for v in (getattr(self, name), defaults.get(name),
                                                             getattr(REFERENCE, name)) if v is not None)
                                     for name in self.names()})

    def check(self, factors: "LatentFactors | None" = None) -> None:
        """FlashI2VError, one line naming the fix, on a setting no model can honour; with ``factors`` (the
        model's), also on sizes its VAE and patch size cannot divide. Unset settings are not checked."""
        for name in ("num_frames", "height", "width", "steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise FlashI2VError(f"{name} {value!r} must be a whole number")
        for name in ("guidance", "shift", "cutoff"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                      or not math.isfinite(value)):
                raise FlashI2VError(f"{name} {value!r} must be a finite number (default {getattr(REFERENCE, name)} "
                                    "for FlashI2V-1.3B)")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise FlashI2VError(f"{name} {value} must be positive: try e.g. 480x832")
        if self.num_frames is not None and self.num_frames < 1:
            raise FlashI2VError(f"num_frames {self.num_frames} must be at least 1 (of the form 4k+1, e.g. 49)")
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise FlashI2VError(f"steps {self.steps} is out of range: use 1..{MAX_STEPS}")
        if self.guidance is not None and not 0.0 <= self.guidance <= MAX_GUIDANCE:
            raise FlashI2VError(f"guidance {self.guidance} is out of range: use 0..{MAX_GUIDANCE:g} (1 disables CFG)")
        if self.shift is not None and not 0.0 < self.shift <= MAX_SHIFT:
            raise FlashI2VError(f"shift {self.shift} is out of range: use 0 < shift <= {MAX_SHIFT:g} (7.0 for "
                                "FlashI2V-1.3B)")
        if self.cutoff is not None and not 0.0 <= self.cutoff < 1.0:
            raise FlashI2VError(f"cutoff {self.cutoff} is out of range: use 0 <= cutoff < 1 (the low-frequency "
                                "energy ratio rho; lower keeps more image detail)")
        if self.guidance_mode is not None and self.guidance_mode not in GUIDANCE_MODES:
            raise FlashI2VError(f"guidance_mode {self.guidance_mode!r} is not one of {', '.join(GUIDANCE_MODES)}")
        if self.solver is not None and self.solver not in SOLVER_NAMES:
            raise FlashI2VError(f"solver {self.solver!r} is not one of {', '.join(SOLVER_NAMES)}")
        if factors is not None:
            factors.check(self)


@dataclass(frozen=True)
class LatentFactors:
    """How a model divides a video: the VAE's temporal and spatial compression times the transformer's
    patch size. Frames must be ``temporal * k + 1`` (the first frame is encoded alone); height and width
    multiples of ``spatial * patch``."""

    temporal: int
    spatial: int
    patch: tuple[int, int, int] = (1, 2, 2)

    @property
    def size_multiple(self) -> tuple[int, int]:
        return self.spatial * self.patch[1], self.spatial * self.patch[2]

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        return (num_frames - 1) // self.temporal + 1, height // self.spatial, width // self.spatial

    def tokens(self, num_frames: int, height: int, width: int) -> int:
        f, h, w = self.latent_shape(num_frames, height, width)
        return (f // self.patch[0]) * (h // self.patch[1]) * (w // self.patch[2])

    def check(self, s: GenerationSettings) -> None:
        for name, value, patch in (("height", s.height, self.patch[1]), ("width", s.width, self.patch[2])):
            multiple = self.spatial * patch
            if value is not None and value % multiple:
                below = max(multiple, value // multiple * multiple)
                raise FlashI2VError(f"{name} {value} must be a multiple of {multiple} for this model (VAE factor "
                                    f"{self.spatial} x patch {patch}): try {below} or {below + multiple}")
        if s.num_frames is not None:
            if (s.num_frames - 1) % self.temporal:
                near = max(1, round((s.num_frames - 1) / self.temporal) * self.temporal + 1)
                raise FlashI2VError(f"num_frames {s.num_frames} is not of the form {self.temporal}k+1 for this "
                                    f"model: use e.g. {near}")
            latent_frames = self.latent_shape(s.num_frames, 1, 1)[0]
            if latent_frames % self.patch[0]:
                raise FlashI2VError(f"num_frames {s.num_frames} gives {latent_frames} latent frames, not a multiple "
                                    f"of the temporal patch size {self.patch[0]}: use more or fewer frames")


# FlashI2V-1.3B's inference settings (docs/method.md section 7): the fallback for a model without its own defaults.
REFERENCE = GenerationSettings(num_frames=49, height=480, width=832, steps=50, guidance=5.0, guidance_mode="cfg",
                               solver="euler", shift=7.0, cutoff=0.1)


# -- chained segments (flashi2v.segments); here so the CLI checks them before importing torch ---------------

MAX_SEGMENTS = 64
# The drift counter-measures' defaults follow the measurement (docs/usage.md, "Longer videos"; scripts/segments_drift.py).
DEFAULT_COLOUR_MATCH = 1.0  # motion-aligned: stops the colour drift of a still camera from adding up
DEFAULT_CUTOFF_DECAY = 1.0
DEFAULT_SHARPEN = 0.0
DEFAULT_COLOUR_REFERENCE = "aligned"
COLOUR_REFERENCES = ("aligned", "image")  # flashi2v.segments: what colour matching matches


def check_segments(segments, prompts: list[str] | None = None) -> None:
    """FlashI2VError unless ``segments`` is a whole number in 1..MAX_SEGMENTS and, with per-segment prompts,
    there is one prompt per segment."""
    if isinstance(segments, bool) or not isinstance(segments, numbers.Integral) or not 1 <= segments <= MAX_SEGMENTS:
        raise FlashI2VError(f"segments {segments!r} is out of range: use a whole number from 1 to {MAX_SEGMENTS}")
    if prompts is not None and len(prompts) != segments:
        raise FlashI2VError(f"got {len(prompts)} segment prompts for {segments} segments: give one prompt per segment "
                            "(or one prompt for all)")


def check_drift_options(colour_match: float, cutoff_decay: float, sharpen: float = 0.0,
                        colour_reference: str = DEFAULT_COLOUR_REFERENCE) -> None:
    """FlashI2VError unless the drift counter-measures of ``flashi2v.segments`` are in range."""
    if colour_reference not in COLOUR_REFERENCES:
        raise FlashI2VError(f"colour_reference {colour_reference!r} is not one of {', '.join(COLOUR_REFERENCES)}")
    for name, value in (("colour_match", colour_match), ("sharpen", sharpen)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
            raise FlashI2VError(f"{name} {value!r} is out of range: use 0 (off) to 1 (full match)")
    if isinstance(cutoff_decay, bool) or not isinstance(cutoff_decay, numbers.Real) or not 0.0 < cutoff_decay <= 1.0:
        raise FlashI2VError(f"cutoff_decay {cutoff_decay!r} is out of range: use 0 < decay <= 1 (1: the same cutoff "
                            "for every segment)")

SEED_RANGE = (0, 2**63)  # what torch.Generator.manual_seed takes without wrapping


def check_seed(seed) -> None:
    """FlashI2VError unless ``seed`` is None or a whole number in [0, 2**63)."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        raise FlashI2VError(f"seed {seed!r} is out of range: use a whole number from 0 to 2**63 - 1")


def estimate_bytes(s: GenerationSettings, factors: LatentFactors, batch: int, channels: int, ffn_dim: int,
                   dtype_bytes: int) -> int:
    """A lower bound on the memory one generation of fully resolved settings ``s`` needs: the float32
    latents (z, noise, phi(s), s_high), one transformer block's FFN hidden state (its largest activation,
    for both CFG branches) and the decoded video (float32 pixels and uint8 frames). Real peaks are higher;
    this only catches sizes that cannot fit at all."""
    f, h, w = factors.latent_shape(s.num_frames, s.height, s.width)
    latents = 4 * batch * channels * f * h * w * 4
    branches = 2 if s.guidance != 1.0 else 1
    ffn = branches * batch * factors.tokens(s.num_frames, s.height, s.width) * ffn_dim * dtype_bytes
    video = batch * s.num_frames * s.height * s.width * 3 * (4 + 1)
    return latents + ffn + video


def check_fits(needed: int, available: int | None, s: GenerationSettings, where: str) -> None:
    """FlashI2VError when ``needed`` bytes (``estimate_bytes``) exceed the ``available`` memory of ``where``."""
    if available is not None and needed > available:
        raise FlashI2VError(f"{s.num_frames} frames of {s.height}x{s.width} need at least {needed / 2**30:,.1f} GiB "
                            f"(latents, activations, decoded video), more than the {available / 2**30:,.1f} GiB of "
                            f"{where}: use fewer frames or a smaller size")


def far_from_trained(s: GenerationSettings, defaults: Mapping | None) -> str | None:
    """A one-line warning when ``s`` asks for more than TRAINED_SIZE_MARGIN times the frames or the area of
    the size in the model's ``defaults`` (what it was made for); None otherwise or when they name no size."""
    defaults = defaults or {}
    if not all(isinstance(defaults.get(k), int) and defaults[k] > 0 for k in ("num_frames", "height", "width")):
        return None
    frames = s.num_frames / defaults["num_frames"]
    area = s.height * s.width / (defaults["height"] * defaults["width"])
    if frames <= TRAINED_SIZE_MARGIN and area <= TRAINED_SIZE_MARGIN:
        return None
    excess = " and ".join(f"{ratio:,.1f}x the {what}" for ratio, what in ((frames, "frames"), (area, "area"))
                          if ratio > TRAINED_SIZE_MARGIN)
    return (f"{s.num_frames} frames of {s.height}x{s.width} is {excess} this model was made for "
            f"({defaults['num_frames']} frames of {defaults['height']}x{defaults['width']}): expect weaker motion "
            "and artifacts")
