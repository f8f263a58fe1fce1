"""Fourier guidance (docs/method.md section 5): the high-frequency magnitude of the condition latent.

rho, the "low-frequency energy ratio", decides per sample how much of the spectrum (by cumulative
magnitude, from the centre outwards) counts as low frequency and is removed. Lower rho keeps more of
the spectrum, so the guidance carries more of the image's detail: it is the user's detail knob.
Names: ``cutoff`` in the pipeline and the CLI is rho; the radius derived from it is ``cutoff_radius`` (r_c).
"""

from __future__ import annotations

import torch

RHO_TRAIN_RANGE = (0.05, 0.95)
RHO_DEFAULT = 0.1


def sample_rho(batch: int, low: float = RHO_TRAIN_RANGE[0], high: float = RHO_TRAIN_RANGE[1],
               generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Training draws rho ~ U[low, high] per sample per step."""
    return low + (high - low) * torch.rand(batch, generator=generator, device=device)


def centred_radius(height: int, width: int, device=None) -> torch.Tensor:
    """Distance of every frequency index (u, v) of a fftshift-ed H x W spectrum from its centre (H//2, W//2)."""
    u = torch.arange(height, device=device, dtype=torch.float32) - height // 2
    v = torch.arange(width, device=device, dtype=torch.float32) - width // 2
    return torch.sqrt(u[:, None] ** 2 + v[None, :] ** 2)


def cutoff_radius(spectrum: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """The cutoff radius r_c per sample from the centred spectrum F (B x C x H x W, complex) and rho (B,).

    M = channel-mean |F|; positions sorted by radius; k = number of positions whose cumulative M is
    below rho * total (clamped to the valid range); r_c = the k-th sorted radius.
    """
    b, _, h, w = spectrum.shape
    radius = centred_radius(h, w, spectrum.device).flatten()
    order = torch.argsort(radius, stable=True)
    profile = spectrum.abs().mean(dim=1).reshape(b, -1)[:, order]  # B x N, sorted by radius
    cum = profile.cumsum(dim=1)
    k = (cum < rho.view(b, 1) * cum[:, -1:]).sum(dim=1).clamp(0, radius.numel() - 1)
    return radius[order][k]


def high_frequency_magnitude(s: torch.Tensor, rho: torch.Tensor | float, signed: bool = False) -> torch.Tensor:
    """s_high = |IFFT2(ifftshift(F * [r >= r_c]))| for a B x C x H x W latent, float32, no gradient.

    ``signed=True`` returns Re(h) instead of the modulus. A spectrum with all its magnitude at the DC
    term (a spatially constant latent) has no detail to carry: its output is zero for any rho > 0
    (the radius rule alone would keep the DC term there, since it is the only non-zero bin).
    """
    with torch.no_grad():
        s = s.float()
        b, _, h, w = s.shape
        rho = torch.as_tensor(rho, dtype=torch.float32, device=s.device).expand(b)
        spectrum = torch.fft.fftshift(torch.fft.fft2(s), dim=(-2, -1))
        r_c = cutoff_radius(spectrum, rho)
        mask = centred_radius(h, w, s.device)[None] >= r_c.view(b, 1, 1)  # B x H x W
        magnitude = spectrum.abs().mean(dim=1).reshape(b, -1)
        dc = magnitude[:, (h // 2) * w + w // 2]
        flat = (magnitude.sum(dim=1) - dc) <= 1e-6 * magnitude.sum(dim=1)
        mask = mask & ~(flat & (rho > 0)).view(b, 1, 1)
        h_c = torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask[:, None], dim=(-2, -1)))
        return (h_c.real if signed else h_c.abs()).detach()


def fourier_features(s: torch.Tensor, rho: torch.Tensor | float, num_frames: int, signed: bool = False) -> torch.Tensor:
    """The DiT's Fourier input: s (B x C x 1 x H x W) -> s_high repeated over T frames, B x C x T x H x W, float32."""
    s_high = high_frequency_magnitude(s[:, :, 0], rho, signed=signed)
    return s_high[:, :, None].expand(-1, -1, num_frames, -1, -1)
