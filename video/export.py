"""Writing clips to disk: ``.mp4`` (h264), ``.gif`` (looping) or ``.png`` (a frame strip).

    check_output("clip.mp4")                     # before any work: suffix and folder, one-line error
    write_clips("clip.mp4", clips)               # (B, 3, F, H, W) in [-1, 1], upscaled x4

Frames are enlarged by an integer factor with nearest-neighbour (a 32x32 clip is unwatchable at its
own size, and blurring would hide what the model drew). Several clips in one video are tiled in a
grid; in a ``.png`` each clip is one row of frames side by side. Every file is written to a
temporary file in its folder and renamed into place, so an error never leaves a half-written file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from shared_core.errors import ExtradimError
from shared_core.io import atomic_path, check_writable

__all__ = ["SUFFIXES", "check_output", "frame_strip", "tile_clips", "to_frames", "write_clips"]

SUFFIXES: tuple[str, ...] = (".mp4", ".gif", ".png")


def check_output(path: str | os.PathLike[str]) -> Path:
    """Validate an output path before generation: a supported suffix and an existing writable folder.

    Raises:
        ExtradimError: one line naming the problem.
    """
    return check_writable(path, SUFFIXES)


def to_frames(clips: Tensor, scale: int = 4) -> np.ndarray:
    """Clips as uint8 RGB frames, enlarged ``scale`` times with nearest-neighbour.

    Args:
        clips: (B, 3, F, H, W), float in [-1, 1] (values outside are clipped) or uint8.
        scale: integer upscaling factor >= 1.

    Returns:
        (B, F, H * scale, W * scale, 3) uint8 array.
    """
    if clips.ndim != 5 or clips.shape[1] != 3 or 0 in clips.shape:
        raise ValueError(f"clips must be a non-empty (B, 3, F, H, W), got {tuple(clips.shape)}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if clips.dtype == torch.uint8:
        u8 = clips.detach().cpu()
    else:
        u8 = ((clips.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    u8 = u8.permute(0, 2, 3, 4, 1)  # (B, F, H, W, 3)
    if scale > 1:
        u8 = u8.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return np.ascontiguousarray(u8.numpy())


def tile_clips(frames: np.ndarray, gap: int = 0) -> np.ndarray:
    """Several clips as one: a near-square grid per frame (row-major, black padding).

    Args:
        frames: (B, F, H, W, 3) uint8.
        gap: black pixels between tiles.

    Returns:
        (F, rows * (H + gap) - gap, cols * (W + gap) - gap, 3) uint8.
    """
    b, f, h, w, c = frames.shape
    cols = math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    out = np.zeros((f, rows * (h + gap) - gap, cols * (w + gap) - gap, c), dtype=np.uint8)
    for i in range(b):
        r, k = divmod(i, cols)
        out[:, r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = frames[i]
    return out


def frame_strip(frames: np.ndarray, gap: int = 0) -> np.ndarray:
    """Each clip's frames side by side, clips stacked as rows.

    Args:
        frames: (B, F, H, W, 3) uint8.
        gap: black pixels between frames and between rows.

    Returns:
        (B * (H + gap) - gap, F * (W + gap) - gap, 3) uint8.
    """
    b, f, h, w, c = frames.shape
    out = np.zeros((b * (h + gap) - gap, f * (w + gap) - gap, c), dtype=np.uint8)
    for i in range(b):
        for t in range(f):
            out[i * (h + gap) : i * (h + gap) + h, t * (w + gap) : t * (w + gap) + w] = frames[i, t]
    return out


def _write_mp4(path: Path, video: np.ndarray, fps: float) -> None:
    import imageio_ffmpeg

    # yuv420p (what every player decodes) needs even sides: pad with black rather than resize.
    _, h, w, _ = video.shape
    video = np.pad(video, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (video.shape[2], video.shape[1]),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=9,  # crf 5: the flat colours of these clips compress well even near-lossless
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-f", "mp4"],
    )
    writer.send(None)  # start the generator
    try:
        for frame in video:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


def _write_gif(path: Path, video: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in video]
    # GIF delays are in 1/100 s (8 fps -> 120 ms). loop=0: repeat forever. Pillow merges identical
    # consecutive frames (adding their delays), so a static clip reads back with fewer frames.
    delay = 10 * max(1, round(100 / fps))
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=delay, loop=0)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")


def write_clips(
    path: str | os.PathLike[str], clips: Tensor, *, scale: int = 4, fps: float = 8.0, gap: int = 0
) -> Path:
    """Write clips to ``path`` atomically; the suffix picks the format.

    ``.mp4``: h264 at ``fps`` (several clips tiled in a grid); ``.gif``: looping, ``1 / fps`` s per
    frame rounded to GIF's 10 ms (tiled likewise); ``.png``: a frame strip, one row per clip.

    Args:
        path: output file (.mp4, .gif or .png); its folder must exist.
        clips: (B, 3, F, H, W), float in [-1, 1] or uint8.
        scale: nearest-neighbour upscaling factor.
        fps: frames per second of videos.
        gap: black pixels between tiles (videos) or frames and rows (png).

    Returns:
        The written path.

    Raises:
        ExtradimError: unsupported suffix or unwritable folder (checked before anything is written).
    """
    out = check_output(path)
    if fps <= 0:
        raise ExtradimError(f"fps must be > 0, got {fps}")
    frames = to_frames(clips, scale)  # (B, F, H', W', 3)
    suffix = out.suffix.lower()
    with atomic_path(out) as tmp:
        if suffix == ".png":
            _write_png(tmp, frame_strip(frames, gap))
        elif suffix == ".gif":
            _write_gif(tmp, tile_clips(frames, gap), fps)
        else:
            _write_mp4(tmp, tile_clips(frames, gap), fps)
    return out
