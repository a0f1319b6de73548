"""Likelihoods: the variational bound of a discrete model (Ho et al. 2020; Nichol & Dhariwal 2021)
and the exact log-likelihood of the probability-flow ODE (Song et al. 2021, appendix D), plus the
hybrid training loss that learns the reverse variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint

from shared_core.denoiser import Denoiser
from shared_core.diffusion import (
    LossOutput,
    UniformTimesteps,
    append_dims,
    convert_prediction,
    q_posterior,
    q_sample,
)
from shared_core.random import randn, randn_like
from shared_core.schedules import DiscreteSchedule

__all__ = [
    "bits_per_dim",
    "discretized_gaussian_log_likelihood",
    "hybrid_loss",
    "normal_kl",
    "ode_log_likelihood",
    "vb_term",
    "vlb_bits_per_dim",
]

LN2 = math.log(2.0)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 256
) -> Tensor:
    """log P(x) of data in [-1, 1] quantised to ``bins`` levels under N(mean, e^{2 log_scale}),
    integrated over each bin; the edge bins extend to +-inf (Ho et al. 2020, eq. 13). Elementwise."""
    half = 1.0 / (bins - 1)
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (x - mean + half))
    cdf_minus = torch.special.ndtr(inv_std * (x - mean - half))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_delta))


def bits_per_dim(log_prob: Tensor, dims: int, bin_width: float = 2.0 / 256) -> Tensor:
    """Bits per dimension of a continuous log-density for data quantised to bins of ``bin_width``
    (8-bit data scaled to [-1, 1]: 2/256, i.e. +7 bits): -log2(p(x) bin_width^D) / D."""
    return -log_prob / (dims * LN2) - math.log2(bin_width)


# ----------------------------------------------------------------------------------------------
# Variational bound (discrete schedules)
# ----------------------------------------------------------------------------------------------


def _native(schedule: DiscreteSchedule, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(alpha_t, sigma_t, alpha_{t-1}, sigma_{t-1}, log beta_t, log beta-tilde_t clipped) for integer t >= 0.

    The posterior variance beta-tilde is 0 at t = 0; like improved DDPM we clip its log to the value
    at t = 1 so the decoder keeps a finite scale.
    """
    ab = schedule.alphas_cumprod
    ti = t.long()
    ab_t = ab[ti]
    ab_prev = torch.where(ti > 0, ab[(ti - 1).clamp(min=0)], torch.ones_like(ab_t))
    beta = 1 - ab_t / ab_prev
    beta_tilde = beta * (1 - ab_prev) / (1 - ab_t)
    bt1 = schedule.betas[1] * (1 - ab[0]) / (1 - ab[1]) if len(ab) > 1 else beta[:1]
    log_bt = torch.where(
        ti > 0, beta_tilde.clamp(min=1e-30).log(), torch.as_tensor(bt1).log().expand_as(beta)
    )
    return ab_t.sqrt(), (1 - ab_t).sqrt(), ab_prev.sqrt(), (1 - ab_prev).sqrt(), beta.log(), log_bt


def vb_term(
    schedule: DiscreteSchedule,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    x0_hat: Tensor,
    v: Tensor | None = None,
    variance: str = "fixed_small",
    discretized: bool = True,
) -> Tensor:
    """One term of the bound, per sample, in bits per dimension (native VP coordinates).

    For t > 0: KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) with p's mean the posterior mean at x0_hat
    and its variance fixed (beta-tilde or beta) or learned (``v`` as in ``sample_ddpm``). For t = 0:
    the decoder's negative log-likelihood -log p(x0 | x_1), discretised to 8 bits or a density.
    """
    a_t, s_t, a_p, s_p, log_beta, log_bt = _native(schedule, t)
    ndim = x0.ndim
    if variance == "fixed_small":
        model_logvar = append_dims(log_bt, ndim).to(x0)
    elif variance == "fixed_large":
        model_logvar = append_dims(log_beta, ndim).to(x0)
    elif variance in ("learned_range", "learned"):
        if v is None:
            raise ValueError(f"variance={variance!r} needs the model's variance output v")
        if variance == "learned":
            model_logvar = v
        else:
            frac = (v + 1) / 2
            lo, hi = append_dims(log_bt, ndim).to(x0), append_dims(log_beta, ndim).to(x0)
            model_logvar = frac * hi + (1 - frac) * lo
    else:
        raise ValueError(f"unknown variance {variance!r}")
    model_logvar = model_logvar.expand_as(x0)
    is_first = append_dims(t.long() == 0, ndim)
    # q posterior (t > 0); at t = 0 the "previous" level is the data itself (alpha 1, sigma 0)
    s_p_safe = torch.where(t.long() > 0, s_p, torch.ones_like(s_p))
    true_mean, _ = q_posterior(x0, x_t, a_t, s_t, a_p, s_p_safe)
    model_mean, _ = q_posterior(x0_hat, x_t, a_t, s_t, a_p, s_p_safe)
    model_mean = torch.where(is_first, x0_hat, model_mean)
    kl = normal_kl(true_mean, append_dims(log_bt, ndim).to(x0), model_mean, model_logvar)
    if discretized:
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)
    else:
        nll = 0.5 * (math.log(2 * math.pi) + model_logvar + (x0 - model_mean) ** 2 * torch.exp(-model_logvar))
    per_elem = torch.where(is_first, nll, kl)
    return per_elem.flatten(1).mean(1) / LN2


def _prior_bpd(schedule: DiscreteSchedule, x0: Tensor) -> Tensor:
    ab = schedule.alphas_cumprod[-1].to(x0)
    mean = ab.sqrt() * x0
    logvar = torch.log1p(-ab).expand_as(x0)
    kl = normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0))
    return kl.flatten(1).mean(1) / LN2


@torch.no_grad()
def vlb_bits_per_dim(
    denoiser: Denoiser,
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    variance: str = "fixed_small",
    discretized: bool = True,
    generator: torch.Generator | None = None,
    extra_args: dict[str, Any] | None = None,
) -> dict[str, Tensor]:
    """The full variational bound -log p(x0) <= L_T + sum_{t>1} L_{t-1} + L_0, in bits/dim per
    sample, with one Monte-Carlo x_t per term (Ho et al. 2020, eq. 5).

    Args:
        denoiser: the model (returning (x0, v) for learned variances), called in VE coordinates.
        x0: data (B, ...) in [-1, 1] (8-bit levels when ``discretized``).

    Returns:
        {"total": (B,), "prior": (B,), "terms": (B, T)}.
    """
    if not schedule.discrete:
        raise ValueError("the variational bound needs a discrete schedule")
    T = schedule.num_steps
    terms = []
    for ti in range(T):
        t = torch.full((x0.shape[0],), ti, dtype=torch.float64)
        a_t, s_t = schedule.alpha_sigma(t)
        x_t = q_sample(x0, a_t, s_t, randn_like(x0, generator))
        out = denoiser(x_t / append_dims(a_t.to(x0), x0.ndim), (s_t / a_t).to(x0), **(extra_args or {}))
        x0_hat, v = out if isinstance(out, tuple) else (out, None)
        terms.append(vb_term(schedule, x0, x_t, t, x0_hat, v, variance, discretized))
    terms_t = torch.stack(terms, 1)
    prior = _prior_bpd(schedule, x0)
    return {"total": terms_t.sum(1) + prior, "prior": prior, "terms": terms_t}


def hybrid_loss(
    net: Callable[..., Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    lambda_vlb: float = 0.001,
    channel_dim: int = 1,
    t_sampler: Any = None,
    generator: torch.Generator | None = None,
    **cond: Any,
) -> LossOutput:
    """L_hybrid = L_simple + lambda L_vlb (Nichol & Dhariwal 2021, sec. 3.1) for a network that
    predicts eps and the variance interpolation v (``learned_range``), stacked on ``channel_dim``.

    L_vlb is estimated as T times the bound's term at the sampled t (improved DDPM's scaling), with
    the stop-gradient on the mean so the bound trains only the variance.
    """
    batch = x0.shape[0]
    t, w_imp = (t_sampler or UniformTimesteps(schedule)).sample(batch, generator)
    noise = randn_like(x0, generator)
    a_t, s_t = schedule.alpha_sigma(t)
    x_t = q_sample(x0, a_t, s_t, noise)
    out = net(x_t, (t * schedule.time_scale).to(x0), **cond)
    eps_hat, v = out.chunk(2, dim=channel_dim)
    mse = (eps_hat - noise).pow(2).flatten(1).mean(1)
    x0_hat = convert_prediction(eps_hat.detach(), x_t, a_t.to(x0), s_t.to(x0), "eps", "x0")
    vb = vb_term(schedule, x0, x_t, t, x0_hat, v, "learned_range", discretized=True)
    loss = mse + lambda_vlb * schedule.num_steps * vb
    return LossOutput(w_imp.to(loss) * loss, loss.detach(), t)


# ----------------------------------------------------------------------------------------------
# Probability-flow ODE likelihood
# ----------------------------------------------------------------------------------------------


def ode_log_likelihood(
    denoiser: Denoiser,
    x: Tensor,
    *,
    sigma_min: float,
    sigma_max: float,
    variance_preserving: bool = True,
    exact_trace: bool = False,
    hutchinson_samples: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    extra_args: dict[str, Any] | None = None,
) -> tuple[Tensor, int]:
    """log p_{sigma_min}(x) by the instantaneous change of variables along the probability-flow ODE
    (Song et al. 2021, appendix D.2; Chen et al. 2018).

    In u = log sigma the ODE is dx/du = f(x, u) = x - D(x, e^u), and
    log p_min(x) = log p_max(x_T) + int_{u_min}^{u_max} div f du, where p_max is the prior
    N(0, (1 + sigma_max^2) I) for VP (the unit Gaussian in VP coordinates) or N(0, sigma_max^2 I) for VE.
    The divergence is exact (one backward pass per dimension; small data) or Hutchinson's
    estimate E[e^T J e] with Rademacher probes fixed along the path (FFJORD).

    Args:
        x: data in VE coordinates (B, ...), at noise level sigma_min (~0).

    Returns:
        (log-likelihood in nats, shape (B,), number of denoiser evaluations).
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")
    batch, dims = x.shape[0], x[0].numel()
    probes = None
    if not exact_trace:
        probes = randn((hutchinson_samples, *x.shape), generator, x.device, x.dtype).sign()
    nfe = [0]

    def f(u: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        y = state[0].detach()
        with torch.enable_grad():
            y.requires_grad_(True)
            sig = u.exp().to(y.dtype).expand(batch)
            x0 = denoiser(y, sig, **(extra_args or {}))
            x0 = x0[0] if isinstance(x0, tuple) else x0
            nfe[0] += 1
            dy = y - x0
            if exact_trace:
                flat = x0.reshape(batch, -1)
                div_d = torch.zeros(batch, dtype=y.dtype, device=y.device)
                for i in range(dims):
                    g = torch.autograd.grad(flat[:, i].sum(), y, retain_graph=i < dims - 1)[0]
                    div_d = div_d + g.reshape(batch, -1)[:, i]
            else:
                assert probes is not None
                div_d = torch.zeros(batch, dtype=y.dtype, device=y.device)
                for k in range(probes.shape[0]):
                    g = torch.autograd.grad(x0, y, probes[k], retain_graph=k < probes.shape[0] - 1)[0]
                    div_d = div_d + (g * probes[k]).flatten(1).sum(1)
                div_d = div_d / probes.shape[0]
        return dy.detach(), (dims - div_d).detach()

    u = torch.tensor([math.log(sigma_min), math.log(sigma_max)], dtype=x.dtype, device=x.device)
    zeros = torch.zeros(batch, dtype=x.dtype, device=x.device)
    x_t, delta = odeint(f, (x, zeros), u, rtol=rtol, atol=atol, method="dopri5")
    x_t, delta = x_t[-1], delta[-1]
    prior_var = (1 + sigma_max**2) if variance_preserving else sigma_max**2
    log_prior = -0.5 * (x_t.flatten(1).pow(2).sum(1) / prior_var + dims * math.log(2 * math.pi * prior_var))
    return log_prior + delta, nfe[0]
