"""Likelihoods against exact log-densities."""

from __future__ import annotations

import math

import pytest
import torch

from shared_core.denoiser import NetworkDenoiser
from shared_core.likelihood import (
    bits_per_dim,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    ode_log_likelihood,
    vlb_bits_per_dim,
)
from shared_core.random import make_generator
from shared_core.schedules import DiscreteSchedule
from shared_core.toy import IsotropicGaussian, ring_mixture


def test_ode_likelihood_matches_exact_mixture_density() -> None:
    mix = ring_mixture()
    x = mix.sample(64, make_generator(0)).double()
    exact = mix.log_prob(x, 1e-3)
    lp, nfe = ode_log_likelihood(mix.denoiser, x, sigma_min=1e-3, sigma_max=80.0, exact_trace=True)
    assert (lp - exact).abs().max() < 0.03
    assert nfe > 10
    # Hutchinson: unbiased, so the batch mean stays close; per-sample noise is larger
    lp_h, _ = ode_log_likelihood(
        mix.denoiser, x, sigma_min=1e-3, sigma_max=80.0, hutchinson_samples=4, generator=make_generator(1)
    )
    assert abs((lp_h - exact).mean().item()) < 0.05
    assert (lp_h - exact).abs().mean() < 0.3


def test_ode_likelihood_bad_input() -> None:
    mix = ring_mixture()
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        ode_log_likelihood(mix.denoiser, torch.zeros(2, 2), sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="NaN"):
        ode_log_likelihood(mix.denoiser, torch.full((2, 2), float("nan")), sigma_min=0.01, sigma_max=1.0)


def _gaussian_nll_bits(x0: torch.Tensor, std: float) -> torch.Tensor:
    return (0.5 * (x0 / std) ** 2 + 0.5 * math.log(2 * math.pi * std**2)).mean(1) / math.log(2)


def test_vlb_is_tight_with_the_optimal_reverse_variance() -> None:
    """Gaussian data: with the exact mean and the exact reverse variance (Bao et al. 2022) the bound
    equals the true NLL; with fixed variances it is a looser upper bound."""
    std = 0.5
    g = IsotropicGaussian(0.0, std)
    s = DiscreteSchedule.from_name("linear", num_steps=1000)
    ab = s.alphas_cumprod
    x0 = g.sample((256, 4), make_generator(2)).double()
    true = _gaussian_nll_bits(x0, std).mean().item()

    def optimal(x, sigma):
        t = s.t_from_sigma(sigma.double()).round().long()
        ab_t = ab[t]
        ab_p = torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab_t))
        beta = 1 - ab_t / ab_p
        var0 = std**2 * sigma.double() ** 2 / (std**2 + sigma.double() ** 2)  # Var(x0 | x)
        c0 = ab_p.sqrt() * beta / (1 - ab_t)
        v = torch.where(t > 0, beta * (1 - ab_p) / (1 - ab_t) + c0**2 * var0, var0)
        return g.denoiser(x, sigma), v.log().reshape(-1, 1).expand_as(x).to(x)

    tight = vlb_bits_per_dim(
        optimal, x0, s, variance="learned", discretized=False, generator=make_generator(3)
    )
    assert abs(tight["total"].mean().item() - true) < 0.03
    loose = vlb_bits_per_dim(
        g.denoiser, x0, s, variance="fixed_small", discretized=False, generator=make_generator(3)
    )
    assert loose["total"].mean().item() > true + 0.1
    assert loose["terms"].shape == (256, 1000)


def test_discretized_likelihood_sums_to_one() -> None:
    levels = torch.linspace(-1, 1, 256).reshape(-1, 1)
    mean, log_scale = torch.tensor([[0.3]]), torch.tensor([[math.log(0.2)]])
    p = discretized_gaussian_log_likelihood(levels, mean, log_scale).exp().sum()
    assert abs(p.item() - 1.0) < 1e-4


def test_bits_per_dim_offset() -> None:
    # a uniform density on [-1, 1]^D has log p = -D log 2: exactly 8 bits for 256 levels
    assert torch.allclose(bits_per_dim(torch.tensor([-10 * math.log(2)]), 10), torch.tensor([8.0]))


def test_hybrid_loss_trains_variance_only_through_vb() -> None:
    s = DiscreteSchedule.from_name("linear", num_steps=100)
    x0 = torch.rand(8, 2, 4, 4) * 2 - 1
    weight = torch.zeros(1, requires_grad=True)
    eps_scale = torch.ones(1, requires_grad=True)

    def net(x_t, t):
        return torch.cat([x_t * eps_scale, torch.tanh(weight).expand_as(x_t)], dim=1)

    out = hybrid_loss(net, x0, s, generator=make_generator(0))
    out.loss.mean().backward()
    assert weight.grad is not None and weight.grad.abs() > 0
    assert out.loss.shape == (8,)
    # it plugs into the denoiser for sampling with learned_range
    den = NetworkDenoiser(net, s, learned_variance=True, return_variance=True)
    x0_hat, v = den(torch.randn(2, 2, 4, 4), torch.tensor([1.0, 2.0]))
    assert x0_hat.shape == v.shape == (2, 2, 4, 4)
