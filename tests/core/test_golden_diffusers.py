"""Golden parity with diffusers' schedulers: the same dummy network, the same initial noise and
the same injected noise must give the same sample to <= 1e-5 relative error."""

from __future__ import annotations

import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from shared_core.denoiser import NetworkDenoiser  # noqa: E402
from shared_core.random import make_generator, randn  # noqa: E402
from shared_core.samplers import (  # noqa: E402
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
)
from shared_core.schedules import DiscreteSchedule  # noqa: E402

SCHEDULES = {
    "linear": dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "cosine": dict(beta_schedule="squaredcos_cap_v2"),
}
OURS = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "cosine"}
SHAPE = (2, 3, 4, 4)


def dummy_net(x: torch.Tensor, t: torch.Tensor | float, channels: int = 1) -> torch.Tensor:
    """A fixed smooth function of (x, t) standing in for a trained eps-network."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, *([1] * (x.ndim - 1)))
    eps = 0.4 * x + 0.2 * torch.sin(3 * x) * torch.cos(t / 300) + 0.05 * (t / 1000)
    if channels == 2:  # learned-range variance channels in [-1, 1]
        return torch.cat([eps, torch.tanh(x + t / 1000 - 0.5)], dim=1)
    return eps


def schedule_for(name: str, interpolation: str = "linear") -> DiscreteSchedule:
    kw = SCHEDULES[name]
    return DiscreteSchedule.from_name(
        OURS[name], 1000, kw.get("beta_start", 1e-4), kw.get("beta_end", 0.02), interpolation=interpolation
    )


def shared_table(sched, interpolation: str = "linear") -> DiscreteSchedule:
    """Our schedule on diffusers' float32 alpha_bar table: diffusers accumulates alpha_bar in float32,
    which moves sigma near t = 0 by ~1e-4 relative; sharing the table isolates the samplers' math."""
    return DiscreteSchedule.from_alphas_cumprod(sched.alphas_cumprod, interpolation)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_tables_match(name: str) -> None:
    ref = diffusers.DDPMScheduler(**SCHEDULES[name]).alphas_cumprod.double()
    ours = schedule_for(name).alphas_cumprod
    assert torch.allclose(ours, ref, rtol=2e-5, atol=0)


def run_diffusers(sched, n: int, x_init: torch.Tensor, seed: int = 0, channels: int = 1) -> torch.Tensor:
    sched.set_timesteps(n)
    x = x_init * sched.init_noise_sigma
    g = make_generator(seed)
    for t in sched.timesteps:
        out = dummy_net(sched.scale_model_input(x, t), t.expand(x.shape[0]), channels)
        kw = {"generator": g} if "generator" in inspect.signature(sched.step).parameters else {}
        x = sched.step(out, t, x, **kw).prev_sample
    return x


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
@pytest.mark.parametrize("n", [10, 25])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim(schedule: str, n: int, spacing: str) -> None:
    sched = diffusers.DDIMScheduler(**SCHEDULES[schedule], clip_sample=False, timestep_spacing=spacing)
    ours = shared_table(sched)
    sched.set_timesteps(n)
    assert torch.equal(sched.timesteps.double(), ours.timesteps(n, spacing))
    z = randn(SHAPE, make_generator(1))
    ref = run_diffusers(sched, n, z)
    sigmas = ours.sigmas(n, spacing)
    out = sample_ddim(NetworkDenoiser(dummy_net, ours), z * ours.prior_std(sigmas[0]).float(), sigmas)
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_eta_clip_and_sigma_min_final(schedule: str) -> None:
    """DDIM with eta > 0 (same injected noise), clip_sample and set_alpha_to_one=False.

    Clipping lives in our denoiser, so the DDIM update uses the eps implied by the clipped x0:
    diffusers' ``use_clipped_model_output=True``. (Its default pairs the clipped x0 with the raw eps,
    an update that no denoiser produces.)"""
    n = 20
    sched = diffusers.DDIMScheduler(
        **SCHEDULES[schedule], clip_sample=True, set_alpha_to_one=False, timestep_spacing="trailing"
    )
    ours = shared_table(sched)
    z = randn(SHAPE, make_generator(2))
    sched.set_timesteps(n)
    x, g = z.clone(), make_generator(5)
    for t in sched.timesteps:
        out = dummy_net(x, t.expand(2))
        x = sched.step(out, t, x, eta=0.5, generator=g, use_clipped_model_output=True).prev_sample
    sigmas = ours.sigmas(n, "trailing", final="min")
    den = NetworkDenoiser(dummy_net, ours, clip_x0=1.0)
    out = sample_ddim(
        den, z * ours.prior_std(sigmas[0]).float(), sigmas, eta=0.5, generator=make_generator(5)
    )
    alpha_last = (1 + sigmas[-1] ** 2).rsqrt().float()  # ours ends in VE coordinates at sigma(t=0)
    assert rel_err(out * alpha_last, x) <= 1e-5


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("n", [10, 50])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm(schedule: str, n: int, variance: str) -> None:
    sched = diffusers.DDPMScheduler(**SCHEDULES[schedule], clip_sample=False, variance_type=variance)
    ours = shared_table(sched)
    z = randn(SHAPE, make_generator(3))
    channels = 2 if variance == "learned_range" else 1
    ref = run_diffusers(sched, n, z, seed=7, channels=channels)
    sigmas = ours.sigmas(n, "leading")
    learned = variance == "learned_range"
    den = NetworkDenoiser(
        lambda x, t: dummy_net(x, t, channels), ours, learned_variance=learned, return_variance=learned
    )
    out = sample_ddpm(
        den, z * ours.prior_std(sigmas[0]).float(), sigmas, variance=variance, generator=make_generator(7)
    )
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
@pytest.mark.parametrize("n", [10, 25])
@pytest.mark.parametrize("karras", [False, True])
def test_dpmpp_2m(schedule: str, n: int, karras: bool) -> None:
    sched = diffusers.DPMSolverMultistepScheduler(
        **SCHEDULES[schedule],
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="trailing",
        use_karras_sigmas=karras,
    )
    # diffusers maps Karras sigmas to steps by log-sigma interpolation, then rounds them
    ours = shared_table(sched, "log" if karras else "linear")
    z = randn(SHAPE, make_generator(4))
    ref = run_diffusers(sched, n, z)
    sigmas = ours.sigmas(n, "trailing", karras=karras)
    assert torch.allclose(sigmas.float(), sched.sigmas, rtol=1e-5)
    den = NetworkDenoiser(dummy_net, ours, quantize=karras)
    out = sample_dpmpp_2m(den, z * ours.prior_std(sigmas[0]).float(), sigmas)
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
@pytest.mark.parametrize("n", [10, 25])
@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("method", ["euler", "heun"])
def test_euler_heun(schedule: str, n: int, karras: bool, method: str) -> None:
    cls = diffusers.EulerDiscreteScheduler if method == "euler" else diffusers.HeunDiscreteScheduler
    sched = cls(**SCHEDULES[schedule], use_karras_sigmas=karras)
    ours = shared_table(sched, "log" if karras else "linear")
    sched.set_timesteps(n)
    if not karras:
        assert torch.allclose(
            sched.timesteps.double()[:: 2 if method == "heun" else 1][:n], ours.timesteps(n, "linspace")
        )
    z = randn(SHAPE, make_generator(5))
    ref = run_diffusers(sched, n, z)
    sigmas = ours.sigmas(n, "linspace", karras=karras)
    x = z * float(sched.init_noise_sigma)
    fn = sample_euler if method == "euler" else sample_heun
    out = fn(NetworkDenoiser(dummy_net, ours), x, sigmas)
    assert rel_err(out, ref) <= 1e-5
