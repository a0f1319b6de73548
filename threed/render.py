"""Preview images of coloured point clouds: orthographic views at a few azimuths, each point a
small disc, nearest disc wins per pixel (a z-buffer resolved by sorting), darker with depth.
No OpenGL; numpy only."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from shared_core.io import atomic_path, check_writable

__all__ = ["render_views", "save_preview"]

_BACKGROUND = (32, 32, 32)  # dark, so the white shapes show


def render_views(
    points: Tensor | np.ndarray,
    views: int = 4,
    size: int = 192,
    elevation: float = 20.0,
    radius: int | None = None,
) -> np.ndarray:
    """Render a cloud from ``views`` azimuths evenly spaced over 360 degrees, side by side.

    Args:
        points: (N, 3) xyz (drawn light grey) or (N, 6) xyz + rgb in [-1, 1]; +Z is up, the cloud
            should fit in the unit ball (the shape world's normalisation).
        views: number of azimuths, starting at 30 degrees.
        size: side of each view in pixels.
        elevation: camera elevation in degrees.
        radius: disc radius of each point in pixels; None sizes it so that the discs of a
            uniformly sampled surface roughly tile it.

    Returns:
        (size, views * size, 3) uint8 image.
    """
    pts = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float64)
    xyz = pts[:, :3]
    rgb = (pts[:, 3:6] + 1) * 127.5 if pts.shape[1] >= 6 else np.full_like(xyz, 200.0)
    if radius is None:
        radius = max(1, round(1.2 * size / math.sqrt(len(xyz))))
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = np.stack([dy[dy**2 + dx**2 <= radius**2], dx[dy**2 + dx**2 <= radius**2]], 1)  # (D, 2)
    el = math.radians(elevation)
    out = np.empty((size, views * size, 3), dtype=np.uint8)
    for v in range(views):
        az = math.radians(30.0 + 360.0 * v / views)
        # A right-handed camera frame: towards the viewer (at azimuth az, elevation el), right, up.
        back = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        right = np.array([-math.sin(az), math.cos(az), 0.0])
        up = np.cross(back, right)
        u, w, depth = xyz @ right, xyz @ up, xyz @ back  # (N,) each; larger depth is nearer
        col = np.round((u * 0.45 + 0.5) * (size - 1)).astype(int)
        row = np.round((0.5 - w * 0.45) * (size - 1)).astype(int)
        rows = (row[:, None] + disc[None, :, 0]).ravel()  # (N * D,)
        cols = (col[:, None] + disc[None, :, 1]).ravel()
        ok = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
        pix = (rows * size + cols)[ok]
        owner = np.repeat(np.arange(len(xyz)), len(disc))[ok]
        order = np.lexsort((-depth[owner], pix))  # per pixel, nearest first
        pix, owner = pix[order], owner[order]
        first = np.r_[True, pix[1:] != pix[:-1]]
        shade = 0.55 + 0.45 * (depth[owner[first]] + 1) / 2  # nearer is brighter
        image = np.tile(np.array(_BACKGROUND, dtype=np.float64), (size * size, 1))
        image[pix[first]] = rgb[owner[first]] * np.clip(shade, 0.0, 1.0)[:, None]
        out[:, v * size : (v + 1) * size] = np.clip(image, 0, 255).reshape(size, size, 3).astype(np.uint8)
    return out


def save_preview(points: Tensor | np.ndarray, path: str | os.PathLike[str], **kwargs: int | float) -> Path:
    """Write ``render_views(points, **kwargs)`` as a PNG, atomically."""
    p = check_writable(path, (".png",))
    with atomic_path(p) as tmp:
        Image.fromarray(render_views(points, **kwargs)).save(tmp, format="PNG")
    return p
