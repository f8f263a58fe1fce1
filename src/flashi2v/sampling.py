"""ODE sampling for the latent-shifted flow. A sampler walks a sigma schedule in adjacent pairs.

Solvers: ``euler`` (the reference's explicit Euler), ``heun`` (second order, two evaluations per step) and
``dpmpp_2m`` (second-order multistep, one evaluation per step, like Euler's cost).

All samplers share one signature: ``sampler(velocity, z, sigmas, callback=None) -> z`` where
``velocity(z, sigma) -> v`` is a closure over the model and its conditioning (see ``conditioned_velocity``).
No hidden state: the schedule is an argument.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .errors import FlashI2VError
from .paradigms import Condition, dit_input
from .settings import GUIDANCE_MODES

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler(velocity: Velocity, z: torch.Tensor, sigmas: torch.Tensor, callback=None) -> torch.Tensor:
    """Explicit Euler: z <- z + v(z, sigma_i) (sigma_{i+1} - sigma_i), in float32. Returns z at sigmas[-1]."""
    z = z.float()
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        z = z + velocity(z, sigma) * (sigma_next - sigma)
        if callback is not None:
            callback(i, z)
    return z


def heun(velocity: Velocity, z: torch.Tensor, sigmas: torch.Tensor, callback=None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, "Elucidating the Design Space", Algorithm 1):

        z' = z + h v(z, sigma_i),   z <- z + h (v(z, sigma_i) + v(z', sigma_{i+1})) / 2,   h = sigma_{i+1} - sigma_i

    and a plain Euler step into sigma = 0, where the correction would evaluate the model on a clean sample.
    Two model evaluations per step (2N - 1 for N steps ending at 0), in float32."""
    z = z.float()
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        h = sigma_next - sigma
        v = velocity(z, sigma)
        z_euler = z + v * h
        z = z_euler if float(sigma_next) == 0.0 else z + (v + velocity(z_euler, sigma_next)) * (h / 2)
        if callback is not None:
            callback(i, z)
    return z


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) of the rectified-flow path z = (1 - sigma) x + sigma eps (alpha = 1 - sigma)."""
    if sigma >= 1.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log((1.0 - sigma) / sigma)


def dpmpp_2m(velocity: Velocity, z: torch.Tensor, sigmas: torch.Tensor, callback=None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022) on the rectified-flow path, one model evaluation per step.

    With the clean estimate x_i = z - sigma_i v(z, sigma_i), lambda = log((1 - sigma) / sigma) and
    h_i = lambda_{i+1} - lambda_i, one step is

        z <- (sigma_{i+1} / sigma_i) z + (alpha_{i+1} - alpha_i sigma_{i+1} / sigma_i) D,   alpha = 1 - sigma
        D = (1 + 1 / (2 r)) x_i - x_{i-1} / (2 r),   r = h_{i-1} / h_i

    With D = x_i it is exactly the Euler step (first order). It is first order where the second-order term is
    undefined: the first step (from sigma = 1, lambda = -inf, so no previous h) and the last step into
    sigma = 0 (lambda = +inf). In float32."""
    z = z.float()
    x_prev, h_prev = None, None
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        s, t = float(sigma), float(sigma_next)
        x = z - s * velocity(z, sigma)
        h = _log_snr(t) - _log_snr(s)
        d = x
        if x_prev is not None and math.isfinite(h) and math.isfinite(h_prev):
            r = h_prev / h
            d = (1.0 + 0.5 / r) * x - (0.5 / r) * x_prev
        z = (t / s) * z + ((1.0 - t) - (1.0 - s) * t / s) * d
        x_prev, h_prev = x, h
        if callback is not None:
            callback(i, z)
    return z


SOLVERS = {"euler": euler, "heun": heun, "dpmpp_2m": dpmpp_2m}  # solver name (settings.SOLVER_NAMES) -> sampler


def model_evaluations(solver: str, steps: int) -> int:
    """Velocity evaluations a solver makes in ``steps`` steps ending at sigma = 0 (each one CFG pass)."""
    return 2 * steps - 1 if solver == "heun" else steps


def cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: v = v_u + w (v_c - v_u) = v_c + (w - 1) d, with d = v_c - v_u."""
    return v_uncond + guidance * (v_cond - v_uncond)


def mean_free_cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """CFG without its brightness / colour push: v = v_c + (w - 1) (d - mean_hw(d)), with d = v_c - v_u.

    mean_hw is the spatial mean of d per sample, channel and latent frame (over H and W). Only that part
    of the guidance update is dropped: the mean of every latent channel in every frame follows the
    conditional branch alone, the spatial structure (the motion) is guided as in plain CFG. For a linear
    codec a frame's mean colour is a function of these channel means alone (exactly for the built-in
    block-PCA codec). The equation is linear in v, so it is the same on the implied clean sample
    x0 = z - sigma v (whose guidance update is -sigma d). It is the mean-removal variant of adaptive
    projected guidance (Sadat et al. 2024, "Eliminating Oversaturation and Artifacts of High Guidance
    Scales"). Equals ``cfg`` when w = 1 or when d has zero spatial mean.
    """
    d = v_cond - v_uncond
    return v_cond + (guidance - 1.0) * (d - d.mean(dim=(-2, -1), keepdim=True))


GUIDANCE = {"cfg": cfg, "mean_free": mean_free_cfg}  # guidance_mode (settings.GUIDANCE_MODES) -> how the branches combine


def conditioned_velocity(model, condition: Condition, context: torch.Tensor, negative_context: torch.Tensor | None = None,
                         guidance: float = 1.0, dtype: torch.dtype | None = None, batch_cfg: bool = True,
                         guidance_mode: str = "cfg") -> Velocity:
    """v(z, sigma) = DiT(dit_input(z), 1000 sigma, c, s_high), with text-only classifier-free guidance.

    ``condition`` (``flashi2v.paradigms.Condition``) is computed once by the caller and reused at every
    step: for FlashI2V the DiT input is z - phi(s) and s_high enters through the Fourier embedding; a
    concatenating paradigm appends its channels instead (``paradigms.dit_input``). Both CFG branches get
    the same image condition; the unconditional one uses the negative prompt. ``batch_cfg`` runs the two
    branches as one batch of 2B (one pass of the weights instead of two). ``guidance_mode`` picks how the
    branches combine: "cfg" (``cfg``) or "mean_free" (``mean_free_cfg``).
    """
    if guidance_mode not in GUIDANCE:
        raise FlashI2VError(f"guidance_mode {guidance_mode!r} is not one of {', '.join(GUIDANCE_MODES)}")
    combine = GUIDANCE[guidance_mode]
    dtype = dtype or next(model.parameters()).dtype
    use_cfg = negative_context is not None and guidance != 1.0
    s_high = None if condition.fourier_features is None else condition.fourier_features.to(dtype)
    if use_cfg and batch_cfg:
        both_context = torch.cat([context, negative_context]).to(dtype)
        both_s_high = None if s_high is None else torch.cat([s_high, s_high])

    def velocity(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = dit_input(z, condition).to(dtype)
        t = (1000.0 * sigma).expand(z.shape[0]).to(z.device)
        if not use_cfg:
            return model(x, t, context.to(dtype), s_high)
        if batch_cfg:
            v_cond, v_uncond = model(torch.cat([x, x]), torch.cat([t, t]), both_context, both_s_high).chunk(2)
        else:
            v_cond = model(x, t, context.to(dtype), s_high)
            v_uncond = model(x, t, negative_context.to(dtype), s_high)
        return combine(v_cond, v_uncond, guidance)

    return velocity
