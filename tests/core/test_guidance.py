from __future__ import annotations

import pytest
import torch

from shared_core.guidance import AutoGuidanceDenoiser, CFGDenoiser


class CountingDenoiser:
    """x0 = x * 0 + class offset: the conditional answer depends on the label y."""

    def __init__(self) -> None:
        self.calls, self.batches = 0, []

    def __call__(self, x, sigma, y):
        self.calls += 1
        self.batches.append(x.shape[0])
        return torch.zeros_like(x) + y.float().reshape(-1, *([1] * (x.ndim - 1)))


def test_cfg_formula_one_batched_forward_and_cached_null() -> None:
    den = CountingDenoiser()
    null = {"y": torch.tensor([0])}
    cfg = CFGDenoiser(den, w=2.0, null_cond=null)
    x = torch.randn(3, 2, 4)
    y = torch.tensor([1, 2, 3])
    out = cfg(x, torch.tensor(1.0), y=y)
    # (1 + w) x0_c - w x0_u with x0_u = 0
    assert torch.allclose(out, 3.0 * y.float().reshape(-1, 1, 1).expand_as(x))
    assert den.calls == 1 and den.batches == [6]
    cfg(x, torch.tensor(1.0), y=y)
    assert len(cfg._null_cache) == 1  # expanded once per batch size
    s = CFGDenoiser.from_scale(den, 3.0, null)
    assert s.w == 2.0


def test_cfg_w0_is_conditional_and_all_channels_guided() -> None:
    den = CountingDenoiser()
    cfg = CFGDenoiser(den, w=0.0, null_cond={"y": torch.tensor([0])})
    x = torch.randn(2, 4, 3, 3)
    assert torch.equal(cfg(x, 1.0, y=torch.tensor([5, 6])), den(x, 1.0, y=torch.tensor([5, 6])))
    cfg = CFGDenoiser(den, w=1.0, null_cond={"y": torch.tensor([0])})
    out = cfg(x, 1.0, y=torch.tensor([5, 6]))
    assert torch.allclose(out[:, 3], out[:, 0])  # every channel guided (DiT's 3-of-4 bug)


def test_guidance_rescale_matches_conditional_std() -> None:
    def den(x, sigma, y):
        return x * 0.5 + y.float().reshape(-1, 1) * torch.linspace(-1, 1, x.shape[1])

    x = torch.randn(4, 16)
    sigma = torch.tensor(1.0)
    y = torch.tensor([1, 1, 1, 1])
    full = CFGDenoiser(den, 4.0, {"y": torch.tensor([0])}, rescale=1.0)(x, sigma, y=y)
    eps_c = x - den(x, sigma.expand(4), y)
    eps = x - full
    assert torch.allclose(eps.std(1), eps_c.std(1), rtol=1e-5)
    with pytest.raises(ValueError, match="rescale"):
        CFGDenoiser(den, 1.0, {"y": torch.tensor([0])}, rescale=2.0)


def test_null_keys_must_match() -> None:
    cfg = CFGDenoiser(CountingDenoiser(), 1.0, {"context": torch.zeros(1, 2)})
    with pytest.raises(ValueError, match="null condition keys"):
        cfg(torch.zeros(2, 3), 1.0, y=torch.tensor([1, 2]))


def test_autoguidance_extrapolates_from_the_bad_denoiser_under_the_same_condition() -> None:
    def good(x, sigma, y):
        return x * 0.5 + y.float().reshape(-1, *([1] * (x.ndim - 1)))

    bad_calls = []

    def bad(x, sigma, y):
        bad_calls.append(y.clone())
        return x * 0.25

    x, y = torch.randn(2, 5, 3), torch.tensor([1, 2])
    out = AutoGuidanceDenoiser(good, bad, 2.0)(x, 0.7, y=y)
    # bad + 2 (good - bad) = 2 good - bad
    assert torch.allclose(out, 2 * good(x, 0.7, y) - bad(x, 0.7, y))
    assert torch.equal(bad_calls[0], y)  # conditioned alike, no null branch
    bad_calls.clear()
    assert torch.equal(AutoGuidanceDenoiser(good, bad, 1.0)(x, 0.7, y=y), good(x, 0.7, y))
    assert not bad_calls  # scale 1 is the good model alone, the bad one is not run
    with pytest.raises(ValueError, match="scale"):
        AutoGuidanceDenoiser(good, bad, -1.0)
