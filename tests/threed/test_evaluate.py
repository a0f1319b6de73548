"""The PointNet features and `extradim eval points` on tiny random checkpoints: report contents,
one generation pass, colour naming, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared_core.errors import CheckpointError
from threed.evaluate import colour_of, distribution_metrics, evaluate_points, nearest_class
from threed.features import PointNet, extract_features, load_point_net
from threed.world import COLOURS, SHAPES, ShapeWorld


def test_point_net_features_and_loading(tiny_pointnet: Path, tmp_path: Path) -> None:
    net = load_point_net(tiny_pointnet)
    assert isinstance(net, PointNet) and not net.training
    clouds = ShapeWorld(64, seed=1).sample(3, 0).points  # (3, 64, 6): colours are ignored
    f = extract_features(net, clouds, batch_size=2)
    assert f.shape == (3, net.cfg.dim) and f.dtype == torch.float64
    torch.testing.assert_close(f, extract_features(net, clouds[..., :3]))
    assert net(clouds[..., :3]).shape == (3, len(SHAPES))
    # permutation-invariant: a set function of the points
    torch.testing.assert_close(f, extract_features(net, clouds[:, torch.randperm(64)]))
    with pytest.raises(CheckpointError, match="not found"):
        load_point_net(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad PointNet"):
        load_point_net(tmp_path / "bad.safetensors")


def test_colour_of_reads_the_palette() -> None:
    for name in COLOURS:
        cloud = ShapeWorld(64, seed=2, colours=[name]).sample(1, 0).points[0]
        noisy = cloud.clone()
        noisy[:, 3:] += 0.1 * torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
        assert colour_of(cloud) == name and colour_of(noisy) == name


def test_nearest_class_and_real_vs_real_metrics() -> None:
    refs = {s: ShapeWorld(128, seed=3, classes=[s]).sample(3, 0).points[..., :3] for s in ("sphere", "table")}
    probe = torch.cat([ShapeWorld(128, seed=4, classes=[s]).sample(2, 0).points[..., :3] for s in refs])
    assert nearest_class(probe, refs) == ["sphere", "sphere", "table", "table"]
    a, b = refs["sphere"], ShapeWorld(128, seed=5, classes=["sphere"]).sample(3, 0).points[..., :3]
    m = distribution_metrics(a + 5.0, a, b, with_emd=True, emd_points=16)
    assert m["generated"]["1-NNA-CD"] == 1.0 and m["generated"]["1-NNA-EMD"] == 1.0  # far apart
    assert m["real_vs_real"]["1-NNA-CD"] < 1.0 and set(m["real_vs_real"]) == set(m["generated"])


def test_evaluate_generates_once(tiny_pipeline, tiny_pointnet: Path, monkeypatch) -> None:
    calls = []
    generate = tiny_pipeline.generate

    def counting(prompts, **kwargs):
        calls.append((list(prompts), kwargs["first_index"]))
        return generate(prompts, **kwargs)

    monkeypatch.setattr(tiny_pipeline, "generate", counting)
    net = load_point_net(tiny_pointnet)
    report = evaluate_points(
        tiny_pipeline, net, classes=["sphere", "torus"], per_class=3, num_points=48, with_emd=False,
        mesh_per_class=0, settings={"steps": 1},
    )  # fmt: skip
    assert calls == [
        (["a red sphere", "a yellow sphere", "a green sphere"], 0),
        (["a red torus", "a yellow torus", "a green torus"], 3),
    ]
    assert "1-NNA-EMD" not in report["summary"]["generated"] and report["settings"]["steps"] == 1
    assert report["quality_bar"]["pass"] is False  # random weights


def test_eval_command_writes_report_and_sheet(
    cli, tiny_checkpoints, tiny_pointnet: Path, tmp_path: Path, capsys
) -> None:
    base, up = tiny_checkpoints
    out = tmp_path / "eval" / "run"
    args = ["eval", "points", "--base", str(base), "--upsampler", str(up), "--pointnet", str(tiny_pointnet)]
    args += ["--per-class", "2", "--num-points", "40", "--classes", "cube", "mug", "--out", str(out)]
    assert cli([*args, "--emd-points", "16", "--mesh-per-class", "1", "--seed", "2"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["classes"] == ["cube", "mug"] and report["per_class"] == 2 and report["seed"] == 2
    assert set(report["per_class_metrics"]) == {"cube", "mug"}
    for key in ("MMD-CD", "COV-CD", "1-NNA-CD", "MMD-EMD", "COV-EMD", "1-NNA-EMD"):
        for side in ("generated", "real_vs_real"):
            assert np.isfinite(report["summary"][side][key])
    assert "16-point subset" in report["conventions"]["emd"]
    assert np.isfinite(report["pfid"]["generated_vs_real"]) and report["pfid"]["real_vs_real_floor"] > 0
    assert report["pfid"]["clouds_per_set"] == 4
    cls = report["per_class_metrics"]["mug"]
    assert 0 <= cls["class_accuracy"] <= 1 and 0 <= cls["colour_accuracy"] <= 1 and cls["meshes"] == 1
    assert cls["timings"]["generate_s"] > 0 and cls["timings"]["metrics_s"] > 0
    assert set(report["quality_bar"]["checks"]) == {
        "one_nna_cd_max", "cov_cd_gap_max", "class_accuracy_min", "colour_accuracy_min", "watertight_min",
    }  # fmt: skip
    assert report["checkpoint_sha256"][0] and report["timings"]["total_s"] > 0
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] == 3 * (2 * 96 + 4) - 4  # a real cloud + 2 generated, two views each
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "eval.json"]
    assert "quality bar: FAIL" in capsys.readouterr().out


def test_eval_bad_input(cli, tiny_checkpoints, tiny_pointnet: Path, tmp_path: Path, capsys) -> None:
    base, up = tiny_checkpoints
    ok = ["--base", str(base), "--upsampler", str(up), "--pointnet", str(tiny_pointnet), "--num-points", "40"]
    for extra in (
        ["--per-class", "1"],
        ["--classes", "sphere", "elephant"],
        ["--num-points", "9"],
        ["--steps", "0"],
        ["--pointnet", str(tmp_path / "none.safetensors")],
        ["--base", str(tmp_path / "x.safetensors")],
    ):
        assert cli(["eval", "points", *ok, "--out", str(tmp_path / "e"), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("extradim: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "e").exists()


def test_shipped_point_net_loads() -> None:
    from threed.features import DEFAULT_POINTNET, point_net_stats

    if not DEFAULT_POINTNET.is_file():
        pytest.skip("checkpoints/threed/pointnet.safetensors not built (python -m threed.features)")
    net = load_point_net()
    assert net.cfg.dim == 64 and point_net_stats()["shape_accuracy"] >= 0.95
