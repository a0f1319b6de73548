"""Evaluation: temporal metrics, the feature network's cache, and `extradim eval video` on a tiny
random checkpoint (Fréchet distance and KID: tests/core/test_metrics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from shared_core.errors import CheckpointError
from video.evaluate import checker_report, evaluate_pipeline, temporal_metrics
from video.features import load_feature_net
from video.world import ShapesWorld


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
