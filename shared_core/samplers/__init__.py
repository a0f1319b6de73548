"""Samplers: pure functions ``sample_x(denoiser, x, sigmas, *, extra_args, callback, generator, ...)``.

``x`` starts in VE coordinates at ``sigmas[0]`` (e.g. ``randn * schedule.prior_std(sigmas[0])``),
``sigmas`` is a descending grid (``schedule.sigmas(n)``) and the result is the sample at
``sigmas[-1]`` (the data when it is 0). Every sampler works on tensors of any rank.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from shared_core.samplers.ddim import sample_ddim, sample_euler_ancestral
from shared_core.samplers.ddpm import sample_ddpm
from shared_core.samplers.dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde
from shared_core.samplers.karras import sample_euler, sample_heun
from shared_core.samplers.ode import sample_ode
from shared_core.samplers.sde import sample_annealed_langevin, sample_euler_maruyama, sample_pc
from shared_core.samplers.truncate import sample_until, sdedit

SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "euler": sample_euler,
    "heun": sample_heun,
    "euler_ancestral": sample_euler_ancestral,
    "euler_maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "langevin": sample_annealed_langevin,
    "ode": sample_ode,
}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler registered under ``name``; an unknown name lists the valid ones."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(sorted(SAMPLERS))}") from None


__all__ = [
    "SAMPLERS",
    "get_sampler",
    "sample_annealed_langevin",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_euler_maruyama",
    "sample_heun",
    "sample_ode",
    "sample_pc",
    "sample_until",
    "sdedit",
]
