"""Distribution metrics on feature matrices: the Fréchet distance (FID's formula) and KID.

Both compare two sets of features, e.g. the pooled activations of a classifier on generated and
on real samples (Inception's pool features for FID, Heusel et al. 2017). Modalities bring their own
feature network; these functions only see ``(N, D)`` matrices.

    frechet_distance(f_gen, f_real)                  # Gaussians fitted to both sets
    gaussian_frechet(mu1, s1, mu2, s2)               # the closed form itself
    kernel_inception_distance(f_gen, f_real)         # (mean, std) over subsets

Both metrics are biased by the sample size (the Fréchet distance strongly), so a value means
something only next to the same metric between two disjoint real sets of the same size.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = ["feature_stats", "frechet_distance", "gaussian_frechet", "kernel_inception_distance"]

Features = Tensor | np.ndarray


def _as_features(f: Features) -> np.ndarray:
    x = np.asarray(f.detach().cpu() if isinstance(f, Tensor) else f, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {x.shape}")
    return x


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh (negative round-off clipped)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return np.asarray((v * np.sqrt(np.clip(w, 0, None))) @ v.T)


def feature_stats(f: Features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N >= 2, D), in float64."""
    x = _as_features(f)
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def gaussian_frechet(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``. The inner matrix is
    symmetric PSD and has the same trace root as ``S1 S2``, so both square roots come from
    ``eigh`` with negative round-off clipped: no complex parts and no ill-conditioned
    ``sqrtm(S1 S2)`` (whose product is not symmetric). Clamped at 0.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.
    """
    m1, m2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise ValueError(f"shape mismatch: mu {m1.shape} {m2.shape}, sigma {s1.shape} {s2.shape}")
    r1 = _psd_sqrt(s1)
    inner = r1 @ s2 @ r1
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(w, 0, None)).sum())
    d = float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(d, 0.0)


def frechet_distance(feats_a: Features, feats_b: Features) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    Args:
        feats_a: (N1 >= 2, D) features (tensor or array).
        feats_b: (N2 >= 2, D) features.
    """
    return gaussian_frechet(*feature_stats(feats_a), *feature_stats(feats_b))


def kernel_inception_distance(
    feats_a: Features,
    feats_b: Features,
    subset_size: int = 1000,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): the unbiased MMD^2 estimate with the cubic polynomial kernel
    ``k(x, y) = (x.y / D + 1)^3``.

    When both sets have at most ``subset_size`` rows the whole sets are used once (std 0);
    otherwise the estimate is averaged over ``subsets`` random subsets of
    ``min(N1, N2, subset_size)`` rows per set, drawn without replacement from
    ``numpy.random.default_rng(seed)``.

    Args:
        feats_a: (N1 >= 2, D) features.
        feats_b: (N2 >= 2, D) features.
        subset_size: rows per subset.
        subsets: number of subsets.
        seed: seed of the subset draws.

    Returns:
        (mean, standard deviation) of the estimate over the subsets.
    """
    x, y = _as_features(feats_a), _as_features(feats_b)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"need (N >= 2, D) features of equal D, got {x.shape} and {y.shape}")
    if subset_size < 2 or subsets < 1:
        raise ValueError(f"need subset_size >= 2 and subsets >= 1, got {subset_size} and {subsets}")
    d = x.shape[1]
    m = min(len(x), len(y), subset_size)
    rng = np.random.default_rng(seed)
    whole = len(x) <= subset_size and len(y) <= subset_size
    values = []
    for _ in range(1 if whole else subsets):
        a = x if whole else x[rng.choice(len(x), m, replace=False)]
        b = y if whole else y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        n1, n2 = len(a), len(b)
        mmd2 = (
            (kxx.sum() - np.trace(kxx)) / (n1 * (n1 - 1))
            + (kyy.sum() - np.trace(kyy)) / (n2 * (n2 - 1))
            - 2 * kxy.mean()
        )
        values.append(float(mmd2))
    v = np.asarray(values)
    return float(v.mean()), float(v.std())
