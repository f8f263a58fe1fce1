"""Flow matching with latent shifting (docs/method.md sections 3 and 7), as short functions.

Conventions, stated once for the whole project:
- ``sigma`` in [0, 1] is flow time; sigma = 1 is pure noise, sigma = 0 is data.
- The DiT receives the timestep t = 1000 * sigma.
- Flow state (x, eps, z, phi(s)) is float32; only the DiT input is cast to the compute dtype.
"""

from __future__ import annotations

import math

import torch

# Dynamic shifting maps image tokens per latent frame L to mu = a * L + b through these two points.
DYNAMIC_SHIFT_POINTS = ((256, 0.5), (4096, 1.15))


def sample_sigma_uniform(batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """sigma ~ U[0, 1], one per sample."""
    return torch.rand(batch, generator=generator, device=device)


def sample_sigma_logit_normal(batch: int, mean: float = 0.0, std: float = 1.0,
                              generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """sigma = sigmoid(n), n ~ N(mean, std^2): concentrates training on mid-noise levels (SD3 / reference recipe)."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator, device=device))


def shift_sigma(sigma: torch.Tensor, k: float | torch.Tensor) -> torch.Tensor:
    """sigma' = k sigma / (1 + (k - 1) sigma): k > 1 spends more of the schedule at high noise."""
    return k * sigma / (1 + (k - 1) * sigma)


def image_tokens_per_frame(latent_height: int, latent_width: int, patch_size=(1, 2, 2)) -> int:
    """L: DiT tokens per latent frame (H*W/4 for the 2x2 spatial patch)."""
    return (latent_height // patch_size[1]) * (latent_width // patch_size[2])


def dynamic_shift(tokens_per_frame: int, points=DYNAMIC_SHIFT_POINTS) -> float:
    """k = exp(a L + b), the line through (256, 0.5) and (4096, 1.15): about 2.056 at 480x832."""
    (l0, m0), (l1, m1) = points
    a = (m1 - m0) / (l1 - l0)
    return math.exp(a * tokens_per_frame + (m0 - a * l0))


def interpolation(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """z_sigma = sigma eps + (1 - sigma) x, in float32; sigma is per sample (B,).

    FlashI2V shifts both ends of this path by phi(s) (z1 = eps - phi(s), z0 = x - phi(s)): the DiT sees
    z_sigma - phi(s), subtracted in float32 by ``flashi2v.paradigms.dit_input``.
    """
    s = sigma.float().view(-1, *([1] * (x.ndim - 1)))
    return s * eps.float() + (1 - s) * x.float()


def velocity_target(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """d z / d sigma = z1 - z0 = eps - x: phi(s) cancels, so the target equals plain T2V flow matching."""
    return eps.float() - x.float()


def flow_loss(velocity: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, mean_weight: float = 0.0,
              channel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between the predicted velocity and eps - x, over every element and frame, float32.

    mean_weight > 0 adds mean_weight * mean over (sample, channel, frame) of mean_hw(v - (eps - x))^2: the
    error of each latent frame's channel means, which the element-wise MSE weights like any single one of
    its H x W elements. For a linear latent codec those means fix each frame's mean colour (the built-in
    model's colour drift, docs/builtin.md). 0, the reference recipe, is the plain MSE.

    channel_weight (C x T, mean 1; None, the reference recipe: all 1) weights each latent channel and frame's
    squared error: mean(w_ct (v - (eps - x))^2). ``channel_loss_weights`` makes it from the codec.
    """
    error = velocity.float() - velocity_target(x, eps)
    squared = error.square()
    if channel_weight is not None:
        squared = squared * channel_weight.to(squared.device, torch.float32)[:, :, None, None]
    loss = squared.mean()
    if mean_weight:
        loss = loss + mean_weight * error.mean(dim=(-2, -1)).square().mean()
    return loss


def channel_loss_weights(pixel_scales: torch.Tensor, power: float) -> torch.Tensor:
    """w_ct = a_ct^power / mean(a^power), where a_ct is how many pixel units one unit of latent channel c in
    latent frame t is worth (C x T).

    Latents are normalised to unit variance per channel, so the plain MSE (power 0) charges an error in a
    channel that moves whole blocks of pixels (a block's brightness or colour) like the same error in one
    that moves a fine detail. For an orthonormal linear codec (the built-in ``BlockPCACodec``, a = the
    channel's standard deviation) power 2 makes the loss the squared error in pixels (up to a constant).
    """
    if power == 0:
        return torch.ones_like(pixel_scales, dtype=torch.float32)
    w = pixel_scales.float().pow(power)
    return w / w.mean()


def sigma_schedule(steps: int, shift: float = 7.0, device=None) -> torch.Tensor:
    """Inference grid sigma_0 = 1 > ... > sigma_N = 0: a linear grid with the static shift applied; N+1 values."""
    return shift_sigma(torch.linspace(1.0, 0.0, steps + 1, device=device, dtype=torch.float32), shift)
