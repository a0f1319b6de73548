"""Noise schedules, all reduced to one representation.

Every schedule describes a Gaussian forward process x_t = alpha_t x_0 + s_t eps in its own
coordinates (variance preserving: alpha_t^2 + s_t^2 = 1; variance exploding: alpha_t = 1). What the
samplers consume is the *VE noise level* sigma = s_t / alpha_t = exp(-logSNR / 2): in the scaled
coordinates x / alpha_t every such process is x_0 + sigma eps (Karras et al. 2022, sec. 2), so one
sampler runs with any schedule. A schedule therefore provides

* ``alpha_sigma(t)``   -> (alpha_t, s_t) in its native coordinates (what a network is trained on),
* ``sigma(t)``         -> the VE noise level, ``log_snr(t)`` = -2 log sigma,
* ``t_from_sigma(s)``  -> the inverse, so a network conditioned on t can be called at any sigma,
* ``sigmas(n, ...)``   -> a descending sampling grid of n + 1 levels ending in 0.

Discrete (DDPM-style) schedules index t by integers 0..T-1; continuous ones take t in (0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "BETA_SCHEDULES",
    "SCHEDULE_NAMES",
    "SPACINGS",
    "DiscreteSchedule",
    "Schedule",
    "VESchedule",
    "VPSchedule",
    "get_schedule",
    "karras_sigmas",
    "make_betas",
    "rescale_zero_terminal_snr",
]

BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
SPACINGS = ("leading", "trailing", "linspace")

# Zero terminal SNR means alpha_T = 0, i.e. sigma_T = inf, which no sampler can start from. As in
# diffusers' Euler scheduler we clamp alpha_T^2 to 2^-24 (sigma_T ~ 4096): x_T is then pure noise
# to within 2^-12 of signal.
_ZERO_SNR_ALPHA_BAR = 2.0**-24


def _as_tensor(t: Tensor | float | int) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# Beta schedules (discrete)
# ----------------------------------------------------------------------------------------------


def make_betas(
    name: str,
    num_steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    max_beta: float = 0.999,
) -> Tensor:
    """Betas of a discrete schedule, float64, shape (num_steps,).

    Args:
        name: "linear" (Ho et al. 2020), "scaled_linear" (linear in sqrt(beta), Stable Diffusion),
            "cosine" (Nichol & Dhariwal 2021, eq. 17, s = 0.008, betas clipped at ``max_beta``) or
            "sigmoid" (GeoDiff: sigmoid over [-6, 6] rescaled to [beta_start, beta_end]).
        num_steps: T, the number of training steps.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if name == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if name == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    if name == "cosine":
        s = 0.008
        i = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        alpha_bar = torch.cos((i + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
    if name == "sigmoid":
        x = torch.linspace(-6, 6, num_steps, dtype=torch.float64)
        return torch.sigmoid(x) * (beta_end - beta_start) + beta_start
    raise ValueError(f"unknown beta schedule {name!r}; valid: {', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Rescale betas so the last step has zero SNR (Lin et al. 2024, Algorithm 1)."""
    sqrt_ab = torch.cumprod(1 - betas, 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)  # shift so the end is 0, keep the start
    alpha_bar = sqrt_ab**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 (eq. 5) spacing: n levels from sigma_max to sigma_min, then a final 0.

    Returns:
        float64 tensor (n + 1,).
    """
    if n < 1:
        raise ValueError(f"steps must be >= 1, got {n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DiscreteSchedule:
    """A DDPM-style variance-preserving schedule of T steps, defined by its betas.

    Fractional t (needed for Karras grids or Euler's linspace grid) maps to sigma by linear
    interpolation between neighbouring steps, either in sigma ("linear", diffusers' default) or in
    log sigma ("log", k-diffusion's and diffusers' ``_sigma_to_t``); ``t_from_sigma`` inverts the
    same map, so (t -> sigma -> t) round-trips exactly.
    """

    betas: Tensor
    interpolation: str = "linear"
    alphas_cumprod: Tensor = field(init=False, repr=False)
    all_sigmas: Tensor = field(init=False, repr=False)

    variance_preserving = True
    discrete = True
    time_scale = 1.0  # the network sees t in [0, T-1]

    def __post_init__(self) -> None:
        betas = self.betas.to(torch.float64)
        if betas.ndim != 1 or len(betas) < 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a non-empty 1-D tensor with values in (0, 1]")
        if self.interpolation not in ("linear", "log"):
            raise ValueError(f"interpolation must be 'linear' or 'log', got {self.interpolation!r}")
        alpha_bar = torch.cumprod(1 - betas, 0)
        alpha_bar = torch.where(alpha_bar <= 0, torch.full_like(alpha_bar, _ZERO_SNR_ALPHA_BAR), alpha_bar)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", alpha_bar)
        object.__setattr__(self, "all_sigmas", ((1 - alpha_bar) / alpha_bar).sqrt())

    @classmethod
    def from_name(
        cls,
        name: str = "linear",
        num_steps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        zero_terminal_snr: bool = False,
        interpolation: str = "linear",
    ) -> DiscreteSchedule:
        betas = make_betas(name, num_steps, beta_start, beta_end)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        return cls(betas, interpolation)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor, interpolation: str = "linear") -> DiscreteSchedule:
        """Build from alpha_bar_t (e.g. another library's table, to share its exact rounding)."""
        ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        betas = 1 - torch.cat([ab[:1], ab[1:] / ab[:-1]])
        return cls(betas, interpolation)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def sigma_min(self) -> float:
        return float(self.all_sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.all_sigmas[-1])

    def sigma(self, t: Tensor | float) -> Tensor:
        """VE noise level at (possibly fractional) step t in [0, T-1]."""
        t = _as_tensor(t).to(torch.float64).clamp(0, self.num_steps - 1)
        lo = t.floor().long().clamp(max=self.num_steps - 2) if self.num_steps > 1 else t.long()
        if self.num_steps == 1:
            return self.all_sigmas[0].expand_as(t).clone()
        w = t - lo
        table = self.all_sigmas if self.interpolation == "linear" else self.all_sigmas.log()
        out = table[lo] * (1 - w) + table[lo + 1] * w
        return out if self.interpolation == "linear" else out.exp()

    def t_from_sigma(self, sigma: Tensor, quantize: bool = False) -> Tensor:
        """Inverse of ``sigma`` (clamped to [0, T-1]); ``quantize`` rounds to the nearest step in
        log sigma (a network trained on integer steps, as k-diffusion's ``quantize=True``)."""
        sigma = _as_tensor(sigma)
        s = sigma.to(torch.float64)
        table = self.all_sigmas
        if quantize:
            dists = s.clamp(min=1e-30).log().unsqueeze(-1) - table.log()
            return dists.abs().argmin(-1).to(sigma.dtype)
        if self.interpolation == "log":
            table, s = table.log(), s.clamp(min=1e-30).log()
        idx = torch.searchsorted(table, s.contiguous()).clamp(1, self.num_steps - 1)
        lo, hi = table[idx - 1], table[idx]
        w = ((s - lo) / (hi - lo)).clamp(0, 1)
        t = (idx - 1).to(torch.float64) + w
        return t.to(sigma.dtype) if sigma.is_floating_point() else t

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) at step t."""
        sigma = self.sigma(t)
        alpha = (1 + sigma**2).rsqrt()
        return alpha, sigma * alpha

    def log_snr(self, t: Tensor | float) -> Tensor:
        return -2 * self.sigma(t).log()

    def timesteps(
        self, n: int, spacing: str = "trailing", offset: int = 0, round_linspace: bool = False
    ) -> Tensor:
        """Descending sampling timesteps (float64, length n). The default, "trailing", starts at the
        last training step, so the first level is the schedule's sigma_max (Lin et al. 2024); diffusers'
        DDIM default "leading" starts lower and is kept for parity.

        "leading": 0, k, 2k, ... with k = T // n, plus ``offset`` (DDIM paper / diffusers' default
        for DDIM, which never visits t = T-1); "trailing": T-1 downwards in steps of T / n (Lin et
        al. 2024, table 2: starts at the last step, so zero-SNR schedules start from pure noise);
        "linspace": n evenly spaced (fractional) steps from T-1 to 0, rounded if ``round_linspace``.
        """
        T = self.num_steps
        if n < 1:
            raise ValueError(f"steps must be >= 1, got {n}")
        if n > T:
            raise ValueError(f"steps ({n}) cannot exceed the schedule's {T} training steps")
        if spacing == "leading":
            ts = torch.arange(n, dtype=torch.float64) * (T // n) + offset
        elif spacing == "trailing":
            ts = torch.arange(T, 0, -T / n, dtype=torch.float64).round() - 1
        elif spacing == "linspace":
            ts = torch.linspace(0, T - 1, n, dtype=torch.float64)
            ts = ts.round() if round_linspace else ts
        else:
            raise ValueError(f"unknown timestep spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
        return ts.flip(0) if spacing != "trailing" else ts

    def sigmas(
        self,
        n: int,
        spacing: str = "trailing",
        *,
        karras: bool = False,
        rho: float = 7.0,
        final: str = "zero",
        offset: int = 0,
        round_linspace: bool = False,
    ) -> Tensor:
        """A descending sampling grid: n VE levels plus a final level (0, or sigma at t=0).

        ``final="min"`` ends at sigma(t=0) instead of 0 (diffusers' ``set_alpha_to_one=False`` /
        ``final_sigmas_type="sigma_min"``); the sample is then returned at that noise level.
        """
        if karras:
            body = karras_sigmas(n, self.sigma_min, self.sigma_max, rho)[:-1]
        else:
            body = self.sigma(self.timesteps(n, spacing, offset, round_linspace))
        if final == "zero":
            last = body.new_zeros(1)
        elif final == "min":
            last = body.new_full((1,), self.sigma_min)
        else:
            raise ValueError(f"final must be 'zero' or 'min', got {final!r}")
        return torch.cat([body, last])

    def prior_std(self, sigma: Tensor | float) -> Tensor:
        """Std of x_T in VE coordinates: x_T ~ N(0, 1) in VP coordinates, divided by alpha_T."""
        return (1 + _as_tensor(sigma) ** 2).sqrt()


@dataclass(frozen=True, eq=False)
class VPSchedule:
    """Continuous-time variance-preserving process (Song et al. 2021), t in [t_min, t_max].

    kind "linear": beta(t) = beta_min + t (beta_max - beta_min), so
    log alpha_t = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2 (Song et al. eq. 33).
    kind "cosine": alpha_t = cos((t + s) / (1 + s) pi/2) / cos(s / (1 + s) pi/2) (Nichol & Dhariwal).
    """

    kind: str = "linear"
    beta_min: float = 0.1
    beta_max: float = 20.0
    cosine_s: float = 0.008
    t_min: float = 1e-3
    t_max: float = 1.0

    variance_preserving = True
    discrete = False
    time_scale = 1000.0  # the network sees 1000 t, the range its timestep embedding is made for

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"VP kind must be 'linear' or 'cosine', got {self.kind!r}")
        if self.kind == "cosine" and self.t_max >= 1.0:
            object.__setattr__(self, "t_max", 0.999)  # alpha(1) = 0 exactly: sigma would be inf

    def _log_alpha(self, t: Tensor) -> Tensor:
        if self.kind == "linear":
            return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        s = self.cosine_s
        return torch.log(torch.cos((t + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2))

    def sigma(self, t: Tensor | float) -> Tensor:
        t = _as_tensor(t).to(torch.float64)
        return torch.expm1(-2 * self._log_alpha(t)).sqrt()

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        alpha = self._log_alpha(_as_tensor(t).to(torch.float64)).exp()
        return alpha, (1 - alpha**2).clamp(min=0).sqrt()

    def log_snr(self, t: Tensor | float) -> Tensor:
        return -2 * self.sigma(t).log()

    def t_from_sigma(self, sigma: Tensor, quantize: bool = False) -> Tensor:
        sigma = _as_tensor(sigma)
        log1p = torch.log1p(sigma.to(torch.float64) ** 2)  # = -2 log alpha
        if self.kind == "linear":
            d = self.beta_max - self.beta_min
            t = (-self.beta_min + (self.beta_min**2 + 2 * d * log1p).sqrt()) / d
        else:
            s = self.cosine_s
            c = torch.exp(-0.5 * log1p) * math.cos(s / (1 + s) * math.pi / 2)
            t = torch.acos(c.clamp(-1, 1)) * 2 / math.pi * (1 + s) - s
        return t.to(sigma.dtype) if sigma.is_floating_point() else t

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(self.t_min))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(self.t_max))

    def timesteps(self, n: int) -> Tensor:
        if n < 1:
            raise ValueError(f"steps must be >= 1, got {n}")
        return torch.linspace(self.t_max, self.t_min, n, dtype=torch.float64)

    def sigmas(self, n: int, *, karras: bool = False, rho: float = 7.0) -> Tensor:
        if karras:
            return karras_sigmas(n, self.sigma_min, self.sigma_max, rho)
        return torch.cat([self.sigma(self.timesteps(n)), torch.zeros(1, dtype=torch.float64)])

    def prior_std(self, sigma: Tensor | float) -> Tensor:
        return (1 + _as_tensor(sigma) ** 2).sqrt()


@dataclass(frozen=True, eq=False)
class VESchedule:
    """Continuous-time variance-exploding process (Song et al. 2021): alpha = 1,
    sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1]."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    variance_preserving = False
    discrete = False
    time_scale = 1000.0

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    t_min = 0.0
    t_max = 1.0

    def sigma(self, t: Tensor | float) -> Tensor:
        t = _as_tensor(t).to(torch.float64)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        sigma = self.sigma(t)
        return torch.ones_like(sigma), sigma

    def log_snr(self, t: Tensor | float) -> Tensor:
        return -2 * self.sigma(t).log()

    def t_from_sigma(self, sigma: Tensor, quantize: bool = False) -> Tensor:
        sigma = _as_tensor(sigma)
        t = torch.log(sigma.to(torch.float64).clamp(min=1e-30) / self.sigma_min) / math.log(
            self.sigma_max / self.sigma_min
        )
        return t.to(sigma.dtype) if sigma.is_floating_point() else t

    def timesteps(self, n: int) -> Tensor:
        if n < 1:
            raise ValueError(f"steps must be >= 1, got {n}")
        return torch.linspace(1.0, 0.0, n, dtype=torch.float64)

    def sigmas(self, n: int, *, karras: bool = False, rho: float = 7.0) -> Tensor:
        if karras:
            return karras_sigmas(n, self.sigma_min, self.sigma_max, rho)
        return torch.cat([self.sigma(self.timesteps(n)), torch.zeros(1, dtype=torch.float64)])

    def prior_std(self, sigma: Tensor | float) -> Tensor:
        return _as_tensor(sigma).clone()


Schedule = DiscreteSchedule | VPSchedule | VESchedule

SCHEDULE_NAMES = (*BETA_SCHEDULES, "vp_linear", "vp_cosine", "ve")


def get_schedule(name: str, **kwargs: object) -> Schedule:
    """Build a schedule by name: a discrete beta schedule (``linear``, ``scaled_linear``,
    ``cosine``, ``sigmoid``; kwargs as ``DiscreteSchedule.from_name``), ``vp_linear``,
    ``vp_cosine`` or ``ve`` (kwargs of ``VPSchedule`` / ``VESchedule``)."""
    if name in BETA_SCHEDULES:
        return DiscreteSchedule.from_name(name, **kwargs)  # type: ignore[arg-type]
    if name in ("vp_linear", "vp_cosine"):
        return VPSchedule(kind=name[3:], **kwargs)  # type: ignore[arg-type]
    if name == "ve":
        return VESchedule(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULE_NAMES)}")
