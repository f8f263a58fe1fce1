"""Latent-shifted flow matching, sigma schedules and the Euler sampler."""

import math

import pytest
import torch

from flashi2v import flow
from flashi2v.paradigms import Condition, dit_input
from flashi2v.sampling import conditioned_velocity, euler


def test_static_shift_7_maps_half_to_0875():
    assert flow.shift_sigma(torch.tensor(0.5), 7.0).item() == pytest.approx(0.875)


def test_shift_keeps_endpoints_and_order():
    sigma = torch.linspace(0, 1, 101)
    shifted = flow.shift_sigma(sigma, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert (shifted.diff() > 0).all() and (shifted[1:-1] > sigma[1:-1]).all()


def test_dynamic_shift_at_480x832():
    tokens = flow.image_tokens_per_frame(480 // 8, 832 // 8)
    assert tokens == 1560
    assert flow.dynamic_shift(tokens) == pytest.approx(2.056, abs=1e-3)
    assert flow.dynamic_shift(256) == pytest.approx(math.exp(0.5))
    assert flow.dynamic_shift(4096) == pytest.approx(math.exp(1.15))


def test_sigma_samplers_are_in_range_and_reproducible():
    g = lambda: torch.Generator().manual_seed(3)
    for sample in (flow.sample_sigma_uniform, flow.sample_sigma_logit_normal):
        a, b = sample(4096, generator=g()), sample(4096, generator=g())
        assert torch.equal(a, b) and a.min() > 0 and a.max() < 1
    ln = flow.sample_sigma_logit_normal(20000, generator=g())
    assert abs(ln.median().item() - 0.5) < 0.02 and ln.std() < flow.sample_sigma_uniform(20000, generator=g()).std()


def test_velocity_target_does_not_depend_on_phi():
    x, eps = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    s1, s2 = torch.tensor([0.7, 0.3]), torch.tensor([0.2, 0.1])
    for phi in (torch.zeros_like(x), 3 * torch.randn_like(x)):
        z1 = dit_input(flow.interpolation(x, eps, s1), Condition(shift=phi))
        z2 = dit_input(flow.interpolation(x, eps, s2), Condition(shift=phi))
        slope = (z1 - z2) / (s1 - s2).view(-1, 1, 1, 1, 1)
        torch.testing.assert_close(slope, flow.velocity_target(x, eps), rtol=1e-4, atol=1e-4)
    # the ends of the flow are both shifted by phi
    phi = torch.randn_like(x)
    torch.testing.assert_close(dit_input(flow.interpolation(x, eps, torch.ones(2)), Condition(shift=phi)), eps - phi)
    torch.testing.assert_close(dit_input(flow.interpolation(x, eps, torch.zeros(2)), Condition(shift=phi)), x - phi)


def test_loss_is_float32_mse_against_eps_minus_x():
    x, eps = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    v = torch.randn_like(x).bfloat16()
    loss = flow.flow_loss(v, x, eps)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(((v.float() - (eps - x)) ** 2).mean().item(), rel=1e-6)
    assert flow.flow_loss(eps - x, x, eps).item() == 0


def test_mean_weight_adds_only_the_error_of_the_frame_channel_means():
    x, eps = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    target = eps - x
    wobble = torch.randn_like(x)
    wobble = wobble - wobble.mean(dim=(-2, -1), keepdim=True)  # zero mean over each frame's H x W
    shift = torch.randn(2, 4, 3, 1, 1)
    plain = flow.flow_loss(target + wobble, x, eps)
    assert flow.flow_loss(target + wobble, x, eps, mean_weight=10.0).item() == pytest.approx(plain.item(), rel=1e-5)
    with_shift = flow.flow_loss(target + wobble + shift, x, eps)
    expected = with_shift.item() + 10.0 * shift.square().mean().item()
    assert flow.flow_loss(target + wobble + shift, x, eps, mean_weight=10.0).item() == pytest.approx(expected, rel=1e-5)


def test_schedule_runs_from_one_to_zero():
    sigmas = flow.sigma_schedule(50, 7.0)
    assert len(sigmas) == 51 and sigmas[0] == 1 and sigmas[-1] == 0 and (sigmas.diff() < 0).all()


class ExactVelocityOracle(torch.nn.Module):
    """Stands in for a perfect DiT: from its (shifted) input it recovers eps and returns eps - x."""

    def __init__(self, x, phi):
        super().__init__()
        self.x, self.phi = x, phi
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z_in, t, context, s_high):
        sigma = (t / 1000).view(-1, 1, 1, 1, 1)
        eps = (z_in.float() + self.phi - (1 - sigma) * self.x) / sigma
        return eps - self.x


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (4, 7.0), (25, 2.056), (50, 7.0)])
def test_euler_with_oracle_returns_x(steps, shift):
    g = torch.Generator().manual_seed(steps)
    x, eps, phi = (torch.randn(1, 4, 3, 6, 6, generator=g) for _ in range(3))
    oracle = ExactVelocityOracle(x, phi)
    context = torch.zeros(1, 2, 8)
    velocity = conditioned_velocity(oracle, Condition(phi, torch.zeros_like(x)), context, context, guidance=5.0)
    z = euler(velocity, eps.clone(), flow.sigma_schedule(steps, shift))
    torch.testing.assert_close(z, x, rtol=0, atol=2e-5)
    # decoding z directly is right; adding phi back would be wrong
    assert (z + phi - x).abs().max() > 0.1


def test_cfg_combines_branches():
    class TextScale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, z, t, context, s_high):
            return z * context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)

    z = torch.randn(2, 4, 1, 2, 2)
    cond, uncond = torch.full((2, 3, 5), 2.0), torch.full((2, 3, 5), 0.5)
    for batch_cfg in (True, False):
        v = conditioned_velocity(TextScale(), Condition(torch.zeros_like(z), torch.zeros_like(z)), cond, uncond, 4.0,
                                 batch_cfg=batch_cfg)(z, torch.tensor(0.5))
        torch.testing.assert_close(v, z * (0.5 + 4.0 * (2.0 - 0.5)))
