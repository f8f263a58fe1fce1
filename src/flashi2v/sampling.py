"""ODE sampling for the latent-shifted flow. A sampler walks a sigma schedule in adjacent pairs.

All samplers share one signature: ``sampler(velocity, z, sigmas, callback=None) -> z`` where
``velocity(z, sigma) -> v`` is a closure over the model and its conditioning (see ``flashi2v_velocity``).
No hidden state: the schedule is an argument.
"""

from __future__ import annotations

from typing import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler(velocity: Velocity, z: torch.Tensor, sigmas: torch.Tensor, callback=None) -> torch.Tensor:
    """Explicit Euler: z <- z + v(z, sigma_i) (sigma_{i+1} - sigma_i), in float32. Returns z at sigmas[-1]."""
    z = z.float()
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        z = z + velocity(z, sigma) * (sigma_next - sigma)
        if callback is not None:
            callback(i, z)
    return z


def flashi2v_velocity(model, phi_s: torch.Tensor, s_high: torch.Tensor, context: torch.Tensor,
                      negative_context: torch.Tensor | None = None, guidance: float = 1.0,
                      dtype: torch.dtype | None = None, batch_cfg: bool = True) -> Velocity:
    """v(z, sigma) = DiT(z - phi(s), 1000 sigma, c, s_high), with text-only classifier-free guidance.

    phi(s) and s_high are computed once by the caller and reused at every step. Both CFG branches get
    the same image features; the unconditional one uses the negative prompt. ``batch_cfg`` runs the two
    branches as one batch of 2B (one pass of the weights instead of two).
    """
    dtype = dtype or next(model.parameters()).dtype
    use_cfg = negative_context is not None and guidance != 1.0
    s_high = s_high.to(dtype)
    if use_cfg and batch_cfg:
        both_context = torch.cat([context, negative_context]).to(dtype)
        both_s_high = torch.cat([s_high, s_high])

    def velocity(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = (z - phi_s).to(dtype)
        t = (1000.0 * sigma).expand(z.shape[0]).to(z.device)
        if not use_cfg:
            return model(x, t, context.to(dtype), s_high)
        if batch_cfg:
            v_cond, v_uncond = model(torch.cat([x, x]), torch.cat([t, t]), both_context, both_s_high).chunk(2)
        else:
            v_cond = model(x, t, context.to(dtype), s_high)
            v_uncond = model(x, t, negative_context.to(dtype), s_high)
        return v_uncond + guidance * (v_cond - v_uncond)

    return velocity
