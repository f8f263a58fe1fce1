"""The FlashI2V training objective, and the per-sample randomness that feeds it.

The objective is an nn.Module so that FSDP2 can treat one training forward (phi(s), s_high, the
shifted interpolation and the DiT) as a single root forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .. import flow, fourier
from ..paradigms import ConditionLatents, dit_input, get_paradigm
from ..model import FlashI2VTransformer


class FlashI2VObjective(nn.Module):
    """loss = || DiT(dit_input(sigma eps + (1 - sigma) x), 1000 sigma, c, s_high) - (eps - x) ||^2.

    For FlashI2V dit_input(z) = z - phi(s) (docs/method.md sections 3 and 5); the paradigm (``flashi2v.paradigms``)
    decides what the condition contributes, the target eps - x is the same for all of them.
    """

    def __init__(self, transformer: FlashI2VTransformer, signed_fourier: bool = False, mean_loss_weight: float = 0.0):
        super().__init__()
        self.transformer = transformer
        self.paradigm = get_paradigm(transformer.config.paradigm)
        self.signed_fourier = signed_fourier
        self.mean_loss_weight = mean_loss_weight  # flow.flow_loss's mean_weight (0: the reference recipe)
        # flow.flow_loss's channel_weight, C x T; None is the reference recipe. The trainer sets it from the codec,
        # which is loaded after the objective is built and wrapped.
        self.channel_weight: torch.Tensor | None = None

    def forward(self, x, latents: ConditionLatents | torch.Tensor, context, sigma, eps, rho) -> torch.Tensor:
        """``latents``: the paradigm's condition latents, or the condition latent s alone (B x C x 1 x h x w)
        for the paradigms that need nothing else."""
        if isinstance(latents, torch.Tensor):
            latents = ConditionLatents(s=latents)
        # phi (when the paradigm shifts) learns only through the model input
        condition = self.paradigm.condition(self.transformer, latents, x.shape[2], rho, self.signed_fourier)
        z = dit_input(flow.interpolation(x, eps, sigma), condition)
        velocity = self.transformer(z, 1000.0 * sigma, context, condition.fourier_features)
        return flow.flow_loss(velocity, x, eps, self.mean_loss_weight, self.channel_weight)


@dataclass
class SampleNoise:
    """Random draws for a batch: caption dropped?, sigma (already shifted), rho, eps."""

    drop_caption: torch.Tensor  # B bool
    sigma: torch.Tensor  # B
    rho: torch.Tensor  # B
    eps: torch.Tensor  # B x C x T x H x W


def draw_noise(seed: int, positions: list[int], latent_shape: tuple[int, ...], *, caption_dropout: float,
               sigma_sampling: str, shift: float, rho_range: tuple[float, float], device=None) -> SampleNoise:
    """Draw each sample's randomness from its own generator, seeded by (seed, global sample position).

    The draws are then a pure function of where the sample sits in the global data stream, so a resumed
    run, an N-process run and a 1-process run with the same global batch see exactly the same noise.
    eps is drawn on ``device`` (a GPU draws a million normals in microseconds, a CPU core in milliseconds).
    """
    device = torch.device(device or "cpu")
    drops, sigmas, rhos, epss = [], [], [], []
    for position in positions:
        sample_seed = int(np.random.SeedSequence([seed, position]).generate_state(1)[0])
        g = torch.Generator().manual_seed(sample_seed)
        drops.append(torch.rand(1, generator=g) < caption_dropout)
        if sigma_sampling == "logit_normal":
            sigma = flow.sample_sigma_logit_normal(1, generator=g)
        else:
            sigma = flow.sample_sigma_uniform(1, generator=g)
        sigmas.append(flow.shift_sigma(sigma, shift))
        rhos.append(fourier.sample_rho(1, *rho_range, generator=g))
        g_eps = torch.Generator(device=device).manual_seed(sample_seed + 1)
        epss.append(torch.randn(latent_shape, generator=g_eps, device=device))
    return SampleNoise(torch.cat(drops), torch.cat(sigmas), torch.cat(rhos), torch.stack(epss))
