"""`extradim dream` end to end on a tiny random prior: the output folder, manifest, metrics, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import trimesh
from PIL import Image

from shared_core import __version__
from shared_core.io import file_sha256


def test_dream_writes_the_output_folder(cli, tiny_views_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "torus"
    args = ["dream", "a red torus", "-o", str(out), "--steps", "4", "--preview-every", "2", "--seed", "1",
            "--mesh-resolution", "32", "--turntable-frames", "4", "--turntable-size", "32"]  # fmt: skip
    assert cli([*args, "--prior", str(tiny_views_checkpoint)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"mesh.glb", "mesh.obj", "mesh.ply", "turntable.gif", "views.png", "preview.png"} <= names
    assert {"metrics.json", "manifest.json"} <= names
    assert not list(tmp_path.glob(".*partial"))  # the working folder was moved into place
    mesh = trimesh.load(out / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0
    assert Image.open(out / "views.png").size == (4 * 32, 32)
    m = json.loads((out / "manifest.json").read_text())
    assert m["prompt"] == "a red torus" and m["seed"] == 1 and m["version"] == __version__
    assert m["prior_sha256"] == file_sha256(tiny_views_checkpoint) and m["config"]["steps"] == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and set(metrics["per_step_ms"]) == {"render", "prior", "backward", "total"}
    assert metrics["mesh"]["faces"] == len(mesh.faces) and metrics["peak_rss_mb"] > 0
    assert "wrote" in capsys.readouterr().out


def test_dream_bad_input(cli, tiny_views_checkpoint: Path, tmp_path: Path, capsys) -> None:
    prior = ["--prior", str(tiny_views_checkpoint)]
    afile = tmp_path / "afile"
    afile.write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    corrupt = tmp_path / "bad.safetensors"
    corrupt.write_bytes(b"\x00" * 16)
    corrupt.with_suffix(".yaml").write_text(tiny_views_checkpoint.with_suffix(".yaml").read_text())
    out = str(tmp_path / "new")
    cases = [
        ["dream", "   ", "-o", out, *prior],
        ["dream", "-o", out, *prior],
        ["dream", "a red torus", "-o", str(afile), *prior],
        ["dream", "a red torus", "-o", str(full), *prior],
        ["dream", "a red torus", "-o", str(tmp_path / "no" / "such" / "dir"), *prior],
        ["dream", "a red torus", "-o", out, "--steps", "0", *prior],
        ["dream", "a red torus", "-o", out, "--max-minutes", "0", *prior],
        ["dream", "a red torus", "-o", out, "--mesh-resolution", "4", *prior],
        ["dream", "a red torus", "-o", out, "--prior", str(tmp_path / "missing.safetensors")],
        ["dream", "a red torus", "-o", out, "--prior", str(corrupt)],
    ]
    for args in cases:
        assert cli(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("extradim: error:") and err.count("\n") == 1, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bad.safetensors", "bad.yaml", "full"]
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


def test_dream_help_states_the_config_defaults(cli, capsys) -> None:
    from threed.dream import DreamConfig

    try:
        cli(["dream", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert f"optimisation steps (default {DreamConfig.steps})" in text
    assert f"CFG scale of the prior (default {DreamConfig.guidance:g})" in text
    assert f"for the same prompt and seed (default: {DreamConfig.init};" in text


def test_dream_can_start_from_the_points_models_cloud(
    cli, tiny_views_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """``--init points``: the field starts from the shipped text-to-points cloud; the manifest names
    the start and the points checkpoints it came from."""
    from threed.pipeline import DEFAULT_BASE, DEFAULT_BOX, DEFAULT_UPSAMPLER

    out = tmp_path / "mug"
    args = ["dream", "a blue mug", "-o", str(out), "--steps", "2", "--init", "points",
            "--mesh-resolution", "32", "--turntable-frames", "4", "--turntable-size", "32",
            "--prior", str(tiny_views_checkpoint)]  # fmt: skip
    assert cli(args) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["init"] == "points"
    assert m["init_points_sha256"] == {
        "box": file_sha256(DEFAULT_BOX),
        "base": file_sha256(DEFAULT_BASE),
        "upsampler": file_sha256(DEFAULT_UPSAMPLER),
    }
    # the points model knows only the shape world: another prompt starts from the blob unless asked
    other = ["dream", "a hamburger", "--steps", "1", "--mesh-resolution", "32", "--turntable-frames", "4",
             "--turntable-size", "32", "--prior", str(tiny_views_checkpoint)]  # fmt: skip
    assert cli([*other, "-o", str(tmp_path / "burger")]) == 0
    assert json.loads((tmp_path / "burger" / "manifest.json").read_text())["config"]["init"] == "blob"
    assert "starting from the blob" in capsys.readouterr().err
    # two steps from the cloud already give the mug, its handle along +x (the prior's own frame),
    # not the blob's round ball
    x, y, _ = json.loads((out / "metrics.json").read_text())["mesh"]["extent"]
    assert x > y + 0.2
