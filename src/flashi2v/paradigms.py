"""I2V paradigms: the ways a condition image can enter the DiT, as interchangeable strategies.

The paper's claim is that this choice decides whether the model leaks the condition image. Every
paradigm here shares the backbone, the flow (sigma = 1 noise, sigma = 0 data), the velocity target
eps - x and the sampler's start z = eps; a paradigm only decides

1. which condition latents are encoded from the image (``encode_condition``),
2. what is derived from them once per sample (``condition``: the shift phi(s), the Fourier features
   s_high, extra input channels), and
3. and so what the DiT sees for a flow state z (``dit_input``, one rule for all).

| paradigm          | shift phi(s) | s_high | extra channels                                | noise augmentation |
|-------------------|--------------|--------|-----------------------------------------------|--------------------|
| `flashi2v`        | yes          | yes    | none                                          | none               |
| `latent-shift`    | yes          | no     | none                                          | none               |
| `fourier`         | no           | yes    | none                                          | none               |
| `repeat-concat`   | no           | no     | C: condition latent repeated over T           | train + inference  |
| `zero-pad-concat` | no           | no     | C: condition latent as frame 0, zeros after   | train only         |
| `inpaint`         | no           | no     | tf + C: frame mask, latent of [image, 0, ...] | none               |

(C: latent channels, tf: the VAE's temporal factor, 4 for Wan; 16 + 4 + 16 = 36 input channels as in
Wan2.1-I2V.) The noise augmentation of the concatenated paradigms is pixel-space Gaussian noise on
the condition frame before encoding, sigma_img = exp(N(-3, 0.5)) in training (CogVideoX's law, used
for SVD-style repeat-concat too, so the two differ only in where the latent goes); at inference
repeat-concat uses a fixed 0.02 (SVD's usual strength) and zero-pad-concat none. Unlike SVD, the
strength is not fed to the model as a conditioning scalar: one recipe for every paradigm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import fourier
from .config import PARADIGM_NAMES, TransformerConfig
from .errors import FlashI2VError

Encode = Callable[[torch.Tensor], torch.Tensor]  # pixels B x 3 x F x H x W in [-1, 1] -> latents B x C x T x h x w


@dataclass
class ConditionLatents:
    """What the VAE gives a paradigm. ``s``: the clean condition latent, B x C x 1 x h x w, for the
    paradigms that shift or compute Fourier features from it (else None). ``extra``: the latents that
    are concatenated to the DiT input, already laid out over the T latent frames (else None)."""

    s: torch.Tensor | None = None
    extra: torch.Tensor | None = None


def dit_input(z: torch.Tensor, condition: "Condition") -> torch.Tensor:
    """The DiT's input for flow state z (float32): z - phi(s) where the paradigm shifts, then its extra
    channels where it concatenates (the same rule for every paradigm; the Condition says which apply)."""
    if condition.shift is not None:
        z = z - condition.shift
    if condition.extra is not None:
        z = torch.cat([z, condition.extra.to(z)], dim=1)
    return z


@dataclass
class Condition:
    """What one sample's condition contributes to every DiT call: computed once, reused at every step."""

    shift: torch.Tensor | None = None  # phi(s), B x C x T x h x w float32, subtracted from the flow state
    fourier_features: torch.Tensor | None = None  # s_high, B x C x T x h x w float32
    extra: torch.Tensor | None = None  # channels concatenated after the (shifted) flow state


def noise_augment(image: torch.Tensor, sigma: torch.Tensor | float, generator: torch.Generator | None = None) -> torch.Tensor:
    """image + sigma * N(0, I) in pixel space ([-1, 1]); ``sigma`` per sample (B,) or one number."""
    sigma = torch.as_tensor(sigma, dtype=image.dtype, device=image.device)
    noise = torch.randn(image.shape, generator=generator, device=generator.device if generator else image.device)
    return image + sigma.reshape(-1, *[1] * (image.ndim - 1)) * noise.to(image)


def sample_augmentation_sigma(batch: int, mean: float = -3.0, std: float = 0.5,
                              generator: torch.Generator | None = None) -> torch.Tensor:
    """sigma_img = exp(N(mean, std)) per sample (CogVideoX's noise-augmentation law)."""
    device = generator.device if generator is not None else None  # a CUDA generator draws on its own device
    return torch.exp(mean + std * torch.randn(batch, generator=generator, device=device))


def latent_frames(num_frames: int, temporal_factor: int) -> int:
    """Latent frames of a causal VAE: frame 0 alone, then one per ``temporal_factor`` frames."""
    if num_frames < 1 or (num_frames - 1) % temporal_factor:
        raise FlashI2VError(f"{num_frames} frames do not fit the VAE's temporal factor {temporal_factor}: use "
                            f"{temporal_factor}k+1 frames")
    return (num_frames - 1) // temporal_factor + 1


def frame_mask(num_frames: int, temporal_factor: int) -> torch.Tensor:
    """Wan2.1-I2V's known-frame mask folded into latent channels: tf x T (T = (F - 1) / tf + 1).

    The pixel mask [1, 0, ..., 0] has its first entry repeated tf times (the causal VAE encodes frame 0
    alone into latent frame 0), giving tf * T entries that are read as T latent frames of tf channels:
    latent frame 0 is all ones, every later one all zeros.
    """
    latent_frames(num_frames, temporal_factor)  # checks the frame count
    pixel = torch.zeros(num_frames)
    pixel[0] = 1
    folded = torch.cat([pixel[:1].repeat(temporal_factor), pixel[1:]])
    return folded.view(-1, temporal_factor).T.contiguous()


class Paradigm:
    """Base strategy: the condition enters only through the subclass's hooks. Subclasses set the flags."""

    name: str = ""
    uses_shift: bool = False  # phi(s) is subtracted from both ends of the flow (METHOD 3)
    uses_fourier: bool = False  # s_high enters through fourier_embedding (METHOD 5)

    def extra_channels(self, latent_channels: int, temporal_factor: int) -> int:
        """Input channels added to the DiT's patch embedding (its in_dim is latent_channels + this)."""
        return 0

    def encode_condition(self, encode: Encode, image: torch.Tensor, num_frames: int, temporal_factor: int, *,
                         training: bool, generator: torch.Generator | None = None) -> ConditionLatents:
        """image: B x 3 x 1 x H x W pixels in [-1, 1] -> the latents this paradigm needs."""
        return ConditionLatents(encode(image))

    def condition(self, transformer, latents: ConditionLatents, num_frames: int, rho: torch.Tensor | float,
                  signed_fourier: bool = False) -> Condition:
        """Everything derived from the condition once per sample; ``num_frames`` counts latent frames."""
        s = latents.s
        shift = transformer.learnable_proj(s, num_frames) if self.uses_shift else None
        features = fourier.fourier_features(s, rho, num_frames, signed=signed_fourier) if self.uses_fourier else None
        return Condition(shift, features, latents.extra)

class FlashI2V(Paradigm):
    """Latent shifting + Fourier guidance: DiT(z - phi(s), t, c, s_high) (METHOD 3 and 5)."""

    name, uses_shift, uses_fourier = "flashi2v", True, True


class LatentShift(Paradigm):
    """Latent shifting alone: DiT(z - phi(s), t, c); no Fourier branch."""

    name, uses_shift = "latent-shift", True


class FourierOnly(Paradigm):
    """Fourier guidance alone: DiT(z, t, c, s_high); the flow is not shifted."""

    name, uses_fourier = "fourier", True


class _ConcatParadigm(Paradigm):
    """Channel concatenation of a noise-augmented condition latent (the augmentation law in the module doc)."""

    inference_sigma = 0.0

    def extra_channels(self, latent_channels: int, temporal_factor: int) -> int:
        return latent_channels

    def augmented_latent(self, encode: Encode, image: torch.Tensor, training: bool,
                         generator: torch.Generator | None) -> torch.Tensor:
        sigma = sample_augmentation_sigma(image.shape[0], generator=generator) if training else self.inference_sigma
        return encode(noise_augment(image, sigma, generator) if training or sigma > 0 else image)

    def layout(self, latent: torch.Tensor, num_frames: int) -> torch.Tensor:
        raise NotImplementedError

    def encode_condition(self, encode, image, num_frames, temporal_factor, *, training, generator=None):
        augmented = self.augmented_latent(encode, image, training, generator)
        return ConditionLatents(extra=self.layout(augmented, latent_frames(num_frames, temporal_factor)))


class RepeatConcat(_ConcatParadigm):
    """SVD: the noise-augmented condition latent repeated over all T latent frames, concatenated (C + C)."""

    name, inference_sigma = "repeat-concat", 0.02

    def layout(self, latent, num_frames):
        return latent.expand(-1, -1, num_frames, -1, -1)


class ZeroPadConcat(_ConcatParadigm):
    """CogVideoX: the noise-augmented condition latent as latent frame 0, zeros after it, concatenated (C + C)."""

    name = "zero-pad-concat"

    def layout(self, latent, num_frames):
        return torch.cat([latent, latent.new_zeros(latent.shape[0], latent.shape[1], num_frames - 1,
                                                   *latent.shape[3:])], dim=2)


class Inpaint(Paradigm):
    """Wan2.1-I2V / SEINE: [frame mask (tf channels), latent of the video [image, 0, ..., 0]] concatenated
    after the noisy latent (C + tf + C); no noise augmentation."""

    name = "inpaint"

    def extra_channels(self, latent_channels: int, temporal_factor: int) -> int:
        return temporal_factor + latent_channels

    def encode_condition(self, encode, image, num_frames, temporal_factor, *, training, generator=None):
        b, _, _, h, w = image.shape
        video = torch.cat([image, image.new_zeros(b, 3, num_frames - 1, h, w)], dim=2)
        known = encode(video)
        mask = frame_mask(num_frames, temporal_factor).to(known)
        mask = mask[None, :, :, None, None].expand(b, -1, -1, *known.shape[3:])
        return ConditionLatents(extra=torch.cat([mask, known], dim=1))


PARADIGMS: dict[str, type[Paradigm]] = {p.name: p for p in (FlashI2V, LatentShift, FourierOnly, RepeatConcat,
                                                              ZeroPadConcat, Inpaint)}
assert tuple(PARADIGMS) == PARADIGM_NAMES  # config.py names them for checks that must not import torch
DEFAULT_PARADIGM = "flashi2v"


def get_paradigm(name: str) -> Paradigm:
    """The strategy for ``name`` (one of PARADIGMS); an unknown name is a one-line error."""
    if name not in PARADIGMS:
        raise FlashI2VError(f"unknown paradigm {name!r}: choose one of {', '.join(PARADIGMS)}")
    return PARADIGMS[name]()


def paradigm_config(config: TransformerConfig, name: str, temporal_factor: int) -> TransformerConfig:
    """``config`` for paradigm ``name``: the DiT's input width is the latent's channels plus the paradigm's."""
    extra = get_paradigm(name).extra_channels(config.out_dim, temporal_factor)
    return dataclasses.replace(config, paradigm=name, in_dim=config.out_dim + extra)


def check_input_width(config: TransformerConfig, temporal_factor: int) -> None:
    """A one-line error when a model's input width does not fit its paradigm with this VAE."""
    want = config.out_dim + get_paradigm(config.paradigm).extra_channels(config.out_dim, temporal_factor)
    if config.in_dim != want:
        raise FlashI2VError(f"the transformer takes {config.in_dim} input channels, but paradigm {config.paradigm!r} "
                            f"with this VAE (temporal factor {temporal_factor}) gives {want}: the model and the VAE "
                            "do not belong together")
