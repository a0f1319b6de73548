"""Point clouds on disk: PLY, OBJ (vertices) and NPY in, PLY and NPY out.

Loaded and saved clouds use the shape world's layout: (N, 3) xyz or (N, 6) xyz + rgb in [-1, 1]
(8-bit file colours c map to c / 127.5 - 1). Any unreadable, empty or non-finite file raises an
``ExtradimError`` with a one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import trimesh
from torch import Tensor

from shared_core.errors import ExtradimError, describe_error
from shared_core.io import atomic_path, check_writable

__all__ = ["POINT_SUFFIXES", "load_points", "save_points"]

POINT_SUFFIXES = (".ply", ".obj", ".npy")


def _read(p: Path) -> np.ndarray:
    if p.suffix.lower() == ".npy":
        arr = np.load(p, allow_pickle=False)
        if arr.ndim != 2 or arr.shape[1] not in (3, 6):
            raise ValueError(f"expected an (N, 3) or (N, 6) array, got shape {arr.shape}")
        return arr.astype(np.float32)
    geom = trimesh.load(p, file_type=p.suffix.lower().lstrip("."), process=False)
    if isinstance(geom, trimesh.Scene):
        geom = geom.to_geometry()
    xyz = np.asarray(geom.vertices, dtype=np.float32)
    colours = geom.colors if isinstance(geom, trimesh.PointCloud) else None
    if isinstance(geom, trimesh.Trimesh) and geom.visual.kind == "vertex":
        colours = geom.visual.vertex_colors
    if colours is None or len(colours) != len(xyz):
        return xyz
    return np.concatenate([xyz, np.asarray(colours, dtype=np.float32)[:, :3] / 127.5 - 1], axis=1)


def load_points(path: str | os.PathLike[str]) -> Tensor:
    """Read a point cloud (a mesh's vertices for PLY/OBJ meshes).

    Returns:
        (N, 3) float32 xyz, or (N, 6) with rgb in [-1, 1] when the file has per-point colours.

    Raises:
        ExtradimError: missing file, unknown suffix, malformed content, no points or non-finite values.
    """
    p = Path(path)
    if p.suffix.lower() not in POINT_SUFFIXES:
        suffix = p.suffix or "(none)"
        raise ExtradimError(f"unsupported point-cloud extension {suffix!r} for {p}; use .ply, .obj, .npy")
    if not p.is_file():
        raise ExtradimError(f"point-cloud file not found: {p}")
    try:
        points = _read(p)
    except Exception as e:  # every parser error of a bad file becomes one user-facing line
        raise ExtradimError(f"cannot read point cloud {p}: {describe_error(e)}") from e
    if len(points) == 0:
        raise ExtradimError(f"point cloud {p} has no points")
    if not np.isfinite(points).all():
        raise ExtradimError(f"point cloud {p} has non-finite values")
    return torch.from_numpy(np.ascontiguousarray(points))


def save_points(points: Tensor | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write an (N, 3) or (N, 6) cloud (rgb in [-1, 1]) as PLY (8-bit colours) or NPY, atomically."""
    p = check_writable(path, (".ply", ".npy"))
    arr = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] not in (3, 6):
        raise ValueError(f"points must be (N, 3) or (N, 6), got shape {arr.shape}")
    with atomic_path(p) as tmp:
        if p.suffix.lower() == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, arr)
        else:
            colours = None
            if arr.shape[1] == 6:
                colours = np.clip(np.round((arr[:, 3:] + 1) * 127.5), 0, 255).astype(np.uint8)
            trimesh.PointCloud(arr[:, :3], colors=colours).export(tmp, file_type="ply")
    return p
