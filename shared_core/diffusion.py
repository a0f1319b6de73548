"""The forward process, parameterisations and training objectives, for tensors of any rank.

Conventions: in a schedule's native coordinates x_t = alpha_t x_0 + sigma_t eps (``alpha_sigma``);
the batch is the first dimension and per-sample scalars broadcast over the rest (``append_dims``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from shared_core.random import rand, randn, randn_like
from shared_core.schedules import Schedule

__all__ = [
    "PREDICTIONS",
    "WEIGHTINGS",
    "LogNormalTimesteps",
    "LossAwareTimesteps",
    "LossOutput",
    "UniformTimesteps",
    "append_dims",
    "convert_prediction",
    "diffusion_loss",
    "loss_weight",
    "q_posterior",
    "q_sample",
    "training_target",
]

PREDICTIONS = ("eps", "x0", "v", "score")
WEIGHTINGS = ("uniform", "snr", "min_snr")


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so a per-sample (B,) tensor broadcasts against rank ``ndim``."""
    if x.ndim > ndim:
        raise ValueError(f"cannot broadcast a rank-{x.ndim} tensor to rank {ndim}")
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


def _per_sample(v: Tensor | float, x: Tensor) -> Tensor:
    v = torch.as_tensor(v, device=x.device)
    return append_dims(v.to(x.dtype), x.ndim)


# ----------------------------------------------------------------------------------------------
# Forward process
# ----------------------------------------------------------------------------------------------


def q_sample(x0: Tensor, alpha: Tensor | float, sigma: Tensor | float, noise: Tensor) -> Tensor:
    """Sample q(x_t | x_0) = N(alpha x_0, sigma^2 I). alpha, sigma: scalars or (B,)."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} does not match x0 shape {tuple(x0.shape)}")
    return _per_sample(alpha, x0) * x0 + _per_sample(sigma, x0) * noise


def q_posterior(
    x0: Tensor, x_t: Tensor, alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor, sigma_s: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_s | x_t, x_0) for s < t (Kingma et al. 2021, VDM eq. 32-33).

    With alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2:
    mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x_0,
    var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2. For DDPM steps this is Ho et al.'s eq. 7.

    Returns:
        mean (shape of x0) and variance (broadcastable, rank of x0).
    """
    a_t, s_t, a_s, s_s = (_per_sample(v, x0) for v in (alpha_t, sigma_t, alpha_s, sigma_s))
    a_ts = a_t / a_s
    var_ts = s_t**2 - a_ts**2 * s_s**2
    mean = (a_ts * s_s**2 / s_t**2) * x_t + (a_s * var_ts / s_t**2) * x0
    return mean, var_ts * s_s**2 / s_t**2


# ----------------------------------------------------------------------------------------------
# Parameterisations
# ----------------------------------------------------------------------------------------------


def convert_prediction(pred: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor, src: str, dst: str) -> Tensor:
    """Exact conversion between eps, x0, v (Salimans & Ho 2022: v = alpha eps - sigma x0) and score
    (-eps / sigma) predictions, given x_t = alpha x0 + sigma eps. alpha, sigma: scalars or (B,)."""
    for name, p in (("src", src), ("dst", dst)):
        if p not in PREDICTIONS:
            raise ValueError(f"unknown prediction {p!r} for {name}; valid: {', '.join(PREDICTIONS)}")
    a, s = _per_sample(alpha, x_t), _per_sample(sigma, x_t)
    if src == dst:
        return pred
    # to (x0, eps)
    if src == "x0":
        x0 = pred
        eps = (x_t - a * x0) / s
    elif src == "eps" or src == "score":
        eps = pred if src == "eps" else -s * pred
        x0 = (x_t - s * eps) / a
    else:  # v: solve [alpha, sigma; -sigma, alpha] [eps? ...]; general alpha^2 + sigma^2 != 1 allowed
        norm = a**2 + s**2
        x0 = (a * x_t - s * pred) / norm
        eps = (s * x_t + a * pred) / norm
    if dst == "x0":
        return x0
    if dst == "eps":
        return eps
    if dst == "score":
        return -eps / s
    return a * eps - s * x0


def training_target(x0: Tensor, noise: Tensor, alpha: Tensor, sigma: Tensor, prediction: str) -> Tensor:
    x_t = q_sample(x0, alpha, sigma, noise)
    return convert_prediction(noise, x_t, alpha, sigma, "eps", prediction)


def loss_weight(
    alpha: Tensor, sigma: Tensor, prediction: str, weighting: str = "uniform", gamma: float = 5.0
) -> Tensor:
    """Per-sample factor on the MSE of ``prediction``.

    "uniform" weights the chosen parameterisation's MSE equally; "snr" and "min_snr" are defined
    on the x0-MSE (weight SNR, which is the eps-MSE of Ho et al.; and min(SNR, gamma), Hang et al.
    2023) and converted to the chosen parameterisation using ||e_eps||^2 = SNR ||e_x0||^2,
    ||e_v||^2 = (alpha^2 + sigma^2)^2 / sigma^2 ||e_x0||^2 and ||e_score||^2 = SNR / sigma^2 ||e_x0||^2.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    if weighting == "uniform":
        return torch.ones_like(alpha)
    snr = alpha**2 / sigma**2
    w_x0 = snr if weighting == "snr" else snr.clamp(max=gamma)
    to_native = {
        "x0": torch.ones_like(snr),
        "eps": snr,
        "v": (alpha**2 + sigma**2) ** 2 / sigma**2,
        "score": snr / sigma**2,
    }[prediction]
    return w_x0 / to_native


# ----------------------------------------------------------------------------------------------
# Timestep samplers: sample(batch, generator) -> (t, importance weight)
# ----------------------------------------------------------------------------------------------


def _t_range(schedule: Schedule) -> tuple[float, float]:
    if schedule.discrete:
        return 0.0, float(schedule.num_steps - 1)  # type: ignore[union-attr]
    return float(schedule.t_min), float(schedule.t_max)  # type: ignore[union-attr]


class UniformTimesteps:
    """t uniform over the schedule: integers 0..T-1 (discrete) or U[t_min, t_max] (continuous)."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        lo, hi = _t_range(self.schedule)
        u = rand((batch,), generator, dtype=torch.float64)
        if self.schedule.discrete:
            t = (u * (hi + 1)).floor().clamp(max=hi)
        else:
            t = lo + u * (hi - lo)
        return t, torch.ones(batch, dtype=torch.float64)


class LogNormalTimesteps:
    """EDM's training distribution (Karras et al. 2022, table 1): ln sigma ~ N(p_mean, p_std^2),
    mapped to the schedule's t (clamped to its range)."""

    def __init__(self, schedule: Schedule, p_mean: float = -1.2, p_std: float = 1.2) -> None:
        self.schedule, self.p_mean, self.p_std = schedule, p_mean, p_std

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        sigma = (randn((batch,), generator, dtype=torch.float64) * self.p_std + self.p_mean).exp()
        lo, hi = _t_range(self.schedule)
        t = self.schedule.t_from_sigma(sigma).clamp(lo, hi)
        return t, torch.ones(batch, dtype=torch.float64)


class LossAwareTimesteps:
    """Importance sampling of t by the loss (Nichol & Dhariwal 2021, sec. 3.3).

    p(t) is proportional to sqrt(E[L_t^2]) over the last ``history`` losses seen at each t (or at
    each of ``num_bins`` bins of a continuous schedule), mixed with ``uniform_prob`` of the uniform
    distribution so no t starves. Each draw carries the weight 1 / (K p(t)) (K = T or the number of
    bins), so E_p[w L] = E_uniform[L]: the objective stays unbiased while its variance drops when the
    loss varies strongly with t. Until every t has a full history it samples uniformly.
    """

    def __init__(
        self, schedule: Schedule, num_bins: int | None = None, history: int = 10, uniform_prob: float = 0.001
    ) -> None:
        if schedule.discrete:
            num_bins = schedule.num_steps  # type: ignore[union-attr]
        elif num_bins is None:
            num_bins = 100
        self.schedule, self.num_bins, self.history, self.uniform_prob = (
            schedule,
            num_bins,
            history,
            uniform_prob,
        )
        self.losses = torch.zeros(num_bins, history, dtype=torch.float64)
        self.counts = torch.zeros(num_bins, dtype=torch.long)

    @property
    def warm(self) -> bool:
        return bool((self.counts >= self.history).all())

    def probs(self) -> Tensor:
        k = self.num_bins
        if not self.warm:
            return torch.full((k,), 1.0 / k, dtype=torch.float64)
        w = self.losses.pow(2).mean(1).sqrt()
        p = w / w.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / k

    def _bin(self, t: Tensor) -> Tensor:
        if self.schedule.discrete:
            return t.round().long()
        lo, hi = _t_range(self.schedule)
        return ((t - lo) / (hi - lo) * self.num_bins).long().clamp(0, self.num_bins - 1)

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        p = self.probs()
        idx = torch.multinomial(p, batch, replacement=True, generator=generator)
        weights = 1.0 / (self.num_bins * p[idx])
        if self.schedule.discrete:
            return idx.to(torch.float64), weights
        lo, hi = _t_range(self.schedule)
        u = rand((batch,), generator, dtype=torch.float64)
        return lo + (idx + u) / self.num_bins * (hi - lo), weights

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record per-sample (unweighted) losses at their timesteps."""
        for b, loss in zip(
            self._bin(t.detach().cpu().to(torch.float64)).tolist(), losses.detach().cpu().tolist()
        ):
            row = self.losses[b]
            if self.counts[b] >= self.history:
                self.losses[b] = torch.cat([row[1:], row.new_tensor([loss])])
            else:
                row[self.counts[b]] = loss
            self.counts[b] += 1

    def state_dict(self) -> dict[str, Tensor]:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])


# ----------------------------------------------------------------------------------------------
# Objective
# ----------------------------------------------------------------------------------------------


class LossOutput(NamedTuple):
    loss: Tensor  # (B,) weighted per-sample loss; the training loss is its mean
    mse: Tensor  # (B,) unweighted MSE of the prediction (feeds LossAwareTimesteps.update)
    t: Tensor  # (B,) timesteps used


def diffusion_loss(
    net: Callable[..., Tensor],
    x0: Tensor,
    schedule: Schedule,
    *,
    prediction: str = "eps",
    weighting: str = "uniform",
    min_snr_gamma: float = 5.0,
    t_sampler: UniformTimesteps | LogNormalTimesteps | LossAwareTimesteps | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    self_cond_mask: Tensor | None = None,
    perturbation: Tensor | None = None,
    **cond: Any,
) -> LossOutput:
    """The simple denoising objective E ||net(x_t, t) - target||^2 with a weighting (Ho et al. 2020).

    Args:
        net: called as net(x_t, t * schedule.time_scale, **cond), returns the ``prediction``.
        x0: clean data (B, ...), any rank.
        t: timesteps (B,) to use instead of drawing them from ``t_sampler`` (default uniform).
        self_cond_mask: (B,) bool, for a network that also takes ``self_cond=`` (an x0 estimate in
            data coordinates, shape of x0). Self-conditioning (Chen et al. 2022, "Analog Bits"): a
            first pass without gradient, given zeros, estimates x0; the samples marked True then see
            that estimate (detached), the others zeros. At sampling, ``SelfConditioning`` feeds the
            previous step's estimate. None: the network takes no ``self_cond``.
        perturbation: an offset in data coordinates (shape of x0) added to the clean sample the
            network sees, x_t = alpha (x0 + perturbation) + sigma eps, while the target is the
            prediction that maps this x_t back to the clean x0: the network learns to undo it too.
            Inspired by input perturbation against exposure bias (Ning et al. 2023, who perturb
            with white noise and keep the eps target). Note the scale: in eps or v units the part
            of the target that undoes p is ~ alpha p / sigma, so perturbed samples at low sigma
            weigh far more than the rest under uniform weighting.
    """
    if not torch.isfinite(x0).all():
        raise ValueError("x0 contains NaN or Inf")
    batch = x0.shape[0]
    if t is None:
        t, w_imp = (t_sampler or UniformTimesteps(schedule)).sample(batch, generator)
    else:
        w_imp = torch.ones(batch, dtype=torch.float64)
    noise = randn_like(x0, generator) if noise is None else noise
    alpha, sigma = schedule.alpha_sigma(t)
    if perturbation is not None and perturbation.shape != x0.shape:
        raise ValueError(
            f"perturbation shape {tuple(perturbation.shape)} does not match x0 shape {tuple(x0.shape)}"
        )
    x_t = q_sample(x0 if perturbation is None else x0 + perturbation.to(x0), alpha, sigma, noise)
    t_in = (t * schedule.time_scale).to(device=x0.device, dtype=x0.dtype)
    if self_cond_mask is not None:
        if self_cond_mask.shape != (batch,):
            raise ValueError(f"self_cond_mask must have shape ({batch},), got {tuple(self_cond_mask.shape)}")
        estimate = torch.zeros_like(x0)
        if self_cond_mask.any():
            with torch.no_grad():
                first = net(x_t, t_in, **cond, self_cond=estimate)
                estimate = convert_prediction(first, x_t, alpha, sigma, prediction, "x0")
            estimate = torch.where(append_dims(self_cond_mask.to(x0.device), x0.ndim), estimate, 0.0)
        cond = {**cond, "self_cond": estimate.detach()}
    out = net(x_t, t_in, **cond)
    if out.shape != x0.shape:
        raise ValueError(f"network output shape {tuple(out.shape)} does not match x0 {tuple(x0.shape)}")
    if perturbation is None:
        target = convert_prediction(noise, x_t, alpha, sigma, "eps", prediction)
    else:  # the prediction that maps this x_t back to the clean x0
        target = convert_prediction(x0, x_t, alpha, sigma, "x0", prediction)
    mse = (out - target).pow(2).flatten(1).mean(1)
    w = loss_weight(alpha, sigma, prediction, weighting, min_snr_gamma) * w_imp
    return LossOutput(w.to(mse) * mse, mse.detach(), t)
