"""Score-SDE samplers (Song et al. 2021) and annealed Langevin dynamics (Song & Ermon 2019).

The score comes from the denoiser by Tweedie's formula: grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2
in VE coordinates.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from shared_core.denoiser import Denoiser
from shared_core.samplers._common import Callback, Generators, check_inputs, denoise, noise_like, report

PROCESSES = ("ve", "vp")


def _score(denoiser: Denoiser, x: Tensor, s: float, extra_args) -> tuple[Tensor, Tensor]:
    x0 = denoise(denoiser, x, s, extra_args)
    return (x0 - x) / s**2, x0


def _predictor(
    denoiser: Denoiser, x: Tensor, s: float, s_next: float, process: str, extra_args, generator
) -> tuple[Tensor, Tensor]:
    """One reverse-SDE Euler-Maruyama step from s to s_next > 0 (Song et al. 2021, eq. 6)."""
    score, x0 = _score(denoiser, x, s, extra_args)
    if process == "ve":
        # dx = -d[sigma^2] score + sqrt(d[sigma^2]) dw, stepping sigma^2 down by s^2 - s_next^2
        var = s**2 - s_next**2
        return x + var * score + math.sqrt(var) * noise_like(x, generator), x0
    # VP SDE in its own coordinates x_vp = alpha x: dx = [beta/2 x + beta score_vp] dt + sqrt(beta) dw
    # with beta dt = log(alpha_next^2 / alpha^2) over the step (exact in the continuous limit).
    a, a_next = (1 + s**2) ** -0.5, (1 + s_next**2) ** -0.5
    beta_dt = 2 * math.log(a_next / a)
    x_vp = x * a
    score_vp = score / a  # grad wrt x_vp of log p
    x_vp = x_vp + beta_dt * (0.5 * x_vp + score_vp) + math.sqrt(beta_dt) * noise_like(x, generator)
    return x_vp / a_next, x0


@torch.no_grad()
def sample_euler_maruyama(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    process: str = "ve",
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """Euler-Maruyama on the reverse-time VE or VP SDE (Song et al. 2021, eq. 6 and appendix C/G).

    A last step to sigma = 0 returns the denoised estimate (Tweedie), the 'noise removal' step that
    Song et al. apply after their samplers.
    """
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; valid: {', '.join(PROCESSES)}")
    grid = check_inputs(x, sigmas)
    for i in range(len(grid) - 1):
        s, s_next = grid[i], grid[i + 1]
        if s_next == 0:
            x0 = denoise(denoiser, x, s, extra_args)
            x = x0
        else:
            x, x0 = _predictor(denoiser, x, s, s_next, process, extra_args, generator)
        report(callback, i, x, s, s_next, x0)
    return x


def _langevin_step(denoiser: Denoiser, x: Tensor, s: float, snr: float, extra_args, generator) -> Tensor:
    """Langevin corrector with the step set by a target signal-to-noise ratio (Song et al. 2021,
    Alg. 4). As in the authors' implementation the norms are averaged over the batch: per-sample
    norms make the step erratic in low dimensions, where they do not concentrate."""
    score, _ = _score(denoiser, x, s, extra_args)
    z = noise_like(x, generator)
    g_norm = score.flatten(1).norm(dim=1).mean().clamp(min=1e-12)
    z_norm = z.flatten(1).norm(dim=1).mean()
    eps = 2 * (snr * z_norm / g_norm) ** 2
    return x + eps * score + (2 * eps).sqrt() * z


@torch.no_grad()
def sample_pc(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    snr: float = 0.16,
    corrector_steps: int = 1,
    process: str = "ve",
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 1): at each level
    ``corrector_steps`` Langevin steps, then a reverse-SDE Euler-Maruyama predictor step."""
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; valid: {', '.join(PROCESSES)}")
    if corrector_steps < 0 or snr <= 0:
        raise ValueError("corrector_steps must be >= 0 and snr > 0")
    grid = check_inputs(x, sigmas)
    for i in range(len(grid) - 1):
        s, s_next = grid[i], grid[i + 1]
        for _ in range(corrector_steps):
            x = _langevin_step(denoiser, x, s, snr, extra_args, generator)
        if s_next == 0:
            x0 = denoise(denoiser, x, s, extra_args)
            x = x0
        else:
            x, x0 = _predictor(denoiser, x, s, s_next, process, extra_args, generator)
        report(callback, i, x, s, s_next, x0)
    return x


@torch.no_grad()
def sample_annealed_langevin(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    steps_per_level: int = 100,
    step_lr: float | None = None,
    final_denoise: bool = True,
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """Annealed Langevin dynamics (NCSN; Song & Ermon 2019, Algorithm 1).

    For each positive level sigma_i: ``steps_per_level`` steps x += a_i/2 score + sqrt(a_i) z with
    a_i = step_lr sigma_i^2 / sigma_L^2. ``final_denoise`` then returns D(x, sigma_L), the
    denoising step of Jolicoeur-Martineau et al. 2021. Trailing zeros in ``sigmas`` are ignored.
    The default step_lr = 0.2 sigma_L^2 is NCSN's 2e-5 at its sigma_L = 0.01, carried to any grid.
    """
    grid = check_inputs(x, sigmas)
    levels = [s for s in grid if s > 0]
    last = levels[-1]
    step_lr = 0.2 * last**2 if step_lr is None else step_lr
    if steps_per_level < 1 or step_lr <= 0:
        raise ValueError("steps_per_level must be >= 1 and step_lr > 0")
    # a_i / sigma_i^2 = step_lr / sigma_L^2 at every level; past ~4 the chain diverges even on a Gaussian
    if step_lr > 4 * last**2:
        raise ValueError(
            f"step_lr {step_lr:g} is unstable for sigma_min {last:g}: need step_lr <= 4 sigma_min^2"
        )
    for i, s in enumerate(levels):
        a = step_lr * s**2 / last**2
        for _ in range(steps_per_level):
            score, x0 = _score(denoiser, x, s, extra_args)
            x = x + a / 2 * score + math.sqrt(a) * noise_like(x, generator)
        report(callback, i, x, s, levels[i + 1] if i + 1 < len(levels) else last, x0)
    return denoise(denoiser, x, last, extra_args) if final_denoise else x
