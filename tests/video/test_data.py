"""The folder dataset on small videos written here: formats, captions, stride, crop, bad files."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from video.checker import check_clips
from video.data import (
    FolderVideoDataset,
    VideoReadError,
    VideoSkipWarning,
    _as_rgb,
    available_backends,
    clip_indices,
    read_captions,
    read_frames,
    resize_center_crop,
)
from video.world import ShapesWorld

iio = pytest.importorskip("imageio.v3")
pytest.importorskip("imageio_ffmpeg")


def _grey_ramp(n: int = 20, h: int = 48, w: int = 64) -> np.ndarray:
    """(n, h, w, 3) uint8: frame i is flat grey 12 i, so a frame's mean tells its index."""
    return np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 12, h * w * 3).reshape(n, h, w, 3)


def _bands(n: int = 6, h: int = 48, w: int = 64) -> np.ndarray:
    """(n, h, w, 3) uint8: green, with 6-pixel red bands at the left and right edges."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 1] = (100 + 20 * np.arange(n, dtype=np.uint8))[:, None, None]  # frames differ (GIF keeps all)
    frames[:, :, :6] = (255, 0, 0)
    frames[:, :, -6:] = (255, 0, 0)
    return frames


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    iio.imwrite(root / "ramp.mp4", _grey_ramp(), fps=8)
    iio.imwrite(root / "bands.gif", _bands(), duration=100, loop=0)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    rows = [("ramp.mp4", "a grey ramp"), ("bands.gif", "green, with red edges"), ("corrupt.mp4", "broken")]
    rows.append(("missing.mp4", "not there"))
    with (root / "captions.csv").open("w") as fh:
        fh.write("path,caption\n" + "".join(f'{p},"{c}"\n' for p, c in rows))
    with (root / "captions.jsonl").open("w") as fh:
        fh.write("".join(json.dumps({"path": p, "caption": c}) + "\n" for p, c in rows))
    return root


def _dataset(folder: Path, captions: str = "captions.csv", **kw) -> tuple[FolderVideoDataset, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = FolderVideoDataset(folder, captions, **kw)
    return ds, [str(w.message) for w in caught if issubclass(w.category, VideoSkipWarning)]


@pytest.mark.parametrize("captions", ["captions.csv", "captions.jsonl"])
def test_bad_files_are_skipped_with_one_warning_each(folder: Path, captions: str) -> None:
    ds, warned = _dataset(folder, captions, clip_length=8, size=32, start="first")
    assert ds.skipped == 2 and len(ds) == 2
    assert len(warned) == 2
    assert any("missing.mp4" in m and "not found" in m for m in warned)
    assert any("corrupt.mp4" in m for m in warned)
    assert sorted(Path(p).name for p in ds.skipped_paths) == ["corrupt.mp4", "missing.mp4"]
    items = [ds[i] for i in range(len(ds))]
    assert [c for _, c in items] == ["a grey ramp", "green, with red edges"]
    for clip, _ in items:  # the Shapes world's format
        assert clip.shape == (3, 8, 32, 32) and clip.dtype == torch.float32
        assert clip.min() >= -1 and clip.max() <= 1


def test_a_file_that_fails_later_is_skipped_and_the_next_item_returned(folder: Path) -> None:
    ds, warned = _dataset(folder, validate=False, clip_length=4, start="first")
    assert warned == [m for m in warned if "missing.mp4" in m] and ds.skipped == 1  # only the missing one
    assert len(ds) == 3
    with pytest.warns(VideoSkipWarning, match="corrupt.mp4"):
        _, caption = ds[2]  # the corrupt file: the epoch goes on with the next valid item
    assert caption == "a grey ramp" and ds.skipped == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", VideoSkipWarning)  # no second warning for the same file
        assert ds[2][1] == "a grey ramp"
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    clips, captions = next(iter(loader))
    assert clips.shape == (3, 3, 4, 32, 32) and len(captions) == 3


def test_stride_and_start(folder: Path) -> None:
    ds, _ = _dataset(folder, clip_length=4, stride=3, size=16, start="first")
    clip, _ = ds[0]
    levels = ((clip + 1) * 127.5).mean((0, 2, 3))  # (F,) mean grey level per frame
    assert torch.allclose(levels, torch.tensor([0.0, 36, 72, 108]), atol=4)  # frames 0, 3, 6, 9
    ds, _ = _dataset(folder, clip_length=4, stride=3, size=16, start="center")
    levels = ((ds[0][0] + 1) * 127.5).mean((0, 2, 3))
    assert torch.allclose(levels, torch.tensor([60.0, 96, 132, 168]), atol=4)  # room 20 - 10: start 5
    # "random" starts are a pure function of (seed, epoch, index).
    a, _ = _dataset(folder, clip_length=4, stride=2, start="random", seed=1)
    b, _ = _dataset(folder, clip_length=4, stride=2, start="random", seed=1)
    assert torch.equal(a[0][0], b[0][0])
    starts = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        starts.add(round(float(((a[0][0] + 1) * 127.5).mean((0, 2, 3))[0]) / 12))
    assert len(starts) > 2 and min(starts) >= 0 and max(starts) <= 20 - 7


def test_short_videos_repeat_their_last_frame(folder: Path) -> None:
    assert clip_indices(5, 4, 2, 0) == [0, 2, 4, 4]
    ds, _ = _dataset(folder, clip_length=12, stride=2, size=16, start="first")
    levels = ((ds[0][0] + 1) * 127.5).mean((0, 2, 3))
    assert torch.allclose(levels[-3:], torch.tensor([216.0, 228, 228]), atol=4)  # frames 18, 19, 19


def test_resize_and_centre_crop(folder: Path) -> None:
    ds, _ = _dataset(folder, clip_length=6, size=32, start="first")
    clip = (ds[1][0] + 1) * 127.5  # bands.gif: (3, 6, 32, 32); GIF keeps the colours exact
    assert clip[0].max() < 2  # the red bands at the sides were cropped away
    assert torch.allclose(clip[1].mean((1, 2)), 100 + 20 * torch.arange(6.0), atol=1)
    wide, _ = _dataset(folder, clip_length=2, size=(24, 40), start="first")
    assert wide[1][0].shape == (3, 2, 24, 40)
    # The helper on its own: cover the target, keep the aspect, crop the middle.
    x = torch.zeros(1, 3, 40, 80)
    x[..., 30:] = 255  # bright from column 30: column 15 of the 20x40 resize, 5 of its crop 10..29
    out = resize_center_crop(x, (20, 20))
    assert out.shape == (1, 3, 20, 20)
    assert out[..., :4].max() == 0 and out[..., 6:].min() == 255


def test_every_backend_reads_every_format(folder: Path) -> None:
    backends = available_backends()
    assert backends, "no video backend installed"
    for name in backends:
        ramp = read_frames(folder / "ramp.mp4", [0, 5, 10], [name])
        assert ramp.shape == (3, 3, 48, 64) and ramp.dtype == torch.uint8
        assert torch.allclose(ramp.float().mean((1, 2, 3)), torch.tensor([0.0, 60, 120]), atol=4)
    if "decord" in backends:  # decord cannot read GIFs; the fallback can
        with pytest.raises(VideoReadError, match="decord"):
            read_frames(folder / "bands.gif", [0], ["decord"])
    assert read_frames(folder / "bands.gif", [0, 5]).shape == (2, 3, 48, 64)
    with pytest.raises(VideoReadError):
        read_frames(folder / "corrupt.mp4", [0])


def test_channels_are_normalised_to_rgb() -> None:
    rgba = np.zeros((2, 4, 6, 4), np.uint8)  # decord returns 4 channels for some resize sizes
    rgba[..., 0] = 7
    assert _as_rgb(rgba).shape == (2, 4, 6, 3) and _as_rgb(rgba)[..., 0].max() == 7
    grey = np.full((2, 4, 6), 9, np.uint8)
    assert _as_rgb(grey).shape == (2, 4, 6, 3) and _as_rgb(grey).min() == 9
    with pytest.raises(VideoReadError):
        _as_rgb(np.zeros((2, 4, 6, 2), np.uint8))


def test_captions_files(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('path,caption\nx.mp4,"a red ball, rolling"\n')
    assert read_captions(tmp_path / "a.csv") == [("x.mp4", "a red ball, rolling")]
    (tmp_path / "b.csv").write_text("file,text\nx.mp4,hi\n")
    with pytest.raises(ValueError, match="path,caption"):
        read_captions(tmp_path / "b.csv")
    (tmp_path / "c.jsonl").write_text('{"path": "x.mp4", "caption": "hi"}\n\n{"path": "y.mp4"}\n')
    with pytest.raises(ValueError, match=":3:"):
        read_captions(tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match=r"\.csv or \.jsonl"):
        read_captions(tmp_path / "d.txt")
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "e.csv").write_text("path,caption\nnotes.txt,hi\n")
    with (
        pytest.warns(VideoSkipWarning, match="not a video extension"),
        pytest.raises(ValueError, match="no readable"),
    ):
        FolderVideoDataset(tmp_path, "e.csv")
    with pytest.raises(FileNotFoundError, match="captions"):
        FolderVideoDataset(tmp_path / "empty")


def test_shapes_clips_survive_a_round_trip_through_files(tmp_path: Path) -> None:
    """Shapes clips written as GIF and MP4 and read back are still read right by the checker."""
    world = ShapesWorld(32, 16, seed=4, split="all")
    clips, _, attrs = world.sample(6, 0)
    frames = ((clips + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()  # (B, F, H, W, 3)
    lines = ["path,caption"]
    for i, f in enumerate(frames):
        iio.imwrite(tmp_path / f"s{i}.gif", f, duration=100, loop=0)
        iio.imwrite(tmp_path / f"s{i}.mp4", f, fps=8)
        lines += [f"s{i}.gif,clip {i}", f"s{i}.mp4,clip {i}"]
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    ds = FolderVideoDataset(tmp_path, clip_length=16, size=32, start="first")
    read = torch.stack([ds[i][0] for i in range(len(ds))])  # (12, 3, 16, 32, 32)
    assert (read[0::2] - clips).abs().max() < 0.05  # GIF: nearly lossless
    result = check_clips(read)
    assert result.attributes[0::2] == attrs  # GIF
    assert result.attributes[1::2] == attrs  # MP4 (h264, lossy)


def test_importing_the_package_loads_no_decoder() -> None:
    heavy = ("decord", "av", "imageio", "scipy")
    code = f"import sys, video; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
