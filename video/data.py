"""Users' own clips: a folder of videos plus a captions file, in the same format as the Shapes world.

Videos (mp4, webm, avi, gif, mov, mkv) are read with decord (the ``eva-decord`` distribution),
falling back to PyAV, then imageio, per file (decord cannot read GIFs, for one). Every listed file
is probed when the dataset is built, so a missing, unreadable or corrupt file is skipped there
with one ``VideoSkipWarning`` and counted in ``.skipped``; a file that still fails to decode later
is skipped the same way and the next valid item is returned, so an epoch never crashes on data.
The counters are per process (DataLoader workers count their own late failures).
"""

from __future__ import annotations

import csv
import functools
import gc
import json
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from shared_core.errors import describe_error

__all__ = [
    "VIDEO_EXTENSIONS",
    "FolderVideoDataset",
    "VideoReadError",
    "VideoSkipWarning",
    "available_backends",
    "clip_indices",
    "read_captions",
    "read_frames",
    "resize_center_crop",
]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".gif", ".mov", ".mkv")
Backend = Literal["decord", "av", "imageio"]
_BACKENDS: tuple[Backend, ...] = ("decord", "av", "imageio")


class VideoReadError(Exception):
    """A video that no backend could read."""


class VideoSkipWarning(UserWarning):
    """A listed video was skipped (missing, unreadable or corrupt)."""


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


def read_captions(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(video path, caption) rows of a CSV (header ``path,caption``) or JSONL captions file.

    Raises:
        ValueError: an unknown extension, missing columns or a malformed line (with its number).
    """
    path = Path(path)
    rows: list[tuple[str, str]] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"path", "caption"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: CSV needs columns path,caption; missing {sorted(missing)}")
            for row in reader:
                rows.append(((row["path"] or "").strip(), (row["caption"] or "").strip()))
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    rows.append((str(item["path"]).strip(), str(item["caption"]).strip()))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(
                        f"{path}:{n}: expected a JSON object with path and caption ({exc})"
                    ) from exc
    else:
        raise ValueError(f"{path}: captions must be .csv or .jsonl")
    return rows


# ----------------------------------------------------------------------------------------------
# Decoding: three backends behind one pair of functions (count frames, read frames)
# ----------------------------------------------------------------------------------------------


def available_backends() -> list[Backend]:
    """The installed backends, in the order they are tried."""
    import importlib.util

    return [b for b in _BACKENDS if importlib.util.find_spec(b) is not None]


def _decord_count(path: str) -> int:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    vr[0]  # decode one frame: some broken files open fine
    return len(vr)


def _decord_read(path: str, indices: list[int]) -> np.ndarray:
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    return vr.get_batch(indices).asnumpy()


def _av_count(path: str) -> int:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        if stream.frames > 0:
            next(container.decode(stream))
            return int(stream.frames)
        # Containers without a frame count in the header (webm): count by decoding.
        return sum(1 for _ in container.decode(stream))


def _av_read(path: str, indices: list[int]) -> np.ndarray:
    import av

    wanted = set(indices)
    last = max(indices)
    got: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    if len(got) < len(wanted):
        raise VideoReadError(f"decoded {len(got)} of {len(wanted)} requested frames")
    return np.stack([got[i] for i in indices])


def _imageio_frames(path: str) -> Iterator[np.ndarray]:
    import imageio.v3 as iio

    with iio.imopen(path, "r") as reader:
        for frame in reader.iter():
            yield np.asarray(frame)


def _quietly_collected(fn: Callable[..., Any]) -> Callable[..., Any]:
    # imageio's ffmpeg plugin leaves its pipes open (after a failure, and after reading to the
    # end): ignore the ResourceWarnings while it runs and collect what it left before leaving,
    # re-raising a fresh error so no traceback keeps the pipes alive past the collection.
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                return fn(*args)
            except Exception as exc:
                error = describe_error(exc, 120)
            finally:
                gc.collect()
        raise VideoReadError(error)

    return wrapper


@_quietly_collected
def _imageio_count(path: str) -> int:
    return sum(1 for _ in _imageio_frames(path))


@_quietly_collected
def _imageio_read(path: str, indices: list[int]) -> np.ndarray:
    wanted, last = set(indices), max(indices)
    got: dict[int, np.ndarray] = {}
    for i, frame in enumerate(_imageio_frames(path)):
        if i in wanted:
            got[i] = frame
        if i >= last:
            break
    if len(got) < len(wanted):
        raise VideoReadError(f"decoded {len(got)} of {len(wanted)} requested frames")
    return np.stack([got[i] for i in indices])


_COUNT: dict[str, Callable[[str], int]] = {
    "decord": _decord_count,
    "av": _av_count,
    "imageio": _imageio_count,
}
_READ: dict[str, Callable[[str, list[int]], np.ndarray]] = {
    "decord": _decord_read,
    "av": _av_read,
    "imageio": _imageio_read,
}


def _as_rgb(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, C) uint8 with C = 3: drops alpha (decord gives RGBA at some sizes), repeats grey."""
    if frames.ndim == 3:  # (F, H, W) grey
        frames = frames[..., None]
    if frames.ndim != 4:
        raise VideoReadError(f"unexpected frame array of shape {frames.shape}")
    c = frames.shape[-1]
    if c == 1:
        frames = np.repeat(frames, 3, axis=-1)
    elif c == 4:
        frames = frames[..., :3]
    elif c != 3:
        raise VideoReadError(f"unexpected channel count {c}")
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _probe_file(path: str, backends: list[Backend]) -> tuple[Backend, int]:
    """The first backend that opens ``path`` and decodes a frame, and the frame count it reports."""
    errors = []
    for b in backends:
        try:
            n = _COUNT[b](path)
            if n < 1:
                raise VideoReadError("no frames")
            return b, n
        except Exception as exc:  # any backend failure means "try the next one"; reported below
            errors.append(f"{b}: {describe_error(exc, 120)}")
    raise VideoReadError("; ".join(errors) or "no video backend installed (pip install eva-decord av)")


def read_frames(
    path: str | os.PathLike[str], indices: list[int], backends: list[Backend] | None = None
) -> Tensor:
    """Frames ``indices`` of a video as (F, 3, H, W) uint8, trying the backends in order.

    Raises:
        VideoReadError: no backend could read those frames (the message lists each failure).
    """
    errors = []
    for b in backends or available_backends():
        try:
            frames = _as_rgb(_READ[b](str(path), indices))
            if frames.shape[0] != len(indices):
                raise VideoReadError(f"got {frames.shape[0]} of {len(indices)} frames")
            return torch.from_numpy(frames).permute(0, 3, 1, 2)
        except Exception as exc:  # try the next backend; all failures are reported together
            errors.append(f"{b}: {describe_error(exc, 120)}")
    raise VideoReadError("; ".join(errors) or "no video backend installed (pip install eva-decord av)")


# ----------------------------------------------------------------------------------------------
# Clip selection and geometry
# ----------------------------------------------------------------------------------------------


def clip_indices(num_frames: int, clip_length: int, stride: int, start: int) -> list[int]:
    """``start, start + stride, ...`` (clip_length of them); past the end the last frame repeats."""
    return [min(start + k * stride, num_frames - 1) for k in range(clip_length)]


def resize_center_crop(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize so the frames cover ``size`` (aspect kept, antialiased), then crop the centre.

    Args:
        frames: (F, 3, H, W) uint8 or float.
        size: target (height, width).

    Returns:
        (F, 3, size[0], size[1]) float32 on the input's scale.
    """
    th, tw = size
    h, w = frames.shape[-2:]
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    x = frames.float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return x[..., top : top + th, left : left + tw]


def _hash_uniform(*keys: int) -> float:
    # SplitMix64 over the keys: the "random" clip start is a pure function of (seed, epoch, index).
    z = 0x243F6A8885A308D3
    for k in keys:
        z = ((z ^ (int(k) & 0xFFFFFFFFFFFFFFFF)) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
    return (z >> 11) / float(1 << 53)


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------


class FolderVideoDataset(torch.utils.data.Dataset):
    """Captioned clips from a folder of videos, in the Shapes world's format.

    Item ``i`` is ``(clip, caption)`` with ``clip`` (3, F, H, W) float in [-1, 1]: ``clip_length``
    frames ``stride`` apart, resized to cover ``size`` and centre-cropped.

    Args:
        root: folder the video paths are relative to.
        captions_file: CSV (``path,caption``) or JSONL (``{"path", "caption"}``), relative to
            ``root`` or absolute; None looks for ``captions.csv`` then ``captions.jsonl`` in root.
        clip_length: frames per clip; shorter videos repeat their last frame.
        stride: take every ``stride``-th frame.
        size: output side, or (height, width).
        start: where the clip starts: "random" (a pure function of seed, epoch and index; call
            ``set_epoch`` for a new window each epoch), "first" or "center".
        seed: seed of the "random" starts.
        backend: "auto" (decord, then PyAV, then imageio, whichever are installed) or one of them.
        validate: probe every file now (skips and counts bad ones up front); False defers the
            probe to the first read of each file.

    Attributes:
        skipped: number of files skipped so far; ``skipped_paths`` with the reasons in ``skip_reasons``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        captions_file: str | os.PathLike[str] | None = None,
        clip_length: int = 16,
        stride: int = 1,
        size: int | tuple[int, int] = 32,
        start: Literal["random", "first", "center"] = "random",
        seed: int = 0,
        backend: Literal["auto", "decord", "av", "imageio"] = "auto",
        validate: bool = True,
    ) -> None:
        if clip_length < 1 or stride < 1:
            raise ValueError(f"clip_length and stride must be >= 1, got {clip_length}, {stride}")
        if start not in ("random", "first", "center"):
            raise ValueError(f"start must be 'random', 'first' or 'center', got {start!r}")
        self.root = Path(root)
        self.clip_length, self.stride, self.start, self.seed = clip_length, stride, start, seed
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.epoch = 0
        if backend == "auto":
            self.backends = available_backends()
        elif backend in _BACKENDS:
            self.backends = [backend]
        else:
            raise ValueError(f"backend must be 'auto' or one of {', '.join(_BACKENDS)}, got {backend!r}")
        if not self.backends:
            raise ImportError("no video backend installed: pip install eva-decord (or av, or imageio)")
        self.captions_file = self._find_captions(captions_file)
        self.skipped = 0
        self.skipped_paths: list[str] = []
        self.skip_reasons: dict[str, str] = {}
        self._items: list[tuple[str, str]] = []  # (path, caption)
        self._probes: dict[str, tuple[Backend, int]] = {}  # path -> (backend that read it, frame count)
        self._bad: set[str] = set()
        for rel, caption in read_captions(self.captions_file):
            path = str(rel if os.path.isabs(rel) else self.root / rel)
            if path in self._bad:
                continue
            if not os.path.isfile(path):
                self._skip(path, "file not found")
            elif Path(path).suffix.lower() not in VIDEO_EXTENSIONS:
                self._skip(path, f"not a video extension ({', '.join(VIDEO_EXTENSIONS)})")
            else:
                self._items.append((path, caption))
        if validate:
            self._items = [it for it in self._items if self._probe(it[0]) is not None]
        if not self._items:
            raise ValueError(f"{self.captions_file}: no readable videos ({self.skipped} skipped)")

    def _find_captions(self, captions_file: str | os.PathLike[str] | None) -> Path:
        if captions_file is not None:
            p = Path(captions_file)
            return p if p.is_absolute() else self.root / p
        for name in ("captions.csv", "captions.jsonl"):
            if (self.root / name).is_file():
                return self.root / name
        raise FileNotFoundError(f"no captions file given and no captions.csv/.jsonl in {self.root}")

    def _skip(self, path: str, reason: str) -> None:
        if path in self._bad:
            return
        self._bad.add(path)
        self.skipped += 1
        self.skipped_paths.append(path)
        self.skip_reasons[path] = reason
        warnings.warn(f"skipping video {path}: {reason}", VideoSkipWarning, stacklevel=3)

    def _probe(self, path: str) -> tuple[Backend, int] | None:
        """The file's (backend, frame count), probed once and cached; None for a bad file."""
        if path in self._bad:
            return None
        if path not in self._probes:
            try:
                self._probes[path] = _probe_file(path, self.backends)
            except VideoReadError as exc:
                self._skip(path, str(exc))
                return None
        return self._probes[path]

    def set_epoch(self, epoch: int) -> None:
        """Use new "random" clip windows (each a pure function of seed, epoch and index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._items)

    def _start(self, index: int, num_frames: int) -> int:
        span = (self.clip_length - 1) * self.stride + 1
        room = max(num_frames - span, 0)
        if self.start == "first" or room == 0:
            return 0
        if self.start == "center":
            return room // 2
        return min(int(_hash_uniform(self.seed, self.epoch, index) * (room + 1)), room)

    def _load(self, index: int) -> tuple[Tensor, str] | None:
        path, caption = self._items[index]
        probe = self._probe(path)
        if probe is None:
            return None
        backend, n = probe
        indices = clip_indices(n, self.clip_length, self.stride, self._start(index, n))
        # The probed backend first; the others only if it fails on these frames.
        order = [backend] + [b for b in self.backends if b != backend]
        try:
            frames = read_frames(path, indices, order)
        except VideoReadError as exc:
            self._skip(path, str(exc))
            return None
        x = resize_center_crop(frames, self.size)  # (F, 3, H, W) in [0, 255]
        clip = x.clamp_(0, 255).div_(127.5).sub_(1).permute(1, 0, 2, 3).contiguous()  # (3, F, H, W)
        return clip, caption

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        """``(clip (3, F, H, W) float in [-1, 1], caption)``; a bad file yields the next valid item."""
        n = len(self._items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        index %= n
        for k in range(n):
            out = self._load((index + k) % n)
            if out is not None:
                return out
        raise VideoReadError(f"no readable video left in {self.captions_file} ({self.skipped} skipped)")
