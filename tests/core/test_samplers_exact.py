"""Every sampler, run on an exact denoiser, must produce the right distribution."""

from __future__ import annotations

import pytest
import torch

from shared_core.random import make_generator, randn
from shared_core.samplers import get_sampler, sample_until, sdedit
from shared_core.schedules import DiscreteSchedule, VESchedule, VPSchedule
from shared_core.toy import IsotropicGaussian, ring_mixture, sliced_wasserstein

N = 4000
MIX = ring_mixture()
LINEAR = DiscreteSchedule.from_name("linear")

# (sampler, schedule, steps, kwargs)
CASES = [
    ("ddpm", LINEAR, 100, {}),
    ("ddpm", LINEAR, 100, {"variance": "fixed_large"}),
    ("ddim", LINEAR, 50, {}),
    ("ddim", LINEAR, 100, {"eta": 1.0}),
    ("dpmpp_2m", LINEAR, 20, {}),
    ("dpmpp_2m_sde", LINEAR, 50, {}),
    ("euler", LINEAR, 100, {}),
    ("euler", LINEAR, 100, {"s_churn": 10.0}),
    ("heun", LINEAR, 30, {}),
    ("euler_ancestral", LINEAR, 100, {}),
    ("euler_maruyama", VESchedule(0.01, 20.0), 200, {"process": "ve"}),
    ("euler_maruyama", VPSchedule("linear"), 200, {"process": "vp"}),
    ("pc", LINEAR, 100, {"snr": 0.05}),
    ("langevin", VESchedule(0.02, 20.0), 20, {"steps_per_level": 50, "step_lr": 1e-3}),
    ("ode", LINEAR, 10, {}),  # adaptive: only the grid's ends matter (see _grid)
]


def _grid(name: str, schedule, steps: int) -> torch.Tensor:
    # The ODE solver is adaptive and ends with one denoising jump from the last positive level, so
    # give it a grid that ends at the schedule's sigma_min ("leading" reaches t = 0).
    if name == "ode":
        return schedule.sigmas(steps, "leading")
    return schedule.sigmas(steps)


def _nearest_component(x: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.double(), MIX.means).argmin(1)


@pytest.mark.parametrize(("name", "schedule", "steps", "kwargs"), CASES, ids=lambda c: str(c)[:20])
def test_mixture(name, schedule, steps, kwargs) -> None:
    sigmas = _grid(name, schedule, steps)
    x = randn((N, 2), make_generator(0)) * schedule.prior_std(sigmas[0]).float()
    out = get_sampler(name)(MIX.denoiser, x, sigmas, generator=make_generator(1), **kwargs)
    truth = MIX.sample(N, make_generator(2))
    floor = sliced_wasserstein(MIX.sample(N, make_generator(3)), truth)
    # two independent sets of 4000 true samples differ by 0.02-0.05 in this metric
    assert sliced_wasserstein(out, truth) < floor + 0.04
    # mixture weights: the fraction of samples nearest each component (std error ~0.006)
    frac = torch.bincount(_nearest_component(out), minlength=8).double() / N
    assert (frac - MIX.weights).abs().max() < 0.03
    # mean and covariance of the whole mixture
    ref_mean = (MIX.weights[:, None] * MIX.means).sum(0)
    assert (out.double().mean(0) - ref_mean).abs().max() < 0.05
    cov = torch.cov(out.double().T)
    assert (cov - torch.cov(truth.double().T)).abs().max() < 0.05


@pytest.mark.parametrize(("name", "steps"), [("ddim", 200), ("dpmpp_2m", 50), ("heun", 50), ("ddpm", 1000)])
def test_gaussian_any_rank(name: str, steps: int) -> None:
    """An isotropic Gaussian on rank-4 tensors: per-element mean and std. (First-order samplers
    shrink the variance at coarse grids: DDIM(50) gives std 0.77, DDPM(50) 0.73 for 0.8.)"""
    g = IsotropicGaussian(0.5, 0.8)
    sigmas = LINEAR.sigmas(steps)
    x = randn((256, 3, 4, 4), make_generator(0)) * LINEAR.prior_std(sigmas[0]).float()
    out = get_sampler(name)(g.denoiser, x, sigmas, generator=make_generator(1))
    assert abs(out.mean().item() - 0.5) < 0.02
    assert abs(out.std().item() - 0.8) < 0.02


def test_sdedit_keeps_reference_at_low_strength() -> None:
    """SDEdit at low strength stays near the reference; at full strength it samples the data."""
    sigmas = LINEAR.sigmas(50)
    ref = MIX.means[:1].float().expand(2000, 2).clone() + 0.05
    low = sdedit(get_sampler("ddim"), MIX.denoiser, ref, sigmas, 0.04, generator=make_generator(0))
    assert (_nearest_component(low) == 0).double().mean() > 0.95  # stays in the reference's mode
    full = sdedit(get_sampler("ddim"), MIX.denoiser, ref, sigmas, 1.0, generator=make_generator(0))
    frac = torch.bincount(_nearest_component(full), minlength=8).double() / 2000
    assert (frac - MIX.weights).abs().max() < 0.05


def test_sample_until_returns_x0_estimate() -> None:
    sigmas = LINEAR.sigmas(50)
    x = randn((2000, 2), make_generator(0)) * LINEAR.prior_std(sigmas[0]).float()
    x_mid, x0 = sample_until(get_sampler("ddim"), MIX.denoiser, x, sigmas, stop_sigma=1.0)
    full = get_sampler("ddim")(MIX.denoiser, x, sigmas)
    assert x_mid.std() > x0.std() * 0.9  # still noisy
    # the deterministic sampler finishes where the early x0 estimate points, on average
    assert (x0.mean(0) - full.mean(0)).abs().max() < 0.1


# ("pc" is left out: its corrector's step size uses norms over the whole batch, by design.)
@pytest.mark.parametrize("name", ["dpmpp_2m_sde", "euler_ancestral", "ddpm", "euler_maruyama"])
def test_one_generator_per_row_makes_samples_batch_independent(name) -> None:
    """A list of generators (one per row, as diffusers accepts) gives row i the same noise whether
    it is sampled alone or in a batch; one generator for the whole batch does not."""
    sigmas = LINEAR.sigmas(10)
    x = randn((3, 2), make_generator(0)) * LINEAR.prior_std(sigmas[0]).float()
    sample = get_sampler(name)
    batch = sample(MIX.denoiser, x.clone(), sigmas, generator=[make_generator(10 + i) for i in range(3)])
    alone = sample(MIX.denoiser, x[2:].clone(), sigmas, generator=[make_generator(12)])
    torch.testing.assert_close(batch[2:], alone, atol=1e-5, rtol=0)
    shared = sample(MIX.denoiser, x.clone(), sigmas, generator=make_generator(10))
    assert not torch.allclose(shared[2:], alone, atol=1e-3)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample(MIX.denoiser, x.clone(), sigmas, generator=[make_generator(0), make_generator(1)])
