"""Adaptive probability-flow ODE sampling (Song et al. 2021, sec. 4.3) with torchdiffeq."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchdiffeq import odeint

from shared_core.denoiser import Denoiser
from shared_core.samplers._common import Callback, Generators, check_inputs, denoise, report


@torch.no_grad()
def sample_ode(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    extra_args: dict[str, Any] | None = None,
    callback: Callback | None = None,
    generator: Generators = None,
) -> Tensor:
    """Solve the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022,
    eq. 3) from sigmas[0] to the smallest positive level with an adaptive Runge-Kutta solver
    (Dormand-Prince by default); only the end points of ``sigmas`` matter. We integrate in
    u = log sigma, where dx/du = x - D(x, e^u): the step-size control then sees an equally hard
    problem at every noise level instead of one that stiffens as sigma -> 0. A final 0 takes the
    denoised estimate there. ``callback`` is called per function evaluation (``i`` counts them)."""
    grid = check_inputs(x, sigmas)
    positive = [s for s in grid if s > 0]
    s_start, s_end = positive[0], positive[-1]
    nfe = [0]

    def f(u: Tensor, y: Tensor) -> Tensor:
        s = math.exp(float(u))
        x0 = denoise(denoiser, y, s, extra_args)
        report(callback, nfe[0], y, s, s_end, x0)
        nfe[0] += 1
        return y - x0

    if s_end < s_start:
        ts = torch.tensor([math.log(s_start), math.log(s_end)], dtype=x.dtype, device=x.device)
        x = odeint(f, x, ts, rtol=rtol, atol=atol, method=method)[-1]
    if grid[-1] == 0:
        x = denoise(denoiser, x, s_end, extra_args)
    return x
