"""Clip export: each format reads back with the right frame count and size; writes are atomic."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from shared_core.errors import ExtradimError
from video import export
from video.export import check_output, frame_strip, to_frames, write_clips
from video.world import ShapesWorld


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return ShapesWorld(32, 16, seed=3).sample(2, 0).clips  # (2, 3, 16, 32, 32) in [-1, 1]


@pytest.mark.parametrize(
    ("suffix", "shape"),
    [(".mp4", (16, 128, 256, 3)), (".gif", (16, 128, 256, 3)), (".png", (256, 16 * 128, 3))],
)
def test_formats_round_trip(tmp_path: Path, clips: torch.Tensor, suffix: str, shape: tuple[int, ...]) -> None:
    path = write_clips(tmp_path / f"clip{suffix}", clips)  # two clips: tiled side by side / two rows
    frames = iio.imread(path, plugin="pyav") if suffix == ".mp4" else iio.imread(path)
    assert frames.shape == shape
    assert [p.name for p in tmp_path.iterdir()] == [f"clip{suffix}"]  # no temp file left
    if suffix == ".png":  # lossless: exactly the upscaled frames
        np.testing.assert_array_equal(frames, frame_strip(to_frames(clips, 4)))
    if suffix == ".mp4":
        assert iio.immeta(path, plugin="pyav")["fps"] == 8
        assert iio.immeta(path, plugin="pyav")["codec"] == "h264"
        # Near-lossless h264: small mean error on these flat-coloured frames.
        ref = np.concatenate(list(to_frames(clips, 4)), axis=2)  # (F, H, 2W, 3)
        assert np.abs(frames.astype(float) - ref).mean() < 4
    if suffix == ".gif":
        from PIL import Image

        with Image.open(path) as im:
            assert im.info["loop"] == 0 and im.info["duration"] == 120 and im.n_frames == 16


def test_scale_and_uint8_input(tmp_path: Path, clips: torch.Tensor) -> None:
    u8 = ((clips[:1] + 1) * 127.5).round().to(torch.uint8)
    a = write_clips(tmp_path / "a.png", clips[:1], scale=1)
    b = write_clips(tmp_path / "b.png", u8, scale=1)
    assert iio.imread(a).shape == (32, 16 * 32, 3)
    assert a.read_bytes() == b.read_bytes()
    assert iio.imread(write_clips(tmp_path / "c.gif", clips[:1], scale=2)).shape == (16, 64, 64, 3)


@pytest.mark.parametrize("writer", ["_write_png", "_write_mp4"])
def test_failure_leaves_no_file(tmp_path: Path, clips: torch.Tensor, monkeypatch, writer: str) -> None:
    def broken(path: Path, *args) -> None:
        path.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, writer, broken)
    out = tmp_path / ("x.png" if writer == "_write_png" else "x.mp4")
    with pytest.raises(RuntimeError, match="disk full"):
        write_clips(out, clips)
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_file(tmp_path: Path, clips: torch.Tensor, monkeypatch) -> None:
    out = write_clips(tmp_path / "x.png", clips)
    before = out.read_bytes()
    monkeypatch.setattr(export, "_write_png", lambda path, image: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_clips(out, -clips)
    assert out.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("name", ["clip.jpg", "clip", "missing/clip.mp4"])
def test_bad_outputs_are_one_line_errors(tmp_path: Path, clips: torch.Tensor, name: str) -> None:
    with pytest.raises(ExtradimError) as info:
        check_output(tmp_path / name)
    assert "\n" not in str(info.value)
    with pytest.raises(ExtradimError):
        write_clips(tmp_path / name, clips)
    assert list(tmp_path.iterdir()) == []


def test_bad_clip_shapes() -> None:
    with pytest.raises(ValueError, match="B, 3, F, H, W"):
        to_frames(torch.zeros(3, 16, 32, 32))
