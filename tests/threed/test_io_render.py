"""Point-cloud files (round trips, clear errors on malformed files) and the preview renderer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shared_core.errors import ExtradimError
from threed.io import load_points, save_points
from threed.render import render_views, save_preview
from threed.world import ShapeWorld


@pytest.fixture(scope="module")
def cloud() -> torch.Tensor:
    return ShapeWorld(num_points=512, seed=4, classes=["cone"], colours=["red"]).sample(1, 0).points[0]


@pytest.mark.parametrize("suffix", [".ply", ".npy"])
def test_points_round_trip(tmp_path, cloud, suffix):
    loaded = load_points(save_points(cloud, tmp_path / f"c{suffix}"))
    assert loaded.shape == (512, 6) and loaded.dtype == torch.float32
    assert torch.allclose(loaded[:, :3], cloud[:, :3], atol=1e-6)
    assert torch.allclose(loaded[:, 3:], cloud[:, 3:], atol=1 / 255)  # 8-bit colours in PLY
    xyz = load_points(save_points(cloud[:, :3], tmp_path / f"xyz{suffix}"))
    assert xyz.shape == (512, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"c{suffix}", f"xyz{suffix}"])


def test_obj_vertices(tmp_path):
    path = tmp_path / "v.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert torch.equal(load_points(path), torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]))


MALFORMED = {
    "truncated.ply": b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    b"property float z\nend_header\n0 0 0\n1 1\n",
    "no_y.ply": b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n",
    "garbage.ply": b"\x00\x01 not a ply file",
    "empty.ply": b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
    b"property float z\nend_header\n",
    "words.obj": b"v 0 zero 0\nf 1 2 3\n",
    "empty.obj": b"# nothing here\n",
    "nan.npy": None,
    "shape.npy": None,
    "text.npy": b"not numpy",
    "cloud.xyz": b"0 0 0\n",
    "missing.ply": None,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_raise_one_line_errors(tmp_path, name):
    path = tmp_path / name
    if name == "nan.npy":
        np.save(path, np.full((4, 3), np.nan))
    elif name == "shape.npy":
        np.save(path, np.zeros((4, 4)))
    elif MALFORMED[name] is not None:
        path.write_bytes(MALFORMED[name])
    with pytest.raises(ExtradimError) as info:
        load_points(path)
    message = str(info.value)
    assert "\n" not in message and name in message


def test_render_views_upright_and_coloured(tmp_path, cloud):
    image = render_views(cloud, views=4, size=96)
    assert image.shape == (96, 384, 3) and image.dtype == np.uint8
    for v in range(4):
        view = image[:, v * 96 : (v + 1) * 96].astype(int)
        drawn = np.argwhere(np.abs(view - 32).sum(-1) > 0)  # not background
        assert len(drawn) > 500
        red = view[drawn[:, 0], drawn[:, 1]]
        assert np.all(red[:, 0] > red[:, 1] + 40)  # the palette's red, shaded
        # a cone with its apex up is narrow at the top and wide at the bottom
        top, bottom = drawn[:, 0].min(), drawn[:, 0].max()
        quarter = (bottom - top) // 4
        width = [np.ptp(drawn[np.abs(drawn[:, 0] - r) <= 1, 1]) for r in (top + quarter, bottom - quarter)]
        assert width[0] < 0.6 * width[1]
    path = save_preview(cloud, tmp_path / "p.png", views=2, size=64)
    assert Image.open(path).size == (128, 64)
    with pytest.raises(ExtradimError, match="extension"):
        save_preview(cloud, tmp_path / "p.jpg")
