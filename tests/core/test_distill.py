"""Score distillation: the gradient formula, its weighting, and that it pulls a render to the prior's mode."""

import pytest
import torch

from shared_core.distill import sds_gradient, sds_loss, sds_sigmas, sds_weight
from shared_core.schedules import get_schedule


def _gaussian_prior(mean: torch.Tensor, std: float):
    """The exact denoiser of N(mean, std^2 I): D(x, s) = mean + std^2 / (std^2 + s^2) (x - mean)."""

    def denoiser(x, sigma, **cond):
        s2 = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return mean + std**2 / (std**2 + s2) * (x - mean)

    return denoiser


def test_gradient_matches_eps_hat_minus_eps():
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    sigma = torch.tensor([0.3, 1.0, 5.0], dtype=torch.float64)
    den = _gaussian_prior(torch.full((2, 4, 4), 0.5), 0.2)
    grad, x0 = sds_gradient(den, x, sigma, noise)
    s = sigma.float().reshape(-1, 1, 1, 1)
    xs = x + s * noise
    eps_hat = (xs - den(xs, sigma.float())) / s
    w = s**2 / (1 + s**2)
    torch.testing.assert_close(grad, w * (eps_hat - noise))
    torch.testing.assert_close(x0, den(xs, sigma.float()))


def test_loss_gradient_equals_sds_direction_and_skips_the_prior():
    weight = torch.nn.Parameter(torch.tensor(0.7))

    def den(x, sigma, **cond):
        return weight * x

    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    out = sds_loss(den, x, 0.8, torch.randn(4, 3, 8, 8), weighting="uniform")
    out.loss.backward()
    torch.testing.assert_close(x.grad, out.grad / 4)
    assert weight.grad is None  # the prior's Jacobian is not used


def test_grad_clip_and_weightings():
    s = torch.tensor([0.5, 2.0])
    torch.testing.assert_close(sds_weight(s, "vp_variance"), s**2 / (1 + s**2))
    torch.testing.assert_close(sds_weight(s, "snr_inverse"), s)
    with pytest.raises(ValueError, match="weighting"):
        sds_weight(s, "bogus")
    x = torch.zeros(1, 4, requires_grad=True)
    out = sds_loss(lambda x, sigma: x + 100.0, x, 0.1, torch.zeros(1, 4), weighting="uniform", grad_clip=1.0)
    assert out.grad.abs().max() == 1.0


def test_sds_descent_reaches_the_prior_mode():
    """Gradient descent on x with SDS under a narrow Gaussian prior converges to its mean."""
    mean = torch.tensor([0.8, -0.4, 0.1])
    den = _gaussian_prior(mean, 0.05)
    schedule = get_schedule("cosine")
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(1, 3, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(300):
        sigma = sds_sigmas(schedule, 1, g)
        out = sds_loss(den, x, sigma, torch.randn(1, 3, generator=g))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    torch.testing.assert_close(x.detach()[0], mean, atol=0.05, rtol=0)


def test_sds_sigmas_range_and_determinism():
    schedule = get_schedule("cosine")
    a = sds_sigmas(schedule, 64, torch.Generator().manual_seed(3), (0.2, 0.5))
    b = sds_sigmas(schedule, 64, torch.Generator().manual_seed(3), (0.2, 0.5))
    assert torch.equal(a, b)
    lo, hi = schedule.sigma(0.2 * (schedule.num_steps - 1)), schedule.sigma(0.5 * (schedule.num_steps - 1))
    assert (a >= lo - 1e-9).all() and (a <= hi + 1e-9).all()
    with pytest.raises(ValueError):
        sds_sigmas(schedule, 2, torch.Generator(), (0.6, 0.5))
