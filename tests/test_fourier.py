"""Fourier guidance: cutoff radius from rho, the high-frequency magnitude, per-sample behaviour."""

import torch

from flashi2v import fourier


def test_cutoff_radius_is_monotonic_in_rho():
    s = torch.randn(1, 16, 30, 52)
    spectrum = torch.fft.fftshift(torch.fft.fft2(s), dim=(-2, -1))
    radii = [fourier.cutoff_radius(spectrum, torch.tensor([r])).item() for r in torch.linspace(0, 1, 41)]
    assert all(b >= a for a, b in zip(radii, radii[1:]))
    assert radii[0] == 0 and radii[-1] > radii[20] > radii[0]


def test_rho_near_zero_returns_modulus():
    s = torch.randn(2, 16, 12, 20)
    for rho in (0.0, 1e-4):
        torch.testing.assert_close(fourier.high_frequency_magnitude(s, rho), s.abs(), rtol=0, atol=1e-5)


def test_constant_input_has_no_high_frequency():
    s = torch.full((2, 16, 12, 20), 1.7)
    for rho in (0.05, 0.1, 0.5, 0.95):
        assert fourier.high_frequency_magnitude(s, rho).abs().max() < 1e-5


def test_high_pass_removes_low_frequencies():
    """A smooth wave (62% of the magnitude) plus a checkerboard: at rho 0.9 only the checkerboard is left."""
    h, w = 16, 16
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    smooth = torch.cos(2 * torch.pi * xx / w) * 5
    checker = ((xx + yy) % 2 * 2 - 1).float()
    s = (smooth + checker)[None, None].expand(1, 4, h, w)
    out = fourier.high_frequency_magnitude(s, 0.9)
    torch.testing.assert_close(out, checker.abs()[None, None].expand_as(out), rtol=0, atol=1e-4)


def test_output_is_real_detached_and_per_sample():
    s = torch.randn(3, 16, 12, 20, requires_grad=True)
    rho = torch.tensor([0.05, 0.5, 0.95])
    out = fourier.high_frequency_magnitude(s, rho)
    assert out.dtype == torch.float32 and not out.is_complex() and not out.requires_grad and out.shape == s.shape
    assert (out >= 0).all()
    # each sample uses its own cutoff: sample 1 alone with rho 0.5 gives the same map
    torch.testing.assert_close(out[1:2], fourier.high_frequency_magnitude(s[1:2], 0.5))
    energy = [o.pow(2).sum().item() for o in out]
    assert energy[0] > energy[1] > energy[2]  # higher rho removes more of the spectrum


def test_signed_option_returns_real_part():
    s = torch.randn(2, 4, 12, 20)
    signed = fourier.high_frequency_magnitude(s, 0.2, signed=True)
    assert (signed < 0).any()
    torch.testing.assert_close(signed.abs(), fourier.high_frequency_magnitude(s, 0.2), rtol=1e-4, atol=1e-4)


def test_features_repeat_over_frames_and_training_rho_range():
    s = torch.randn(2, 16, 1, 8, 10)
    feats = fourier.fourier_features(s, 0.1, num_frames=5)
    assert feats.shape == (2, 16, 5, 8, 10) and torch.equal(feats[:, :, 0], feats[:, :, 4])
    rho = fourier.sample_rho(10000, generator=torch.Generator().manual_seed(0))
    assert 0.05 <= rho.min() and rho.max() <= 0.95 and abs(rho.mean().item() - 0.5) < 0.01
