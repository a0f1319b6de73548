"""Fréchet distance and KID (``shared_core.metrics``) against scipy's sqrtm, closed forms and a
loop-written unbiased MMD^2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from shared_core.metrics import feature_stats, frechet_distance, gaussian_frechet, kernel_inception_distance


def _frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_matches_scipy_sqrtm_reference() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(size=(150, 8)) @ rng.normal(size=(8, 8)) + 0.5
    ref = _frechet_scipy(a, b)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(torch.from_numpy(a).float(), b) == pytest.approx(ref, rel=1e-4)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400, 6)) @ rng.standard_normal((6, 6))
    y = rng.standard_normal((300, 6)) * 1.5 + 0.3
    assert frechet_distance(x, y) == pytest.approx(_frechet_scipy(x, y), rel=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, -2.0, 0, 0, 0, 0.5])  # same covariance: only |shift|^2 remains
    assert frechet_distance(x + shift, x) == pytest.approx(5.25)


def test_gaussian_frechet_closed_forms() -> None:
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    va, vb = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expect = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert gaussian_frechet(mu1, np.diag(va), mu2, np.diag(vb)) == pytest.approx(expect, rel=1e-10)
    # S1 = I and S2 = Q diag(l) Q^T (non-diagonal): d + tr(S2) - 2 tr(S2^1/2).
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = rng.uniform(0.2, 4, d)
    s2 = (q * lam) @ q.T
    expect = ((mu1 - mu2) ** 2).sum() + d + lam.sum() - 2 * np.sqrt(lam).sum()
    assert gaussian_frechet(mu1, np.eye(d), mu2, s2) == pytest.approx(expect, rel=1e-10)
    # Symmetric in its arguments, zero for identical Gaussians.
    assert gaussian_frechet(mu2, s2, mu1, np.eye(d)) == pytest.approx(expect, rel=1e-10)
    assert gaussian_frechet(mu1, s2, mu1, s2) == pytest.approx(0, abs=1e-10)
    with pytest.raises(ValueError, match="shape mismatch"):
        gaussian_frechet(mu1, np.eye(d), mu2[:3], np.eye(3))


def test_frechet_is_stable_for_rank_deficient_covariances() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 32)), rng.normal(size=(5, 32))  # 5 samples in 32-d: rank 4
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(a[:1], b)
    mu, cov = feature_stats(a[:, :1])  # D = 1 still gives a (1, 1) covariance
    assert mu.shape == (1,) and cov.shape == (1, 1)


def _kid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out with loops."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / d + 1) ** 3)

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_matches_reference_and_is_unbiased() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 5)), rng.normal(size=(15, 5)) + 0.3
    mean, std = kernel_inception_distance(x, y)  # both sets within subset_size: whole sets, once
    assert mean == pytest.approx(_kid_reference(x, y), rel=1e-10) and std == 0.0
    # Subsets of a whole set of the same size are permutations of it: every subset gives one value.
    x2 = rng.normal(size=(12, 4))
    mean, std = kernel_inception_distance(torch.from_numpy(x2), y[:12, :4], subset_size=12, subsets=3)
    assert mean == pytest.approx(_kid_reference(x2, y[:12, :4]), rel=1e-9)
    assert std == pytest.approx(0, abs=1e-12)
    # Each subset is the same estimator on random rows, so the mean over many equal-size subsets of
    # one distribution averages to about zero (unbiased), while a shift stays clearly positive.
    a, b = rng.normal(size=(400, 4)), rng.normal(size=(400, 4))
    same, same_std = kernel_inception_distance(a, b, subsets=50, subset_size=100)
    shifted, _ = kernel_inception_distance(a, b + 0.5, subsets=50, subset_size=100)
    assert abs(same) < 0.02 and shifted > 0.2 and same_std > 0
    assert kernel_inception_distance(a, b, 100, 5, seed=1) == kernel_inception_distance(a, b, 100, 5, seed=1)
    with pytest.raises(ValueError, match="equal D"):
        kernel_inception_distance(a, b[:, :3])
