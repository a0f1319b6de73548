"""Cameras around an object and a ray-cast renderer of the shape world's ground-truth meshes.

A camera looks at the origin from ``distance`` along the direction given by ``azimuth`` (degrees,
counter-clockwise about +Z from +X) and ``elevation`` (degrees above the XY plane), +Z up, with a
square pinhole image of field of view ``fov``. The same cameras drive the NeRF renderer of score
distillation, so a view means the same thing to the prior and to the radiance field.

Azimuths of the training views are taken *relative to the object's own frame* (its yaw), so the
prior learns what an object looks like from its front, side or back: the view conditioning that
lets score distillation keep one consistent object instead of the multi-face (Janus) failure.

The renderer casts one ray per sub-pixel with trimesh's ray caster (Embree when installed), shades
the hit with smooth normals (vertex normals interpolated barycentrically) as Lambertian albedo under
a point-like directional light plus ambient, and averages ``supersample``^2 sub-pixels per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import trimesh
from torch import Tensor

__all__ = ["Camera", "RenderedView", "camera_rays", "render_mesh", "view_embedding", "view_phrase"]


@dataclass(frozen=True)
class Camera:
    azimuth: float  # degrees, about +Z from +X
    elevation: float  # degrees above the XY plane
    distance: float = 3.2
    fov: float = 45.0  # degrees, full angle of the square image

    def position(self) -> np.ndarray:
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        return self.distance * np.array(
            [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
        )


def _frame(eye: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward, right and up unit vectors of a camera at ``eye`` looking at the origin, +Z up."""
    fwd = -eye / np.linalg.norm(eye)
    up0 = np.array([0.0, 0.0, 1.0]) if abs(fwd[2]) < 0.999 else np.array([1.0, 0.0, 0.0])
    right = np.cross(fwd, up0)
    right /= np.linalg.norm(right)
    return fwd, right, np.cross(right, fwd)


def camera_rays(camera: Camera, size: int) -> tuple[Tensor, Tensor]:
    """Ray origins and unit directions, both ``(size * size, 3)`` float32, row-major from the top-left
    pixel (row 0 is the top of the image), through pixel centres."""
    eye = camera.position()
    fwd, right, up = _frame(eye)
    half = math.tan(math.radians(camera.fov) / 2)
    c = (np.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    u, v = np.meshgrid(c * half, -c * half)  # v: +1 at the top row
    d = fwd[None] + u.reshape(-1, 1) * right[None] + v.reshape(-1, 1) * up[None]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = np.broadcast_to(eye, d.shape)
    return torch.from_numpy(o.astype(np.float32)), torch.from_numpy(d.astype(np.float32))


@dataclass
class RenderedView:
    image: Tensor  # (3, H, W) in [0, 1]
    mask: Tensor  # (H, W) in [0, 1]: coverage of the object


def render_mesh(
    mesh: trimesh.Trimesh,
    camera: Camera,
    size: int = 32,
    *,
    light: np.ndarray | None = None,
    ambient: float = 0.3,
    background: float | tuple[float, float, float] = 0.0,
    supersample: int = 2,
) -> RenderedView:
    """Render a vertex-coloured mesh: Lambertian ``albedo * (ambient + (1 - ambient) * max(n.l, 0))``.

    ``light`` is the unit direction towards the light (default: from the camera); ``background``
    the grey level or RGB colour of empty pixels.
    """
    s = size * supersample
    origins, dirs = camera_rays(camera, s)
    o, d = origins.numpy().astype(np.float64), dirs.numpy().astype(np.float64)
    tri, ray, loc = mesh.ray.intersects_id(o, d, multiple_hits=False, return_locations=True)
    rgb = np.empty((s * s, 3))
    rgb[:] = background  # a grey level or an RGB triple
    cover = np.zeros(s * s)
    if len(tri):
        l = camera.position() / camera.distance if light is None else np.asarray(light, dtype=np.float64)
        l = l / np.linalg.norm(l)
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tri], loc)
        n = np.einsum("rk,rkc->rc", bary, mesh.vertex_normals[mesh.faces[tri]])
        n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-8)
        albedo = mesh.visual.vertex_colors[mesh.faces[tri][:, 0], :3] / 255.0
        shade = ambient + (1 - ambient) * np.clip(n @ l, 0, None)
        rgb[ray] = albedo * shade[:, None]
        cover[ray] = 1.0
    img = torch.from_numpy(rgb.reshape(s, s, 3).astype(np.float32)).permute(2, 0, 1)
    mask = torch.from_numpy(cover.reshape(1, s, s).astype(np.float32))
    if supersample > 1:
        img = torch.nn.functional.avg_pool2d(img[None], supersample)[0]
        mask = torch.nn.functional.avg_pool2d(mask[None], supersample)[0]
    return RenderedView(img, mask[0])


def view_embedding(azimuth: Tensor, elevation: Tensor, harmonics: int = 1) -> Tensor:
    """``(B, 2 * harmonics + 2)`` camera features, angles in degrees: ``cos(k az), sin(k az)`` for
    ``k = 1..harmonics``, then ``cos el, sin el``. Higher harmonics hand the network the symmetries of
    the shapes directly (a cube repeats every 90 degrees of azimuth, a dumbbell every 180)."""
    if harmonics < 1:
        raise ValueError(f"harmonics must be >= 1, got {harmonics}")
    az, el = torch.deg2rad(azimuth.float()), torch.deg2rad(elevation.float())
    feats = []
    for k in range(1, harmonics + 1):
        feats += [(k * az).cos(), (k * az).sin()]
    return torch.stack([*feats, el.cos(), el.sin()], dim=-1)


def view_phrase(azimuth: float, elevation: float) -> str:
    """DreamFusion's view-dependent prompt suffix: overhead above 60 degrees of elevation, else front
    (azimuth within 45 degrees of 0), back (within 45 degrees of 180) or side."""
    if elevation > 60:
        return "overhead view"
    a = (azimuth + 180) % 360 - 180
    if abs(a) <= 45:
        return "front view"
    if abs(a) >= 135:
        return "back view"
    return "side view"
