"""Evaluation: Fréchet distance and KID against references and closed forms, temporal metrics, the
feature network's cache, and `extradim eval video` on a tiny random checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from shared_core.errors import CheckpointError
from video.evaluate import checker_report, evaluate_pipeline, temporal_metrics
from video.features import (
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
    load_feature_net,
)
from video.world import ShapesWorld

# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def test_frechet_matches_scipy_sqrtm_reference() -> None:
    from scipy import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(size=(150, 8)) @ rng.normal(size=(8, 8)) + 0.5
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance_from_features(a, b) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance_from_features(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        ref, rel=1e-8
    )


def test_frechet_closed_forms() -> None:
    rng = np.random.default_rng(1)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    va, vb = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expect = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(va), mu2, np.diag(vb)) == pytest.approx(expect, rel=1e-10)
    # S1 = I and S2 = Q diag(l) Q^T (non-diagonal): d + tr(S2) - 2 tr(S2^1/2).
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = rng.uniform(0.2, 4, d)
    s2 = (q * lam) @ q.T
    expect = ((mu1 - mu2) ** 2).sum() + d + lam.sum() - 2 * np.sqrt(lam).sum()
    assert frechet_distance(mu1, np.eye(d), mu2, s2) == pytest.approx(expect, rel=1e-10)
    # Symmetric in its arguments, zero for identical Gaussians.
    assert frechet_distance(mu2, s2, mu1, np.eye(d)) == pytest.approx(expect, rel=1e-10)
    assert frechet_distance(mu1, s2, mu1, s2) == pytest.approx(0, abs=1e-10)


def test_frechet_is_stable_for_rank_deficient_covariances() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 32)), rng.normal(size=(5, 32))  # 5 samples in 32-d: rank 4
    fd = frechet_distance_from_features(a, b)
    assert np.isfinite(fd) and fd > 0
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance_from_features(a[:1], b)


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
    assert kernel_inception_distance(x, y) == pytest.approx(_kid_reference(x, y), rel=1e-10)
    # Subsets: each is the same estimator on random rows, so the mean over many equal-size subsets
    # of one distribution averages to about zero (unbiased), while a shift stays clearly positive.
    a, b = rng.normal(size=(400, 4)), rng.normal(size=(400, 4))
    same = kernel_inception_distance(a, b, subsets=50, subset_size=100)
    shifted = kernel_inception_distance(a, b + 0.5, subsets=50, subset_size=100)
    assert abs(same) < 0.02 and shifted > 0.2


def test_temporal_metrics_real_clips_are_steady() -> None:
    clips = ShapesWorld(32, 16, seed=4).sample(4, 0).clips
    real = temporal_metrics(clips)
    assert real["background_flicker"] == 0.0 and real["temporal_hf"] < 0.02
    assert 0.3 < real["background_fraction"] < 1
    assert temporal_metrics(torch.ones(1, 3, 4, 8, 8))["background_flicker"] is None  # no background
    noisy = temporal_metrics(
        clips + 0.1 * torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))
    )
    assert noisy["background_flicker"] > 0.02 and noisy["temporal_hf"] > 2 * real["temporal_hf"]


def test_feature_net_cache(tiny_features: Path, tmp_path: Path) -> None:
    net = load_feature_net(tiny_features, build_if_missing=False)
    assert net.features(torch.zeros(2, 3, 16, 32, 32)).shape == (2, net.cfg.dim)
    with pytest.raises(CheckpointError, match="not found"):
        load_feature_net(tmp_path / "none.safetensors", build_if_missing=False)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad feature network"):
        load_feature_net(bad)


# ----------------------------------------------------------------------------------------------
# The evaluation on a tiny random pipeline
# ----------------------------------------------------------------------------------------------


def test_checker_report_keeps_its_contract(tiny_pipeline) -> None:
    report = checker_report(tiny_pipeline, 6, seed=0, out_dir=None)
    assert set(report) == {"seen", "held_out"}
    assert report["seen"]["clips"] == 3 and report["held_out"]["clips"] == 3
    assert set(report["seen"]) >= {"colour", "shape", "motion", "single_object", "all"}


def test_evaluate_generates_once(tiny_pipeline, tiny_features: Path, monkeypatch) -> None:
    calls = []
    generate = tiny_pipeline.generate

    def counting(prompts, **kwargs):
        calls.append(len(prompts))
        return generate(prompts, **kwargs)

    monkeypatch.setattr(tiny_pipeline, "generate", counting)
    net = load_feature_net(tiny_features, build_if_missing=False)
    report = evaluate_pipeline(tiny_pipeline, 8, seed=1, feature_net=net, settings={"steps": 2})
    assert calls == [8]
    # Real clips read perfectly (the ceiling); the real-vs-real floor is positive and finite.
    for split in ("seen", "held_out"):
        assert report["checker"]["real"][split]["all"] == 1.0
    fr = report["frechet"]
    assert 0 < fr["real_vs_real_floor"] < np.inf and fr["ratio"] == pytest.approx(
        fr["generated_vs_real"] / fr["real_vs_real_floor"]
    )
    assert report["temporal"]["real"]["background_flicker"] == 0.0
    assert report["quality_bar"]["pass"] is False  # random weights


def test_eval_command_writes_report_and_sheet(
    cli, tiny_checkpoint: Path, tiny_features: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval" / "run1"
    args = ["eval", "video", "--checkpoint", str(tiny_checkpoint), "--num-clips", "6", "--out", str(out)]
    assert cli([*args, "--steps", "2", "--features", str(tiny_features), "--seed", "2"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["num_clips"] == 6 and report["settings"]["steps"] == 2 and report["seed"] == 2
    assert report["checkpoint_sha256"] and set(report["quality_bar"]["checks"]) == {
        "seen_colour", "seen_motion", "seen_shape", "held_out_colour", "held_out_shape",
        "held_out_motion", "frechet_over_floor",
    }  # fmt: skip
    for key in ("generated_vs_real", "real_vs_real_floor"):
        assert np.isfinite(report["frechet"][key]) and np.isfinite(report["kid"][key])
    assert report["timings"]["generate_s"] > 0
    sheet = iio.imread(out / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[1] == 8 * (64 + 2) - 2  # 8 of 16 frames at x2, 2-px gaps
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "eval.json"]


def test_eval_bad_input(cli, tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    for extra in (["--num-clips", "2"], ["--checkpoint", str(tmp_path / "x.safetensors")], ["--steps", "0"]):
        args = ["eval", "video", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "e"), *extra]
        assert cli(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("extradim: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "e").exists()
