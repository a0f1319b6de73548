"""Schedules, the forward process, parameterisations, loss weightings and timestep samplers."""

from __future__ import annotations

import math

import pytest
import torch

from shared_core.diffusion import (
    PREDICTIONS,
    LogNormalTimesteps,
    LossAwareTimesteps,
    UniformTimesteps,
    convert_prediction,
    diffusion_loss,
    loss_weight,
    q_posterior,
    q_sample,
)
from shared_core.random import make_generator, randn
from shared_core.schedules import (
    DiscreteSchedule,
    VESchedule,
    VPSchedule,
    karras_sigmas,
    make_betas,
    rescale_zero_terminal_snr,
)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine", "sigmoid"])
def test_beta_schedules_valid(name: str) -> None:
    b = make_betas(name, 1000)
    assert b.shape == (1000,) and (b > 0).all() and (b <= 0.999).all()
    s = DiscreteSchedule(b)
    assert (s.all_sigmas[1:] > s.all_sigmas[:-1]).all()  # noise grows with t


def test_zero_terminal_snr() -> None:
    b = rescale_zero_terminal_snr(make_betas("linear"))
    ab = torch.cumprod(1 - b, 0)
    assert ab[-1].abs() < 1e-12
    assert torch.allclose(ab[0], torch.cumprod(1 - make_betas("linear"), 0)[0])
    s = DiscreteSchedule(b)
    assert math.isfinite(s.sigma_max) and s.sigma_max > 4000  # clamped, documented


@pytest.mark.parametrize(
    "schedule",
    [
        DiscreteSchedule.from_name("cosine", interpolation="log"),
        DiscreteSchedule.from_name("linear"),
        VPSchedule("linear"),
        VPSchedule("cosine"),
        VESchedule(),
    ],
)
def test_t_sigma_roundtrip_and_alpha_sigma(schedule) -> None:
    lo, hi = (0.0, 999.0) if schedule.discrete else (schedule.t_min, schedule.t_max)
    t = torch.linspace(lo, hi, 37, dtype=torch.float64)
    assert torch.allclose(schedule.t_from_sigma(schedule.sigma(t)), t, atol=1e-6 * max(hi, 1))
    a, s = schedule.alpha_sigma(t)
    assert torch.allclose(s / a, schedule.sigma(t), rtol=1e-9)
    assert torch.allclose(schedule.log_snr(t), 2 * (a / s).log(), atol=1e-9)
    if schedule.variance_preserving:
        assert torch.allclose(a**2 + s**2, torch.ones_like(a))


def test_karras_endpoints() -> None:
    s = karras_sigmas(10, 0.002, 80.0)
    assert s.shape == (11,) and s[-1] == 0
    assert math.isclose(s[0], 80.0) and math.isclose(s[-2], 0.002, rel_tol=1e-9)


@pytest.mark.parametrize("vp", [True, False])
def test_prediction_conversions_exact(vp: bool) -> None:
    g = make_generator(0)
    x0, eps = randn((5, 3, 2), g, dtype=torch.float64), randn((5, 3, 2), g, dtype=torch.float64)
    sigma = torch.rand(5, generator=g, dtype=torch.float64) * 2 + 0.05
    alpha = (1 - sigma.clamp(max=0.99) ** 2).sqrt() if vp else torch.ones(5, dtype=torch.float64)
    sigma = sigma.clamp(max=0.99) if vp else sigma
    x_t = q_sample(x0, alpha, sigma, eps)
    truth = {"x0": x0, "eps": eps}
    truth["v"] = convert_prediction(eps, x_t, alpha, sigma, "eps", "v")
    truth["score"] = -eps / sigma.reshape(-1, 1, 1)
    for src in PREDICTIONS:
        for dst in PREDICTIONS:
            out = convert_prediction(truth[src], x_t, alpha, sigma, src, dst)
            assert torch.allclose(out, truth[dst], atol=1e-10), (src, dst)
    if vp:  # Salimans & Ho: v = alpha eps - sigma x0
        assert torch.allclose(truth["v"], alpha.reshape(-1, 1, 1) * eps - sigma.reshape(-1, 1, 1) * x0)


def test_posterior_matches_ddpm_eq7() -> None:
    s = DiscreteSchedule.from_name("linear")
    ab, betas = s.alphas_cumprod, s.betas
    t = torch.tensor([1, 10, 500, 999])
    g = make_generator(1)
    x0, x_t = randn((4, 3), g, dtype=torch.float64), randn((4, 3), g, dtype=torch.float64)
    a_t, s_t = ab[t].sqrt(), (1 - ab[t]).sqrt()
    a_p, s_p = ab[t - 1].sqrt(), (1 - ab[t - 1]).sqrt()
    mean, var = q_posterior(x0, x_t, a_t, s_t, a_p, s_p)
    coef0 = (ab[t - 1].sqrt() * betas[t] / (1 - ab[t]))[:, None]
    coeft = ((1 - betas[t]).sqrt() * (1 - ab[t - 1]) / (1 - ab[t]))[:, None]
    assert torch.allclose(mean, coef0 * x0 + coeft * x_t)
    assert torch.allclose(var.squeeze(1), betas[t] * (1 - ab[t - 1]) / (1 - ab[t]))


def test_loss_weights_consistent_across_parameterisations() -> None:
    """The same estimate weighted by min-SNR gives the same loss whatever the parameterisation."""
    g = make_generator(2)
    x0, eps = randn((6, 4), g, dtype=torch.float64), randn((6, 4), g, dtype=torch.float64)
    sigma = torch.linspace(0.05, 0.99, 6, dtype=torch.float64)
    alpha = (1 - sigma**2).sqrt()
    x_t = q_sample(x0, alpha, sigma, eps)
    x0_hat = x0 + 0.1 * randn((6, 4), g, dtype=torch.float64)
    losses = []
    for p in ("x0", "eps", "v"):
        pred = convert_prediction(x0_hat, x_t, alpha, sigma, "x0", p)
        target = convert_prediction(x0, x_t, alpha, sigma, "x0", p)
        losses.append(loss_weight(alpha, sigma, p, "min_snr", 5.0) * (pred - target).pow(2).mean(1))
    assert torch.allclose(losses[0], losses[1]) and torch.allclose(losses[0], losses[2])
    snr = alpha**2 / sigma**2
    assert torch.allclose(loss_weight(alpha, sigma, "eps", "min_snr", 5.0), snr.clamp(max=5) / snr)
    with pytest.raises(ValueError, match="valid: uniform, snr, min_snr"):
        loss_weight(alpha, sigma, "eps", "p2")


def test_timestep_samplers_ranges() -> None:
    d = DiscreteSchedule.from_name("linear")
    t, w = UniformTimesteps(d).sample(10000, make_generator(0))
    assert t.min() == 0 and t.max() == 999 and torch.equal(t, t.round()) and (w == 1).all()
    assert abs(t.mean().item() - 499.5) < 10
    c = VPSchedule()
    t, _ = UniformTimesteps(c).sample(1000, make_generator(0))
    assert t.min() >= c.t_min and t.max() <= c.t_max
    t, _ = LogNormalTimesteps(VESchedule(0.002, 80.0)).sample(20000, make_generator(0))
    log_sigma = VESchedule(0.002, 80.0).sigma(t).log()
    assert abs(log_sigma.median().item() + 1.2) < 0.05  # EDM's P_mean


def test_timesteps_args_reach_the_sampler_from_the_config() -> None:
    """``diffusion.timesteps_args`` configures the timestep sampler (a low-noise refiner's log-normal);
    arguments the sampler does not take are a clear ValueError, already when the config loads."""
    from shared_core.config import from_dict
    from shared_core.train.loop import DiffusionConfig, DiffusionObjective

    cfg = from_dict(
        DiffusionConfig,
        {"schedule": "ve", "timesteps": "lognormal", "timesteps_args": {"p_mean": -3.0, "p_std": 0.5}},
    )
    sampler = DiffusionObjective.from_config(cfg).t_sampler
    t, _ = sampler.sample(20000, make_generator(0))
    log_sigma = VESchedule().sigma(t).log()
    assert abs(log_sigma.median().item() + 3.0) < 0.05 and abs(log_sigma.std().item() - 0.5) < 0.05
    # caught when the config loads (a one-line config error in the CLI), and by the objective itself
    with pytest.raises(ValueError, match="timesteps_args"):
        from_dict(DiffusionConfig, {"timesteps": "uniform", "timesteps_args": {"p_mean": -3.0}})
    with pytest.raises(ValueError, match="timesteps_args"):
        DiffusionObjective(VESchedule(), timesteps="uniform", timesteps_args={"p_mean": -3.0})


def test_loss_aware_sampler_unbiased_and_lower_variance() -> None:
    """Per-t losses that vary by orders of magnitude with t (as the diffusion loss does near t=0):
    the importance-weighted estimate has the uniform expectation and a much lower variance."""
    T = 50
    sched = DiscreteSchedule.from_name("linear", num_steps=T)
    scale = torch.exp(-torch.arange(T, dtype=torch.float64) / 4) * 100 + 0.1
    g = make_generator(0)

    def losses(t: torch.Tensor) -> torch.Tensor:  # noisy loss with mean scale[t]
        return scale[t.long()] * (1 + 0.3 * randn(t.shape, g, dtype=torch.float64))

    sampler = LossAwareTimesteps(sched, history=10)
    while not sampler.warm:
        t, _ = UniformTimesteps(sched).sample(256, g)
        sampler.update(t, losses(t))
    true_mean = scale.mean().item()
    est_is, est_uni = [], []
    for _ in range(400):
        t, w = sampler.sample(16, g)
        est_is.append((w * losses(t)).mean().item())
        t, w = UniformTimesteps(sched).sample(16, g)
        est_uni.append((w * losses(t)).mean().item())
    est_is, est_uni = torch.tensor(est_is), torch.tensor(est_uni)
    assert abs(est_is.mean().item() - true_mean) < 3 * est_is.std().item() / 20 + 1e-3
    assert abs(est_uni.mean().item() - true_mean) < 3 * est_uni.std().item() / 20
    assert est_is.var() < 0.25 * est_uni.var()
    # the exact expectation: sum_t p(t) w(t) E[L_t] = mean_t E[L_t]
    p = sampler.probs()
    assert math.isclose(float((p * (1 / (T * p)) * scale).sum()), true_mean, rel_tol=1e-12)
    state = sampler.state_dict()
    other = LossAwareTimesteps(sched, history=10)
    other.load_state_dict(state)
    assert torch.equal(other.probs(), sampler.probs())


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_diffusion_loss_zero_for_oracle(prediction: str) -> None:
    """A network that returns the exact target has zero loss; any rank; weights applied."""
    sched = DiscreteSchedule.from_name("cosine")
    x0 = randn((4, 2, 3, 3), make_generator(0))
    noise = randn(x0.shape, make_generator(1))
    t = torch.tensor([0.0, 10.0, 500.0, 999.0], dtype=torch.float64)
    a, s = sched.alpha_sigma(t)

    def oracle(x_t, t_in):
        return convert_prediction(noise, x_t, a.float(), s.float(), "eps", prediction)

    out = diffusion_loss(oracle, x0, sched, prediction=prediction, t=t, noise=noise, weighting="min_snr")
    assert out.loss.shape == (4,) and out.loss.abs().max() < 1e-5
    bad = diffusion_loss(
        lambda x, t: torch.zeros_like(x), x0, sched, prediction=prediction, generator=make_generator(2)
    )
    assert (bad.loss > 0).all()
    with pytest.raises(ValueError, match="network output shape"):
        diffusion_loss(lambda x, t: x[:, :1], x0, sched)
    with pytest.raises(ValueError, match="x0 contains NaN"):
        diffusion_loss(oracle, torch.full_like(x0, float("nan")), sched)


def test_self_conditioning_feeds_the_first_pass_estimate_to_marked_samples() -> None:
    """``self_cond_mask``: a first pass without gradient (given zeros) estimates x0; the marked
    samples see that estimate converted from the prediction, the others zeros; the gradient flows
    through the second pass only."""
    sched = DiscreteSchedule.from_name("cosine")
    x0 = randn((3, 5, 2), make_generator(0))
    noise = randn(x0.shape, make_generator(1))
    t = torch.tensor([100.0, 400.0, 900.0], dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    weight = torch.tensor(0.5, requires_grad=True)
    seen: list[torch.Tensor] = []

    def net(x_t, t_in, self_cond):
        seen.append(self_cond.clone())
        return weight * x_t + self_cond  # a v prediction that depends on both inputs

    mask = torch.tensor([True, False, True])
    out = diffusion_loss(net, x0, sched, prediction="v", t=t, noise=noise, self_cond_mask=mask)
    assert len(seen) == 2 and not seen[0].any()  # the first pass is given zeros
    x_t = q_sample(x0, a, s, noise)
    estimate = convert_prediction(0.5 * x_t, x_t, a, s, "v", "x0")
    torch.testing.assert_close(seen[1][mask], estimate[mask].float())
    assert not seen[1][~mask].any()
    out.loss.mean().backward()
    assert weight.grad is not None and weight.grad != 0
    # without a mask the network is called once, without self_cond
    diffusion_loss(lambda x, t_in: x, x0, sched, t=t, noise=noise)
    with pytest.raises(ValueError, match="self_cond_mask"):
        diffusion_loss(net, x0, sched, t=t, noise=noise, self_cond_mask=torch.ones(2, dtype=torch.bool))


def test_self_conditioning_denoiser_passes_the_previous_estimate() -> None:
    from shared_core.denoiser import SelfConditioning

    calls: list[torch.Tensor] = []

    def den(x, sigma, self_cond):
        calls.append(self_cond.clone())
        return x * 0.5 + self_cond

    sc = SelfConditioning(den)
    x = torch.ones(2, 3)
    first = sc(x, 1.0)
    second = sc(x, 0.5)
    assert not calls[0].any() and torch.equal(calls[1], first)
    torch.testing.assert_close(second, 0.5 * x + first)
    sc(torch.ones(4, 3), 0.5)  # another batch shape (e.g. a CFG pass) starts from zeros
    assert not calls[2].any()
    sc.reset()
    sc(x, 1.0)
    assert not calls[3].any()


def test_self_condition_config_needs_a_model_that_takes_it() -> None:
    from shared_core.config import from_dict
    from shared_core.errors import ConfigError
    from shared_core.train.loop import DiffusionConfig, DiffusionObjective

    cfg = from_dict(DiffusionConfig, {"self_condition": 0.5})
    with pytest.raises(ConfigError, match="self_condition"):
        DiffusionObjective.from_config(cfg)
    assert DiffusionObjective.from_config(cfg, self_conditioning=True).self_condition == 0.5
    with pytest.raises(ValueError, match="self_condition"):
        from_dict(DiffusionConfig, {"self_condition": 1.5})


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_input_perturbation_bends_the_input_and_keeps_the_clean_target(prediction: str) -> None:
    """``perturbation``: the network sees x_t = alpha (x0 + p) + sigma eps, and the loss is zero only
    for the prediction that maps that x_t back to the clean x0 (not to x0 + p); p = 0 is the plain loss."""
    sched = DiscreteSchedule.from_name("cosine")
    x0 = randn((3, 4, 2), make_generator(0))
    noise = randn(x0.shape, make_generator(1))
    p = 0.1 * randn(x0.shape, make_generator(2))
    t = torch.tensor([20.0, 400.0, 900.0], dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    seen: list[torch.Tensor] = []

    def to_clean(x_t, t_in):
        seen.append(x_t)
        return convert_prediction(x0, x_t, a.float(), s.float(), "x0", prediction)

    out = diffusion_loss(to_clean, x0, sched, prediction=prediction, t=t, noise=noise, perturbation=p)
    torch.testing.assert_close(seen[0], q_sample(x0 + p, a, s, noise).float())
    assert out.loss.abs().max() < 1e-5
    # the plain oracle (which would map to x0 + p) is wrong under the perturbation
    plain = diffusion_loss(
        lambda x_t, t_in: convert_prediction(noise, x_t, a.float(), s.float(), "eps", prediction),
        x0, sched, prediction=prediction, t=t, noise=noise, perturbation=p,
    )  # fmt: skip
    assert (plain.loss > 1e-4).all()
    zero = diffusion_loss(to_clean, x0, sched, prediction=prediction, t=t, noise=noise, perturbation=0 * p)
    ref = diffusion_loss(to_clean, x0, sched, prediction=prediction, t=t, noise=noise)
    torch.testing.assert_close(zero.loss, ref.loss, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="perturbation shape"):
        diffusion_loss(to_clean, x0, sched, t=t, noise=noise, perturbation=p[:, :1])


def test_objective_takes_the_perturbation_from_the_batch() -> None:
    from shared_core.train.loop import DiffusionObjective

    sched = DiscreteSchedule.from_name("cosine")
    obj = DiffusionObjective(sched, prediction="v")
    x0 = randn((2, 5, 3), make_generator(0))
    p = torch.ones_like(x0)
    inputs: list[torch.Tensor] = []

    def net(x_t, t_in):
        inputs.append(x_t)
        return torch.zeros_like(x_t)

    gens = lambda: [make_generator(7), make_generator(8)]  # noqa: E731 - the same draws twice
    obj(net, {"x": x0}, gens())
    obj(net, {"x": x0, "perturbation": p}, gens())
    a, _ = sched.alpha_sigma(torch.stack([obj.t_sampler.sample(1, g)[0][0] for g in gens()]))
    torch.testing.assert_close(inputs[1] - inputs[0], (a[:, None, None] * p).float())
