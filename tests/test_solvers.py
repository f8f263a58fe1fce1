"""ODE solvers of the sampler (euler, heun, dpmpp_2m): exactness, order of accuracy, and the pipeline's option."""

import pytest
import torch

from flashi2v import FlashI2VError, FlashI2VPipeline, flow
from flashi2v.builtin import builtin_available
from flashi2v.paradigms import Condition
from flashi2v.sampling import SOLVERS, conditioned_velocity, model_evaluations

MU, SD = 0.3, 0.5  # data ~ N(MU, SD^2): the exact velocity field and ODE solution are known in closed form


def gaussian_velocity(z: torch.Tensor, sigma) -> torch.Tensor:
    """v = E[eps - x | z_sigma] for x ~ N(MU, SD^2), z_sigma = (1 - sigma) x + sigma eps."""
    s = float(sigma)
    var = (1 - s) ** 2 * SD**2 + s**2
    dev = z - (1 - s) * MU
    return s / var * dev - (MU + (1 - s) * SD**2 / var * dev)


def solve_error(solver: str, steps: int, shift: float) -> float:
    """Max error at sigma = 0; the probability-flow ODE of a Gaussian carries eps to MU + SD eps."""
    eps = torch.linspace(-2, 2, 101)
    z = SOLVERS[solver](gaussian_velocity, eps.clone(), flow.sigma_schedule(steps, shift).double())
    return (z.double() - (MU + SD * eps.double())).abs().max().item()


class ShiftedOracle(torch.nn.Module):
    """The exact velocity eps - x of one known sample x, as the DiT sees it (input z - phi)."""

    def __init__(self, x, phi):
        super().__init__()
        self.x, self.phi = x, phi
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z_in, t, context, s_high):
        sigma = (t / 1000).view(-1, 1, 1, 1, 1)
        return (z_in.float() + self.phi - (1 - sigma) * self.x) / sigma - self.x


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("steps", [1, 3, 12])
def test_every_solver_lands_on_the_sample_of_an_exact_velocity(solver, steps):
    g = torch.Generator().manual_seed(steps)
    x, eps, phi = (torch.randn(1, 4, 3, 6, 6, generator=g) for _ in range(3))
    velocity = conditioned_velocity(ShiftedOracle(x, phi), Condition(phi, torch.zeros_like(x)), torch.zeros(1, 2, 8))
    z = SOLVERS[solver](velocity, eps.clone(), flow.sigma_schedule(steps, 4.0))
    torch.testing.assert_close(z, x, rtol=0, atol=3e-5)


@pytest.mark.parametrize("shift", [1.0, 4.0])
def test_second_order_solvers_converge_faster_than_euler(shift):
    euler = [solve_error("euler", n, shift) for n in (32, 64)]
    heun = [solve_error("heun", n, shift) for n in (32, 64)]
    dpm = solve_error("dpmpp_2m", 64, shift)
    assert 1.8 < euler[0] / euler[1] < 2.2  # first order: half the step, half the error
    assert heun[0] / heun[1] > 3.5  # second order: a quarter
    assert heun[1] < euler[1] / 5 and dpm < euler[1] / 5


def test_dpmpp_2m_is_euler_where_it_has_no_second_order_step():
    # two steps: the first leaves sigma = 1 (no previous step), the second ends at 0: both first order
    eps = torch.linspace(-2, 2, 11)
    sigmas = flow.sigma_schedule(2, 3.0)
    torch.testing.assert_close(SOLVERS["dpmpp_2m"](gaussian_velocity, eps, sigmas),
                               SOLVERS["euler"](gaussian_velocity, eps, sigmas))


def test_model_evaluations_counts_heuns_two_per_step():
    calls = []
    for solver in SOLVERS:
        calls.clear()
        SOLVERS[solver](lambda z, s: calls.append(float(s)) or gaussian_velocity(z, s), torch.zeros(3),
                        flow.sigma_schedule(5, 4.0))
        assert len(calls) == model_evaluations(solver, 5), solver


@pytest.mark.skipif(not builtin_available(), reason="this install has no built-in model")
def test_pipeline_solver_option(example_image):
    pipe = FlashI2VPipeline.from_pretrained("builtin")
    kw = dict(seed=1, progress=False, output_type="latent", num_frames=5)
    run = lambda **extra: pipe(example_image, "the camera pans left", **kw, **extra).latents  # noqa: E731
    # two first-order steps: the same update as Euler's, written another way (float32 rounding apart)
    torch.testing.assert_close(run(steps=2, solver="dpmpp_2m"), run(steps=2, solver="euler"), rtol=0, atol=3e-4)
    euler3, dpm3, heun3 = (run(steps=3, solver=s) for s in ("euler", "dpmpp_2m", "heun"))
    assert not torch.allclose(euler3, dpm3) and not torch.allclose(euler3, heun3)
    torch.testing.assert_close(run(steps=3), euler3)  # the built-in model's default: the reference's Euler
    with pytest.raises(FlashI2VError, match="solver 'rk4' is not one of euler, heun, dpmpp_2m"):
        run(steps=2, solver="rk4")
    with pytest.raises(FlashI2VError, match="step caching"):
        run(steps=3, solver="heun", step_cache=0.2)
    assert run(steps=3, solver="dpmpp_2m", step_cache=0.2).shape == dpm3.shape
