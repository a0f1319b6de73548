"""`extradim points` end to end on tiny random checkpoints: outputs, manifests, seeds, mesh export,
bad input, the out-of-domain warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from shared_core import __version__
from shared_core.config import from_dict
from shared_core.io import file_sha256
from threed.io import load_points


def _points(cli, ckpts: tuple[Path, Path], *args: str) -> int:
    base, up = ckpts
    return cli(["points", *args, "--base", str(base), "--upsampler", str(up), "--num-points", "48"])


def test_writes_cloud_preview_mesh_and_manifests(cli, tiny_checkpoints, tmp_path: Path, capsys) -> None:
    out, mesh = tmp_path / "torus.ply", tmp_path / "torus.glb"
    assert (
        _points(cli, tiny_checkpoints, "a red torus", "-o", str(out), "--mesh", str(mesh), "--seed", "3") == 0
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["torus.glb", "torus.glb.json", "torus.ply", "torus.ply.json", "torus.ply.preview.png"]
    cloud = load_points(out)
    assert cloud.shape == (48, 6) and cloud[:, 3:].abs().max() <= 1
    assert Image.open(tmp_path / "torus.ply.preview.png").size == (4 * 192, 192)
    loaded = trimesh.load(mesh, force="mesh")
    assert len(loaded.faces) > 0
    m = json.loads((tmp_path / "torus.ply.json").read_text())
    assert m["prompt"] == "a red torus" and m["parsed"] == {"colour": "red", "shape": "torus"}
    assert m["seed"] == 3 and m["num_points"] == 48 and m["steps"] == 2 and m["upsampler_steps"] == 2
    assert m["sampler"] == "dpmpp_2m" and m["version"] == __version__
    assert m["checkpoint_sha256"]["base"] == file_sha256(tiny_checkpoints[0])
    assert m["checkpoint_sha256"]["upsampler"] == file_sha256(tiny_checkpoints[1])
    assert m["timings"]["generate_s"] > 0 and "mesh_s" in m["timings"]
    mm = json.loads((tmp_path / "torus.glb.json").read_text())
    assert (
        mm["source_cloud"] == str(out) and mm["faces"] == len(loaded.faces) and mm["prompt"] == "a red torus"
    )
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "warning" not in captured.err


def test_box_stage_is_recorded_and_fits_the_cloud(cli, tiny_checkpoints, tmp_path: Path, capsys) -> None:
    """``--box CKPT`` draws each cloud's box first; the manifest names the box checkpoint."""
    from tests.threed.conftest import TINY_POINTS, randomise
    from threed.box import BoxModel
    from threed.modality import PointsConfig
    from threed.pipeline import save_points_checkpoint

    cfg = from_dict(PointsConfig, {**TINY_POINTS, "model": {**TINY_POINTS["model"], "stage": "box"}})
    box = save_points_checkpoint(randomise(BoxModel(cfg)), cfg, tmp_path / "box.safetensors")
    with_box, plain = tmp_path / "a.npy", tmp_path / "b.npy"
    assert _points(cli, tiny_checkpoints, "a red torus", "-o", str(with_box), "--box", str(box)) == 0
    assert _points(cli, tiny_checkpoints, "a red torus", "-o", str(plain)) == 0
    m = json.loads((tmp_path / "a.npy.json").read_text())
    assert m["checkpoint_sha256"]["box"] == file_sha256(box) and m["box_quantile"] == 0.03
    assert json.loads((tmp_path / "b.npy.json").read_text())["checkpoint_sha256"]["box"] is None
    assert not np.allclose(np.load(with_box), np.load(plain))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # argparse: usage and one error line
        _points(
            cli, tiny_checkpoints, "a red torus", "-o", str(tmp_path / "c.npy"), "--box", str(box), "--no-box"
        )
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err and not (tmp_path / "c.npy").exists()
    # a checkpoint of another stage given as the box: one line, nothing written
    assert (
        _points(
            cli,
            tiny_checkpoints,
            "a red torus",
            "-o",
            str(tmp_path / "d.npy"),
            "--box",
            str(tiny_checkpoints[0]),
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "not a box-stage checkpoint" in err and "Traceback" not in err and not (tmp_path / "d.npy").exists()
    )


def test_seed_reproducibility_and_npy(cli, tiny_checkpoints, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.npy"
    for path, seed in ((a, "7"), (b, "7"), (c, "8")):
        assert _points(cli, tiny_checkpoints, "a blue mug", "-o", str(path), "--seed", seed) == 0
    x, y, z = (np.load(p) for p in (a, b, c))
    assert x.shape == (48, 6) and x.dtype == np.float32
    assert np.array_equal(x, y) and not np.allclose(x, z)
    # 32 points: the base model alone (the upsampler does not run)
    d = tmp_path / "coarse.npy"
    base, up = tiny_checkpoints
    assert cli(["points", "a blue mug", "-o", str(d), "--base", str(base), "--upsampler", str(up),
                "--num-points", "32"]) == 0  # fmt: skip
    assert (
        np.load(d).shape == (32, 6)
        and json.loads(d.with_name("coarse.npy.json").read_text())["upsampler_steps"] == 0
    )


def test_guidance_rescale_reaches_the_cloud_and_manifest(cli, tiny_checkpoints, tmp_path: Path) -> None:
    plain, rescaled, unguided = tmp_path / "p.npy", tmp_path / "r.npy", tmp_path / "u.npy"
    assert _points(cli, tiny_checkpoints, "a blue mug", "-o", str(plain), "--guidance", "3") == 0
    assert _points(cli, tiny_checkpoints, "a blue mug", "-o", str(rescaled), "--guidance", "3",
                   "--guidance-rescale", "0.7") == 0  # fmt: skip
    assert _points(cli, tiny_checkpoints, "a blue mug", "-o", str(unguided), "--guidance", "1",
                   "--guidance-rescale", "0.7") == 0  # fmt: skip
    assert not np.allclose(np.load(plain), np.load(rescaled))
    manifest = json.loads(rescaled.with_name("r.npy.json").read_text())
    assert manifest["guidance"] == 3 and manifest["guidance_rescale"] == 0.7
    # without guidance there is nothing to rescale: the manifest says what took effect
    assert json.loads(unguided.with_name("u.npy.json").read_text())["guidance_rescale"] == 0.0


def test_out_of_domain_prompt_warns_once_and_generates(cli, tiny_checkpoints, tmp_path: Path, capsys) -> None:
    out = tmp_path / "elephant.ply"
    assert _points(cli, tiny_checkpoints, "a purple elephant", "-o", str(out)) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and err[0].startswith("extradim: warning: prompt is out of the training domain")
    assert out.is_file() and json.loads((tmp_path / "elephant.ply.json").read_text())["parsed"] is None


def test_bad_input_one_line_exit_2_nothing_written(cli, tiny_checkpoints, tmp_path: Path, capsys) -> None:
    base, up = tiny_checkpoints
    corrupt = tmp_path / "ckpt" / "bad.safetensors"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a safetensors file")
    shutil.copy(base.with_suffix(".yaml"), corrupt.with_suffix(".yaml"))
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = str(outdir / "x.ply")
    ck = ["--base", str(base), "--upsampler", str(up)]
    cases = [
        ["points", "", "-o", out, *ck],
        ["points", "   ", "-o", out, *ck],
        ["points", "-o", out, *ck],
        ["points", "a red torus", "-o", str(outdir / "x.stl"), *ck],
        ["points", "a red torus", "-o", str(outdir / "missing" / "x.ply"), *ck],
        ["points", "a red torus", "-o", out, "--mesh", str(outdir / "x.stl"), *ck],
        ["points", "a red torus", "-o", out, "--mesh", out, *ck],
        [
            "points",
            "a red torus",
            "-o",
            out,
            "--base",
            str(tmp_path / "nope.safetensors"),
            "--upsampler",
            str(up),
        ],
        ["points", "a red torus", "-o", out, "--base", str(corrupt), "--upsampler", str(up)],
        ["points", "a red torus", "-o", out, "--base", str(up), "--upsampler", str(base)],
        ["points", "a red torus", "-o", out, *ck, "--num-points", "8"],
        ["points", "a red torus", "-o", out, *ck, "--num-points", "100000"],
        ["points", "a red torus", "-o", out, *ck, "--steps", "0"],
        ["points", "a red torus", "-o", out, *ck, "--sampler", "nope"],
        ["points", "a red torus", "-o", out, *ck, "--guidance-rescale", "1.5"],
    ]
    for args in cases:
        assert cli(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("extradim: error:") and err.count("\n") == 1, (args, err)
        assert list(outdir.iterdir()) == [], args


def test_help_lists_the_command(cli, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["points", "--help"])
    assert info.value.code == 0 and "--mesh" in capsys.readouterr().out
