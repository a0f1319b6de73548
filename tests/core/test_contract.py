"""The contract every sampler and schedule passes: any rank, determinism under a seed, no NaN at
the extremes of the schedule, and clear errors for bad input."""

from __future__ import annotations

import pytest
import torch

from shared_core.random import make_generator, randn
from shared_core.samplers import SAMPLERS, get_sampler
from shared_core.schedules import DiscreteSchedule, VESchedule, VPSchedule, get_schedule, karras_sigmas
from shared_core.toy import IsotropicGaussian

GAUSS = IsotropicGaussian(0.2, 0.7)
SCHEDULES = {
    "linear": DiscreteSchedule.from_name("linear"),
    "scaled_linear": DiscreteSchedule.from_name("scaled_linear", beta_start=0.00085, beta_end=0.012),
    "cosine": DiscreteSchedule.from_name("cosine"),
    "sigmoid": DiscreteSchedule.from_name("sigmoid"),
    "zero_snr": DiscreteSchedule.from_name("linear", zero_terminal_snr=True),
    "vp_linear": VPSchedule("linear"),
    "vp_cosine": VPSchedule("cosine"),
    "ve": VESchedule(0.01, 80.0),
}


def _kwargs(name: str, sigmas: torch.Tensor) -> dict:
    if name == "langevin":
        return {"steps_per_level": 2}
    return {}


def _run(name: str, schedule, shape: tuple[int, ...], steps: int = 5, seed: int = 0) -> torch.Tensor:
    sigmas = schedule.sigmas(steps)
    x = randn(shape, make_generator(seed)) * schedule.prior_std(sigmas[0]).float()
    return get_sampler(name)(
        GAUSS.denoiser, x, sigmas, generator=make_generator(seed + 1), **_kwargs(name, sigmas)
    )


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize(
    "shape", [(4, 3), (4, 2, 3), (2, 3, 4, 4), (2, 2, 3, 4, 4)], ids=lambda s: f"rank{len(s)}"
)
def test_any_rank_and_deterministic(name: str, shape: tuple[int, ...]) -> None:
    a = _run(name, SCHEDULES["linear"], shape)
    b = _run(name, SCHEDULES["linear"], shape)
    assert a.shape == shape
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_schedule_no_nan(name: str, schedule: str) -> None:
    out = _run(name, SCHEDULES[schedule], (3, 2, 4))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["ddpm", "euler_ancestral", "dpmpp_2m_sde", "euler_maruyama", "pc"])
def test_generator_drives_stochastic_samplers(name: str) -> None:
    sigmas = SCHEDULES["linear"].sigmas(5)
    x = randn((4, 3), make_generator(0)) * SCHEDULES["linear"].prior_std(sigmas[0]).float()
    a = get_sampler(name)(GAUSS.denoiser, x, sigmas, generator=make_generator(1))
    b = get_sampler(name)(GAUSS.denoiser, x, sigmas, generator=make_generator(2))
    assert not torch.equal(a, b)


def test_callback_sees_every_step() -> None:
    seen = []
    sigmas = SCHEDULES["linear"].sigmas(7)
    get_sampler("heun")(GAUSS.denoiser, torch.zeros(2, 3), sigmas, callback=lambda d: seen.append(d["i"]))
    assert seen == list(range(7))


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"valid: .*ddim.*dpmpp_2m"):
        get_sampler("dpm++")
    with pytest.raises(ValueError, match="valid: linear, scaled_linear, cosine"):
        get_schedule("quadratic")


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_bad_sigmas_and_inputs(name: str) -> None:
    fn = get_sampler(name)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="sigmas must be strictly decreasing"):
        fn(GAUSS.denoiser, x, torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="sigmas must hold at least 2"):
        fn(GAUSS.denoiser, x, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="sigmas contains NaN"):
        fn(GAUSS.denoiser, x, torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match="x contains NaN"):
        fn(GAUSS.denoiser, torch.full((2, 3), float("inf")), torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(ValueError, match="denoiser returned shape"):
        fn(lambda x, s: x[:, :1], x, torch.tensor([1.0, 0.5, 0.0]))


def test_langevin_rejects_unstable_step() -> None:
    with pytest.raises(ValueError, match=r"step_lr .* is unstable"):
        get_sampler("langevin")(GAUSS.denoiser, torch.zeros(2, 3), torch.tensor([1.0, 0.1, 0.0]), step_lr=0.1)


def test_steps_below_one() -> None:
    for sched in SCHEDULES.values():
        with pytest.raises(ValueError, match="steps must be >= 1"):
            sched.sigmas(0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        karras_sigmas(0, 0.1, 10.0)
