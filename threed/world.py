"""The shape world: procedural text-to-point-cloud data whose definition evaluation relies on.

An item is one upright solid (+Z up) in one of seven colours; 10 shapes x 7 colours = 70
(colour, shape) combinations, captioned "a {colour} {shape}" or a paraphrase.

The definition (lengths before normalisation; every listed dimension is multiplied by its own
factor uniform in [0.8, 1.2], then the shape is turned by a yaw uniform in [0, 2 pi) about Z):

- sphere: radius 1.
- cube: sides 2 x 2 x 2 (each side jittered on its own, so a box within +-20%).
- cylinder: radius 0.6, height 2.          - cone: base radius 0.8, height 2, apex up.
- torus: major radius 1, minor 0.3, lying flat.
- capsule: radius 0.5, total height 2.5 (a cylinder with hemispherical ends).
- mug: a solid cylinder radius 0.6, height 1.2, with a ring handle on its side: a torus of tube
  radius 0.08 and major radius 0.3 x height standing in the XZ plane, its centre on the wall at
  mid-height (the inner half of the ring is inside the body).
- dumbbell: two spheres radius 0.5 at x = +-1 joined by a bar (cylinder radius 0.15 along X
  between the sphere centres).
- snowman: three stacked spheres, radii 0.7, 0.5, 0.35 (bottom to top); consecutive centres are
  0.8 x (sum of the two radii) apart, so neighbours overlap and the snowman is one body.
- table: top 2 x 1.2 x 0.1 resting at height 1 on four legs 0.1 x 0.1 x 1, inset one leg width
  from the edges of the top. The legs run up to the middle of the top (no coincident faces).

Points: (N, 6) = xyz, then rgb in [-1, 1] (``rgb / 127.5 - 1``, the video world's range), every
point the exact palette colour. xyz are i.i.d. uniform (area-weighted) samples of the outer
surface of the solid, normalised so that the bounding box of the *exact solid* is centred at 0
and its farthest point is at radius 1; the normalisation comes from closed forms (support
functions and farthest-point distances of the primitives), so it does not depend on the
samples or their number. Multi-part shapes are sampled analytically: each part is sampled in
proportion to its area and samples strictly inside another part are discarded (exact inside tests
of the primitives), which leaves uniform samples of the union's boundary. No mesh is built to
sample. ``ground_truth_mesh`` builds the same solid from trimesh primitives (booleans through
manifold3d), watertight, for mesh metrics; the points lie on it up to its tessellation (< 1e-3).

Item ``i`` of a world is a pure function of ``(seed, i)``: all its draws come from a Philox
counter-based generator keyed by (i, seed) (Salmon et al. 2011), so training resumes and shards
exactly.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import trimesh
from torch import Tensor

__all__ = [
    "CANONICAL_DIMS",
    "CAPTION_TEMPLATES",
    "COLOURS",
    "COLOUR_SYNONYMS",
    "SHAPES",
    "SHAPE_SYNONYMS",
    "PointBatch",
    "ShapeParams",
    "ShapeWorld",
    "canonical_caption",
    "ground_truth_mesh",
    "paraphrases",
    "parse_caption",
    "sample_shape",
]

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (240, 40, 40),
    "yellow": (240, 220, 40),
    "green": (40, 200, 40),
    "cyan": (40, 210, 220),
    "blue": (40, 80, 240),
    "magenta": (220, 40, 220),
    "white": (240, 240, 240),
}
SHAPES: tuple[str, ...] = (
    "sphere", "cube", "cylinder", "cone", "torus", "capsule", "mug", "dumbbell", "snowman", "table",
)  # fmt: skip
# The jittered dimensions of each shape at their canonical values (see the module docstring).
CANONICAL_DIMS: dict[str, tuple[float, ...]] = {
    "sphere": (1.0,),  # radius
    "cube": (2.0, 2.0, 2.0),  # sides x, y, z
    "cylinder": (0.6, 2.0),  # radius, height
    "cone": (0.8, 2.0),  # base radius, height
    "torus": (1.0, 0.3),  # major, minor radius
    "capsule": (0.5, 2.5),  # radius, total height
    "mug": (0.6, 1.2, 0.08),  # body radius, height, handle tube radius
    "dumbbell": (0.5, 1.0, 0.15),  # sphere radius, sphere centre |x|, bar radius
    "snowman": (0.7, 0.5, 0.35),  # sphere radii, bottom to top
    "table": (2.0, 1.2, 0.1, 1.0, 0.1),  # top length, width, thickness; leg height, leg side
}
_JITTER = 0.2
_MUG_HANDLE = 0.3  # handle major radius / mug height
_SNOW_GAP = 0.8  # snowman centre distance / sum of the two radii

# Synonyms used in paraphrased captions; the first is the canonical word. Every entry starts
# with a consonant, so "a {colour} {shape}" and "a {shape} in {colour}" stay grammatical.
COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "scarlet", "crimson"),
    "yellow": ("yellow", "golden", "lemon yellow"),
    "green": ("green", "lime green", "grass green"),
    "cyan": ("cyan", "turquoise", "teal"),
    "blue": ("blue", "cobalt blue", "royal blue"),
    "magenta": ("magenta", "pink", "fuchsia"),
    "white": ("white", "snow-white", "bright white"),
}
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "sphere": ("sphere", "ball", "globe"),
    "cube": ("cube", "box", "block"),
    "cylinder": ("cylinder", "column", "pillar"),
    "cone": ("cone", "conical shape", "pointed cone"),
    "torus": ("torus", "donut", "doughnut", "ring"),
    "capsule": ("capsule", "pill", "pill shape"),
    "mug": ("mug", "cup", "coffee mug", "teacup"),
    "dumbbell": ("dumbbell", "barbell", "hand weight"),
    "snowman": ("snowman", "snow man", "snow figure"),
    "table": ("table", "desk", "small table"),
}
# {c} colour, {s} shape.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {c} {s}",
    "{c} {s}",
    "the {c} {s}",
    "one {c} {s}",
    "a single {c} {s}",
    "a {s} in {c}",
    "a {s} coloured {c}",
    "a 3d model of a {c} {s}",
    "a point cloud of a {c} {s}",
)
# Fraction of training captions that are exactly canonical (the evaluation prompts).
_P_CANONICAL = 0.25


def canonical_caption(colour: str, shape: str) -> str:
    """``"a {colour} {shape}"``, e.g. ``"a red sphere"``."""
    return f"a {colour} {shape}"


def paraphrases(colour: str, shape: str) -> list[str]:
    """Every caption the world can give (colour, shape): all templates x synonyms, sorted."""
    return sorted(
        {
            t.format(c=c, s=s)
            for t in CAPTION_TEMPLATES
            for c in COLOUR_SYNONYMS[colour]
            for s in SHAPE_SYNONYMS[shape]
        }
    )


def _norm_text(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


# (normalised phrase, category, value), longest first so "lime green" wins over "green".
_PARSE_TABLE: list[tuple[str, str, str]] = sorted(
    {
        (_norm_text(w), category, value)
        for category, table in (("colour", COLOUR_SYNONYMS), ("shape", SHAPE_SYNONYMS))
        for value, words in table.items()
        for w in words
    },
    key=lambda r: (-len(r[0]), r),
)


def parse_caption(text: str) -> tuple[str, str] | None:
    """Map a canonical or paraphrased caption to ``(colour, shape)``.

    Phrases match on word boundaries, longest first, each word used once; the caption parses when
    it names exactly one colour and one shape (synonyms of one value may repeat), else ``None``.
    """
    words = f" {_norm_text(text)} "
    found: dict[str, set[str]] = {"colour": set(), "shape": set()}
    for phrase, category, value in _PARSE_TABLE:
        key = f" {phrase} "
        while key in words:
            found[category].add(value)
            # Blank the match (keeping the spaces) so shorter phrases cannot reuse its words.
            words = words.replace(key, " " + "#" * len(phrase) + " ", 1)
    if len(found["colour"]) != 1 or len(found["shape"]) != 1:
        return None
    return next(iter(found["colour"])), next(iter(found["shape"]))


# ----------------------------------------------------------------------------------------------
# Primitives: canonical pose (centred, axis +Z), placed by a rotation ``frame`` and a ``centre``
# ----------------------------------------------------------------------------------------------

_SECTIONS = 64  # tessellation of the ground-truth meshes (sagitta < 1.3e-3 of a radius)


class _Part(ABC):
    """A primitive solid. Canonical-frame methods take ``q`` (n, 3) and unit directions ``e`` (k, 3)."""

    def __init__(self, centre: Sequence[float] = (0.0, 0.0, 0.0), frame: np.ndarray | None = None) -> None:
        self.centre = np.asarray(centre, dtype=np.float64)
        self.frame = np.eye(3) if frame is None else frame  # columns: the canonical axes, placed

    @abstractmethod
    def area(self) -> float:
        """Surface area."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 3) area-uniform surface samples, canonical frame."""

    @abstractmethod
    def inside(self, q: np.ndarray) -> np.ndarray:
        """(n,) bool: strictly inside the solid."""

    @abstractmethod
    def support(self, e: np.ndarray) -> np.ndarray:
        """(k,) support function max_{x in solid} e . x."""

    @abstractmethod
    def farthest(self, q: np.ndarray) -> np.ndarray:
        """(n,) distance from q to the farthest point of the solid."""

    @abstractmethod
    def mesh(self) -> trimesh.Trimesh:
        """Watertight tessellation, canonical frame."""

    # Placed versions (local frame of the shape, before yaw and normalisation).
    def to_local(self, q: np.ndarray) -> np.ndarray:
        return q @ self.frame.T + self.centre

    def to_canonical(self, x: np.ndarray) -> np.ndarray:
        return (x - self.centre) @ self.frame

    def placed_mesh(self) -> trimesh.Trimesh:
        m = self.mesh()
        t = np.eye(4)
        t[:3, :3], t[:3, 3] = self.frame, self.centre
        return m.apply_transform(t)


def _lateral(v: np.ndarray) -> np.ndarray:
    return np.hypot(v[..., 0], v[..., 1])


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class _Sphere(_Part):
    def __init__(self, r: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.r = r

    def area(self) -> float:
        return 4 * math.pi * self.r**2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.r * _unit_vectors(rng, n)

    def inside(self, q: np.ndarray) -> np.ndarray:
        return np.einsum("ni,ni->n", q, q) < self.r**2

    def support(self, e: np.ndarray) -> np.ndarray:
        return np.full(len(e), self.r)

    def farthest(self, q: np.ndarray) -> np.ndarray:
        return np.linalg.norm(q, axis=1) + self.r

    def mesh(self) -> trimesh.Trimesh:
        return trimesh.creation.icosphere(subdivisions=4, radius=self.r)


class _Box(_Part):
    def __init__(self, half: Sequence[float], **kw: Any) -> None:
        super().__init__(**kw)
        self.h = np.asarray(half, dtype=np.float64)

    def _face_areas(self) -> np.ndarray:
        hx, hy, hz = self.h
        return 8 * np.array([hy * hz, hx * hz, hx * hy])  # both faces normal to x, y, z

    def area(self) -> float:
        return float(self._face_areas().sum())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        a = self._face_areas()
        axis = rng.choice(3, size=n, p=a / a.sum())
        q = rng.uniform(-1.0, 1.0, (n, 3)) * self.h
        q[np.arange(n), axis] = np.where(rng.random(n) < 0.5, -1.0, 1.0) * self.h[axis]
        return q

    def inside(self, q: np.ndarray) -> np.ndarray:
        return np.all(np.abs(q) < self.h, axis=1)

    def support(self, e: np.ndarray) -> np.ndarray:
        return np.abs(e) @ self.h

    def farthest(self, q: np.ndarray) -> np.ndarray:
        return np.linalg.norm(np.abs(q) + self.h, axis=1)

    def mesh(self) -> trimesh.Trimesh:
        return trimesh.creation.box(extents=2 * self.h)


class _Cylinder(_Part):
    def __init__(self, r: float, hh: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.r, self.hh = r, hh  # radius, half height

    def area(self) -> float:
        return 4 * math.pi * self.r * self.hh + 2 * math.pi * self.r**2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        side = rng.random(n) < 4 * math.pi * self.r * self.hh / self.area()
        rho = np.where(side, self.r, self.r * np.sqrt(rng.random(n)))
        cap_z = np.where(rng.random(n) < 0.5, -self.hh, self.hh)
        z = np.where(side, rng.uniform(-self.hh, self.hh, n), cap_z)
        theta = rng.uniform(0, 2 * math.pi, n)
        return np.stack([rho * np.cos(theta), rho * np.sin(theta), z], axis=1)

    def inside(self, q: np.ndarray) -> np.ndarray:
        return (_lateral(q) < self.r) & (np.abs(q[:, 2]) < self.hh)

    def support(self, e: np.ndarray) -> np.ndarray:
        return self.hh * np.abs(e[:, 2]) + self.r * _lateral(e)

    def farthest(self, q: np.ndarray) -> np.ndarray:
        return np.hypot(np.abs(q[:, 2]) + self.hh, _lateral(q) + self.r)

    def mesh(self) -> trimesh.Trimesh:
        return trimesh.creation.cylinder(radius=self.r, height=2 * self.hh, sections=_SECTIONS)


class _Cone(_Part):
    """Base disc at z = -hh, apex at z = +hh."""

    def __init__(self, r: float, hh: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.r, self.hh = r, hh

    def _lateral_area(self) -> float:
        return math.pi * self.r * math.hypot(self.r, 2 * self.hh)

    def area(self) -> float:
        return self._lateral_area() + math.pi * self.r**2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        side = rng.random(n) < self._lateral_area() / self.area()
        # Both the lateral surface (distance from the apex) and the base disc (radius) have a
        # density growing linearly in t = rho / r, so t = sqrt(u) for both.
        t = np.sqrt(rng.random(n))
        z = np.where(side, self.hh - 2 * self.hh * t, -self.hh)
        theta = rng.uniform(0, 2 * math.pi, n)
        return np.stack([self.r * t * np.cos(theta), self.r * t * np.sin(theta), z], axis=1)

    def inside(self, q: np.ndarray) -> np.ndarray:
        z = q[:, 2]
        return (np.abs(z) < self.hh) & (_lateral(q) < self.r * (self.hh - z) / (2 * self.hh))

    def support(self, e: np.ndarray) -> np.ndarray:
        return np.maximum(self.hh * e[:, 2], -self.hh * e[:, 2] + self.r * _lateral(e))

    def farthest(self, q: np.ndarray) -> np.ndarray:
        apex = np.linalg.norm(q - np.array([0.0, 0.0, self.hh]), axis=1)
        return np.maximum(apex, np.hypot(q[:, 2] + self.hh, _lateral(q) + self.r))

    def mesh(self) -> trimesh.Trimesh:
        m = trimesh.creation.cone(radius=self.r, height=2 * self.hh, sections=_SECTIONS)
        return m.apply_translation([0.0, 0.0, -self.hh])


class _Torus(_Part):
    """Ring of major radius ``big`` in the XY plane, tube radius ``r``."""

    def __init__(self, big: float, r: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.big, self.r = big, r

    def area(self) -> float:
        return 4 * math.pi**2 * self.big * self.r

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        # The area element is r (R + r cos phi) dphi dtheta: invert the phi CDF
        # (R phi + r sin phi) / (2 pi R) = u by Newton (derivative >= 1 - r/R > 0).
        target, k = 2 * math.pi * rng.random(n), self.r / self.big
        phi = target.copy()
        for _ in range(8):
            phi -= (phi + k * np.sin(phi) - target) / (1 + k * np.cos(phi))
        theta = rng.uniform(0, 2 * math.pi, n)
        rho = self.big + self.r * np.cos(phi)
        return np.stack([rho * np.cos(theta), rho * np.sin(theta), self.r * np.sin(phi)], axis=1)

    def inside(self, q: np.ndarray) -> np.ndarray:
        return (_lateral(q) - self.big) ** 2 + q[:, 2] ** 2 < self.r**2

    def support(self, e: np.ndarray) -> np.ndarray:
        return self.big * _lateral(e) + self.r

    def farthest(self, q: np.ndarray) -> np.ndarray:
        return np.hypot(q[:, 2], _lateral(q) + self.big) + self.r

    def mesh(self) -> trimesh.Trimesh:
        sections = {"major_sections": _SECTIONS, "minor_sections": _SECTIONS // 2}
        return trimesh.creation.torus(self.big, self.r, **sections)


class _Capsule(_Part):
    """Segment z in [-hh, hh] swept by a ball of radius r."""

    def __init__(self, r: float, hh: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.r, self.hh = r, hh

    def area(self) -> float:
        return 4 * math.pi * self.r * self.hh + 4 * math.pi * self.r**2

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        side = rng.random(n) < self.hh / (self.hh + self.r)
        p = self.r * _unit_vectors(rng, n)
        theta = rng.uniform(0, 2 * math.pi, n)
        cyl = np.stack([self.r * np.cos(theta), self.r * np.sin(theta), rng.uniform(-self.hh, self.hh, n)], 1)
        p[:, 2] += np.sign(p[:, 2]) * self.hh  # hemispheres moved to the ends
        return np.where(side[:, None], cyl, p)

    def inside(self, q: np.ndarray) -> np.ndarray:
        dz = np.maximum(np.abs(q[:, 2]) - self.hh, 0.0)
        return _lateral(q) ** 2 + dz**2 < self.r**2

    def support(self, e: np.ndarray) -> np.ndarray:
        return self.hh * np.abs(e[:, 2]) + self.r

    def farthest(self, q: np.ndarray) -> np.ndarray:
        return np.hypot(_lateral(q), np.abs(q[:, 2]) + self.hh) + self.r

    def mesh(self) -> trimesh.Trimesh:
        return trimesh.creation.capsule(height=2 * self.hh, radius=self.r, count=[_SECTIONS, _SECTIONS // 2])


_AXIS_X = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # canonical +Z -> +X
_AXIS_Y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # canonical +Z -> +Y


def _parts(shape: str, dims: Sequence[float]) -> list[_Part]:
    """The primitives of ``shape`` in its local frame (base on z = 0 where it has one)."""
    if shape == "sphere":
        return [_Sphere(dims[0])]
    if shape == "cube":
        return [_Box(np.asarray(dims) / 2)]
    if shape == "cylinder":
        return [_Cylinder(dims[0], dims[1] / 2)]
    if shape == "cone":
        return [_Cone(dims[0], dims[1] / 2)]
    if shape == "torus":
        return [_Torus(dims[0], dims[1])]
    if shape == "capsule":
        return [_Capsule(dims[0], dims[1] / 2 - dims[0])]
    if shape == "mug":
        r, h, tube = dims
        body = _Cylinder(r, h / 2, centre=(0, 0, h / 2))
        return [body, _Torus(_MUG_HANDLE * h, tube, centre=(r, 0, h / 2), frame=_AXIS_Y)]
    if shape == "dumbbell":
        r, x, bar = dims
        ends = [_Sphere(r, centre=(sx, 0, r)) for sx in (-x, x)]
        return [*ends, _Cylinder(bar, x, centre=(0, 0, r), frame=_AXIS_X)]
    if shape == "snowman":
        z = np.cumsum([dims[0], _SNOW_GAP * (dims[0] + dims[1]), _SNOW_GAP * (dims[1] + dims[2])])
        return [_Sphere(r, centre=(0, 0, zc)) for r, zc in zip(dims, z)]
    if shape == "table":
        length, width, thick, height, leg = dims
        top = _Box((length / 2, width / 2, thick / 2), centre=(0, 0, height + thick / 2))
        # Legs from the floor to the middle of the top, centred one leg width in from each edge.
        half_leg = (leg / 2, leg / 2, (height + thick / 2) / 2)
        corners = [(sx * (length / 2 - leg), sy * (width / 2 - leg)) for sx in (-1, 1) for sy in (-1, 1)]
        return [top] + [_Box(half_leg, centre=(x, y, half_leg[2])) for x, y in corners]
    raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")


# ----------------------------------------------------------------------------------------------
# Parameters, normalisation, sampling, ground-truth mesh
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeParams:
    """The continuous parameters of one item.

    ``dims`` are the shape's jittered dimensions (as ``CANONICAL_DIMS``); a local point x maps to
    ``scale * (Rz(yaw) x - centre)``, the normalised frame of the points.
    """

    dims: tuple[float, ...]
    yaw: float
    centre: tuple[float, float, float]
    scale: float

    def transform(self) -> np.ndarray:
        """(4, 4) homogeneous local -> normalised transform."""
        t = np.eye(4)
        t[:3, :3] = self.scale * _rot_z(self.yaw)
        t[:3, 3] = -self.scale * np.asarray(self.centre)
        return t


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _normalisation(parts: Sequence[_Part], yaw: float) -> tuple[np.ndarray, float]:
    """Bounding-box centre (3,) of the yawed solid and 1 / (its farthest distance from it)."""
    rot = _rot_z(yaw)
    dirs = np.concatenate([np.eye(3), -np.eye(3)])  # (6, 3) world axes
    # Support of a placed part: e . (R c) + h_canonical(frame^T R^T e).
    h = np.max([(dirs @ rot @ p.centre) + p.support(dirs @ rot @ p.frame) for p in parts], axis=0)
    centre = (h[:3] - h[3:]) / 2
    local = rot.T @ centre
    radius = max(float(p.farthest(p.to_canonical(local[None]))[0]) for p in parts)
    return centre, 1.0 / radius


def _params(shape: str, rng: np.random.Generator, jitter: float = _JITTER) -> ShapeParams:
    base = np.asarray(CANONICAL_DIMS[shape])
    dims = base * rng.uniform(1 - jitter, 1 + jitter, base.shape)
    yaw = float(rng.uniform(0, 2 * math.pi))
    centre, scale = _normalisation(_parts(shape, dims), yaw)
    cx, cy, cz = centre.tolist()
    return ShapeParams(tuple(dims.tolist()), yaw, (cx, cy, cz), scale)


def _colour_unit(colour: str) -> np.ndarray:
    return np.asarray(COLOURS[colour], dtype=np.float64) / 127.5 - 1


def sample_shape(
    shape: str, colour: str, params: ShapeParams, num_points: int, rng: np.random.Generator
) -> np.ndarray:
    """(num_points, 6) float32 samples of the outer surface: normalised xyz, rgb in [-1, 1].

    Each part gets samples in proportion to its area; those strictly inside another part are
    dropped, so the kept samples are i.i.d. uniform on the union's boundary. Rounds repeat until
    ``num_points`` are kept, then a random subset of that size is returned.
    """
    parts = _parts(shape, params.dims)
    areas = np.array([p.area() for p in parts])
    kept: list[np.ndarray] = []
    have, want = 0, num_points
    while have < num_points:
        counts = rng.multinomial(want, areas / areas.sum())
        for k, (part, n) in enumerate(zip(parts, counts)):
            x = part.to_local(part.sample(rng, int(n)))
            for j, other in enumerate(parts):
                if j != k:
                    x = x[~other.inside(other.to_canonical(x))]
            kept.append(x)
            have += len(x)
        want = 2 * (num_points - have) + 64  # the rare second round: overshoot, then subsample
    xyz = np.concatenate(kept)
    xyz = xyz[rng.permutation(len(xyz))[:num_points]]
    xyz = params.scale * (xyz @ _rot_z(params.yaw).T - np.asarray(params.centre))
    rgb = np.broadcast_to(_colour_unit(colour), (num_points, 3))
    return np.concatenate([xyz, rgb], axis=1).astype(np.float32)


def ground_truth_mesh(shape: str, colour: str, params: ShapeParams) -> trimesh.Trimesh:
    """The exact solid of an item as a watertight triangle mesh in the points' normalised frame,
    vertex colours set to the palette colour. Multi-part shapes are unions (manifold3d)."""
    meshes = [p.placed_mesh() for p in _parts(shape, params.dims)]
    mesh = meshes[0] if len(meshes) == 1 else trimesh.boolean.union(meshes, engine="manifold")
    mesh.apply_transform(params.transform())
    mesh.visual.vertex_colors = np.array([*COLOURS[colour], 255], dtype=np.uint8)
    return mesh


# ----------------------------------------------------------------------------------------------
# The world
# ----------------------------------------------------------------------------------------------


class PointBatch(NamedTuple):
    """``points`` (B, N, 6) float32 (xyz normalised, rgb in [-1, 1]); ``captions`` B strings;
    ``labels`` (B,) long index into ``SHAPES``; ``colours`` (B,) long index into ``COLOURS``;
    ``params`` B ``ShapeParams``."""

    points: Tensor
    captions: list[str]
    labels: Tensor
    colours: Tensor
    params: list[ShapeParams]


def _item_rng(seed: int, item: int) -> np.random.Generator:
    key = np.array([item & 0xFFFFFFFFFFFFFFFF, seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key=key))


def _pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


class ShapeWorld:
    """A seeded stream of coloured point clouds; item ``i`` is a pure function of ``(seed, i)``.

    Args:
        num_points: points per cloud.
        seed: the world's seed.
        classes: shapes drawn (uniformly); None means all of ``SHAPES``.
        colours: colours drawn (uniformly); None means all of ``COLOURS``.
        captions: "paraphrase" (canonical 25% of the time, else a random template and synonyms)
            or "canonical".
        jitter: each dimension is drawn uniformly within +-``jitter`` of its canonical value (the
            world's definition is 0.2; other values serve calibration, e.g. a narrower shape
            distribution in ``benchmarks/points_nna_calibration.py``).
    """

    def __init__(
        self,
        num_points: int = 2048,
        seed: int = 0,
        classes: Sequence[str] | None = None,
        colours: Sequence[str] | None = None,
        captions: Literal["paraphrase", "canonical"] = "paraphrase",
        jitter: float = _JITTER,
    ) -> None:
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        if captions not in ("paraphrase", "canonical"):
            raise ValueError(f"captions must be 'paraphrase' or 'canonical', got {captions!r}")
        self.classes = tuple(SHAPES if classes is None else classes)
        self.colours = tuple(COLOURS if colours is None else colours)
        checks = (("class", self.classes, SHAPES), ("colour", self.colours, tuple(COLOURS)))
        for name, chosen, valid in checks:
            bad = [c for c in chosen if c not in valid]
            if bad or not chosen:
                raise ValueError(f"unknown or no {name}: {bad}; valid: {', '.join(valid)}")
        self.num_points, self.seed, self.caption_mode = num_points, int(seed), captions
        self.jitter = float(jitter)

    def item_ids(self, batch: int, index_or_generator: int | torch.Generator) -> Tensor:
        """(batch,) int64 item ids: ``index * batch + arange(batch)``, or random ids from a generator."""
        if isinstance(index_or_generator, torch.Generator):
            return torch.randint(0, 2**62, (batch,), generator=index_or_generator)
        return int(index_or_generator) * batch + torch.arange(batch)

    def _describe_one(self, item: int) -> tuple[str, str, ShapeParams, str, np.random.Generator]:
        rng = _item_rng(self.seed, item)
        # shape, colour, then caption template, colour and shape synonyms (drawn in every mode, so
        # the geometry does not depend on the caption mode)
        u = rng.random(5)
        shape, colour = _pick(self.classes, u[0]), _pick(self.colours, u[1])
        params = _params(shape, rng, self.jitter)
        if self.caption_mode == "canonical" or u[2] < _P_CANONICAL:
            caption = canonical_caption(colour, shape)
        else:
            template = _pick(CAPTION_TEMPLATES, (u[2] - _P_CANONICAL) / (1 - _P_CANONICAL))
            c, s = _pick(COLOUR_SYNONYMS[colour], u[3]), _pick(SHAPE_SYNONYMS[shape], u[4])
            caption = template.format(c=c, s=s)
        return shape, colour, params, caption, rng

    def describe(self, ids: Tensor | Sequence[int]) -> list[tuple[str, str, ShapeParams, str]]:
        """(shape, colour, params, caption) of the items ``ids``, without sampling points."""
        return [self._describe_one(int(i))[:4] for i in torch.as_tensor(ids).tolist()]

    def sample_ids(self, ids: Tensor | Sequence[int]) -> PointBatch:
        """The items ``ids`` as a ``PointBatch`` of (B, num_points, 6) clouds."""
        clouds, captions, labels, colours, params = [], [], [], [], []
        for i in torch.as_tensor(ids).tolist():
            shape, colour, p, caption, rng = self._describe_one(int(i))
            clouds.append(sample_shape(shape, colour, p, self.num_points, rng))
            captions.append(caption)
            labels.append(SHAPES.index(shape))
            colours.append(list(COLOURS).index(colour))
            params.append(p)
        points = torch.from_numpy(np.stack(clouds)) if clouds else torch.empty(0, self.num_points, 6)
        return PointBatch(points, captions, torch.tensor(labels, dtype=torch.long),
                          torch.tensor(colours, dtype=torch.long), params)  # fmt: skip

    def sample(self, batch: int, index_or_generator: int | torch.Generator) -> PointBatch:
        """Batch ``index`` (items ``index * batch ...``), or ``batch`` random items from a generator."""
        return self.sample_ids(self.item_ids(batch, index_or_generator))
