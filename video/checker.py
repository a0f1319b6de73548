"""A hand-coded attribute checker for Shapes clips (no learning): what a clip shows, measured.

Per frame, the foreground is every pixel whose brightest channel exceeds a threshold; its
8-connected components are the objects (tiny specks are ignored) and the largest one is measured:

- colour: the mean colour of the object's interior pixels, read as white when unsaturated, else
  as the palette colour of nearest hue;
- shape: fill ratios of the object's bounding box, medians over frames: of the whole box
  (square ~1, circle ~pi/4) and of its top half (an upright triangle ~1/4, a circle ~pi/4). The
  top half tells triangles apart with a wide margin even after blur or video compression, where
  the whole-box ratio (triangle ~1/2) drifts towards the circle's;
- motion: least-squares slopes of the centroid (x, y) and of log(area) over the frames, each
  scaled by its minimum in the world's definition (displacement 0.25 frame widths, area ratio
  1.4); the largest wins, its sign gives the direction (image y points down).

A clip is ``single_object`` when every frame has exactly one object. Its accuracy on rendered clips
is the ceiling for any evaluation with it (see tests/video/test_checker.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from video.world import COLOURS, Attributes

__all__ = ["CheckResult", "CheckerConfig", "attribute_accuracy", "check_clips", "label_components"]


@dataclass(frozen=True)
class CheckerConfig:
    """Thresholds of the checker (intensities in [0, 1], lengths in frame widths).

    Attributes:
        threshold: foreground when the brightest channel exceeds this (the dimmest palette colour
            peaks at 0.78, so edge pixels covered less than ~40% fall below).
        min_object_frac: components smaller than this fraction of the frame are specks, not objects.
        white_saturation: an object whose interior saturation is below this is white.
        triangle_max_top_fill: top-half fill ratios below this are triangles (0.25 vs pi/4).
        square_min_fill: other objects whose fill ratio is above this are squares (pi/4 vs 1).
        min_motion: the winning motion score (1 = the definition's minimum) must reach this,
            otherwise the motion is None (a static object).
        min_single_frames: fraction of frames that must hold exactly one object for
            ``single_object``.
    """

    threshold: float = 0.3
    min_object_frac: float = 0.004
    white_saturation: float = 0.35
    triangle_max_top_fill: float = 0.55
    square_min_fill: float = 0.90
    min_motion: float = 0.5
    min_single_frames: float = 1.0


def _hsv(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue in degrees [0, 360), saturation and value of (..., 3) RGB in [0, 1]."""
    r, g, b = rgb.unbind(-1)
    mx, mn = rgb.amax(-1), rgb.amin(-1)
    delta = (mx - mn).clamp(min=1e-8)
    hue = torch.where(
        mx == r, ((g - b) / delta) % 6, torch.where(mx == g, (b - r) / delta + 2, (r - g) / delta + 4)
    )
    return hue * 60, (mx - mn) / mx.clamp(min=1e-8), mx


# Hues (degrees) of the saturated palette colours; white is told apart by its saturation.
_HUE_NAMES = [name for name in COLOURS if name != "white"]
_HUES = _hsv(torch.tensor([COLOURS[n] for n in _HUE_NAMES], dtype=torch.float32) / 255)[0]  # (6,)

_MOTION_NAMES = ("left", "right", "up", "down", "grow", "shrink")
# The definition's minima: displacement 0.25 frame widths; area ratio 1.4 (log 0.336).
_MIN_SHIFT, _MIN_LOG_AREA = 0.25, math.log(1.4)


# ----------------------------------------------------------------------------------------------
# Connected components
# ----------------------------------------------------------------------------------------------


def _label_scipy(mask: Tensor) -> Tensor | None:
    try:
        from scipy import ndimage
    except ImportError:
        return None
    # 8-connected within a frame, never across frames: only the middle plane of the 3x3x3 structure.
    structure = torch.zeros(3, 3, 3, dtype=torch.bool)
    structure[1] = True
    labels, _ = ndimage.label(mask.numpy(), structure=structure.numpy())
    return torch.from_numpy(labels).long()


def _label_torch(mask: Tensor) -> Tensor:
    # Every foreground pixel starts with its own id and takes the largest id among its 8
    # neighbours until nothing changes: each component ends up with one id (a few dozen passes).
    n, h, w = mask.shape
    ids = torch.arange(1, n * h * w + 1, dtype=torch.float64).view(n, 1, h, w)
    lab = torch.where(mask[:, None], ids, 0.0)
    while True:
        new = torch.where(mask[:, None], F.max_pool2d(lab, 3, 1, 1), 0.0)
        if torch.equal(new, lab):
            break
        lab = new
    # Renumber 1..L; torch.unique puts the background (0) first only when there is one.
    _, inverse = torch.unique(lab.long(), return_inverse=True)
    return inverse.view(n, h, w) + int(bool(mask.all()))


def label_components(mask: Tensor, backend: str = "auto") -> Tensor:
    """8-connected components of each frame.

    Args:
        mask: (N, H, W) bool.
        backend: "auto" (scipy when installed, else torch), "scipy" or "torch".

    Returns:
        (N, H, W) long labels: 0 background, components numbered 1..L across all frames.
    """
    if backend not in ("auto", "scipy", "torch"):
        raise ValueError(f"backend must be 'auto', 'scipy' or 'torch', got {backend!r}")
    if backend != "torch":
        labels = _label_scipy(mask)
        if labels is not None:
            return labels
        if backend == "scipy":
            raise ImportError("scipy is not installed")
    return _label_torch(mask)


# ----------------------------------------------------------------------------------------------
# The checker
# ----------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """Per-clip predictions and the measurements behind them.

    Attributes:
        colour, shape, motion: B predictions each (None: no object, or no clear motion).
        num_objects: (B, F) long, objects per frame.
        single_object: (B,) bool, exactly one object in (almost) every frame.
        rgb: (B, 3) mean interior colour in [0, 1].
        fill: (B,) median fill ratio of the bounding box.
        top_fill: (B,) median fill ratio of the top half of the bounding box.
        shift: (B, 2) centroid displacement (x, y) over the clip, in frame widths.
        log_area_ratio: (B,) log(last area / first area) from the fitted trend.
    """

    colour: list[str | None]
    shape: list[str | None]
    motion: list[str | None]
    num_objects: Tensor
    single_object: Tensor
    rgb: Tensor
    fill: Tensor
    top_fill: Tensor
    shift: Tensor
    log_area_ratio: Tensor

    @property
    def attributes(self) -> list[Attributes | None]:
        """Attributes of each single-object clip with all three read; None otherwise."""
        out: list[Attributes | None] = []
        for c, s, m, ok in zip(self.colour, self.shape, self.motion, self.single_object.tolist()):
            out.append(Attributes(c, s, m) if ok and c and s and m else None)
        return out


def _to_unit(clips: Tensor) -> Tensor:
    if clips.dtype == torch.uint8:
        return clips.float() / 255
    return ((clips.float() + 1) / 2).clamp(0, 1)


def _trend(y: Tensor, w: Tensor) -> Tensor:
    """Weighted least-squares slope of (B, F) series ``y`` times (F - 1): the fitted total change."""
    f = y.shape[1]
    t = torch.linspace(0, 1, f, dtype=y.dtype)[None]  # (1, F)
    sw = w.sum(1, keepdim=True).clamp(min=1e-8)
    tm = (w * t).sum(1, keepdim=True) / sw
    ym = (w * y).sum(1, keepdim=True) / sw
    cov = (w * (t - tm) * (y - ym)).sum(1)
    var = (w * (t - tm) ** 2).sum(1).clamp(min=1e-8)
    return cov / var


@torch.no_grad()
def check_clips(
    clips: Tensor, config: CheckerConfig | None = None, backend: str = "auto", chunk: int = 128
) -> CheckResult:
    """Read colour, shape and motion off each clip.

    Args:
        clips: (B, 3, F, H, W), float in [-1, 1] or uint8 in [0, 255].
        config: thresholds; the defaults fit the Shapes world.
        backend: connected-components backend ("auto", "scipy", "torch").
        chunk: clips measured at once (bounds memory; the result does not depend on it).

    Returns:
        A ``CheckResult``.
    """
    cfg = config or CheckerConfig()
    if clips.ndim != 5 or clips.shape[1] != 3 or 0 in clips.shape:
        raise ValueError(f"clips must be a non-empty (B, 3, F, H, W), got {tuple(clips.shape)}")
    parts = [_check(clips[i : i + chunk], cfg, backend) for i in range(0, len(clips), chunk)]
    if len(parts) == 1:
        return parts[0]
    return CheckResult(
        *([x for p in parts for x in getattr(p, k)] for k in ("colour", "shape", "motion")),
        *(
            torch.cat([getattr(p, k) for p in parts])
            for k in ("num_objects", "single_object", "rgb", "fill", "top_fill", "shift", "log_area_ratio")
        ),
    )


def _check(clips: Tensor, cfg: CheckerConfig, backend: str) -> CheckResult:
    x = _to_unit(clips)  # (B, 3, F, H, W)
    b, _, f, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, 3, h, w)  # (N, 3, H, W)
    value = frames.amax(1)  # (N, H, W) brightest channel
    labels = label_components(value > cfg.threshold, backend)  # (N, H, W)

    # Components: size, frame, which are objects (not specks), and each frame's largest one.
    n_lab = int(labels.max())
    flat = labels.flatten()
    sizes = torch.bincount(flat, minlength=n_lab + 1)  # (L+1,)
    frame_idx = torch.arange(b * f).repeat_interleave(h * w)
    frame_of = torch.zeros(n_lab + 1, dtype=torch.long).scatter_(0, flat, frame_idx)
    is_object = sizes >= max(1.0, cfg.min_object_frac * h * w)
    is_object[0] = False
    num_objects = torch.bincount(frame_of[is_object], minlength=b * f).view(b, f)
    # The largest component per frame (ties broken by label) via one scatter-amax of a packed key.
    key = sizes * (n_lab + 1) + torch.arange(n_lab + 1)
    key[0] = 0
    best = torch.zeros(b * f, dtype=torch.long).scatter_reduce_(0, frame_of, key, "amax") % (n_lab + 1)
    best = torch.where(is_object[best], best, 0)  # a frame holding only specks shows no object
    obj = (labels == best[:, None, None]) & (best[:, None, None] > 0)  # (N, H, W)
    present = obj.flatten(1).any(1).view(b, f)  # (B, F)

    # Colour: mean of the interior (pixels near the object's peak brightness), over all frames.
    peak = torch.where(obj, value, 0.0).amax((1, 2), keepdim=True)  # (N, 1, 1)
    interior = (obj & (value >= 0.9 * peak)).float()  # (N, H, W)
    rgb_sum = (frames * interior[:, None]).sum((2, 3)).view(b, f, 3).sum(1)  # (B, 3)
    rgb = rgb_sum / interior.view(b, -1).sum(1, keepdim=True).clamp(min=1)
    hue, sat, _ = _hsv(rgb)
    dist = (hue[:, None] - _HUES[None]).abs()
    dist = torch.minimum(dist, 360 - dist)  # circular hue distance
    nearest = dist.argmin(1).tolist()

    # Soft coverage of the object (plus a 1-pixel rim for anti-aliased edges under the threshold).
    level = rgb.amax(1).clamp(min=1e-3).repeat_interleave(f)[:, None, None]  # (N, 1, 1)
    rim = F.max_pool2d(obj[:, None].float(), 3, 1, 1)[:, 0] > 0
    cov = torch.where(rim, (value / level).clamp(0, 1), 0.0)  # (N, H, W)
    area = cov.sum((1, 2))  # (N,) px
    # Soft box: each column (row) counts by its strongest pixel; the rows' profile places it.
    rows = cov.amax(2)  # (N, H)
    width, height = cov.amax(1).sum(1), rows.sum(1)  # (N,)
    centre_y = (rows * (torch.arange(h) + 0.5)).sum(1) / height.clamp(min=1e-6)
    top = centre_y - height / 2
    # The fraction of each pixel row inside the top half [top, centre_y] of the box.
    row_y = torch.arange(h, dtype=torch.float32)
    in_top = (torch.minimum(row_y + 1, centre_y[:, None]) - torch.maximum(row_y, top[:, None])).clamp(0, 1)
    box = (width * height).clamp(min=1e-6)
    fill = torch.where(present, (area / box).view(b, f), torch.nan).nanmedian(1).values  # (B,)
    top_area = (cov.sum(2) * in_top).sum(1)
    top_fill = torch.where(present, (top_area / (box / 2)).view(b, f), torch.nan).nanmedian(1).values

    # Motion: fitted changes of centroid and log-area over the frames that show an object.
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    mass = area.clamp(min=1e-6)
    cx = ((cov * xs).sum((1, 2)) / mass / w).view(b, f)
    cy = ((cov * ys).sum((1, 2)) / mass / w).view(b, f)
    weight = present.float()
    shift = torch.stack([_trend(cx, weight), _trend(cy, weight)], -1)  # (B, 2)
    log_area = _trend(torch.log(mass / (w * w)).view(b, f), weight)  # (B,)
    # Scores in the order of _MOTION_NAMES (left, right, up, down, grow, shrink); 1 = the minimum.
    dx, dy = shift.unbind(-1)
    scores = torch.cat(
        [
            torch.stack([-dx, dx, -dy, dy], -1) / _MIN_SHIFT,
            torch.stack([log_area, -log_area], -1) / _MIN_LOG_AREA,
        ],
        -1,
    )  # (B, 6)
    best_score, best_motion = scores.max(1)

    single = (num_objects == 1).float().mean(1) >= cfg.min_single_frames - 1e-9
    colour: list[str | None] = []
    shape: list[str | None] = []
    motion: list[str | None] = []
    for i in range(b):
        if not bool(present[i].any()):
            colour.append(None)
            shape.append(None)
            motion.append(None)
            continue
        colour.append("white" if float(sat[i]) < cfg.white_saturation else _HUE_NAMES[nearest[i]])
        if float(top_fill[i]) < cfg.triangle_max_top_fill:
            shape.append("triangle")
        else:
            shape.append("square" if float(fill[i]) > cfg.square_min_fill else "circle")
        ok = int(present[i].sum()) >= 2 and float(best_score[i]) >= cfg.min_motion
        motion.append(_MOTION_NAMES[int(best_motion[i])] if ok else None)
    return CheckResult(colour, shape, motion, num_objects, single, rgb, fill, top_fill, shift, log_area)


def attribute_accuracy(result: CheckResult, targets: Sequence[Attributes]) -> dict[str, float]:
    """Fractions of clips read as their targets.

    Returns:
        ``colour``, ``shape``, ``motion`` (each attribute on its own), ``single_object`` (the clip
        holds exactly one object) and ``all`` (single object and all three right).
    """
    n = len(targets)
    if n != len(result.colour):
        raise ValueError(f"{len(result.colour)} results but {n} targets")
    if n == 0:
        raise ValueError("no clips")
    single = result.single_object.tolist()
    hits = {"colour": 0, "shape": 0, "motion": 0, "single_object": 0, "all": 0}
    for i, t in enumerate(targets):
        c, s, m = result.colour[i] == t.colour, result.shape[i] == t.shape, result.motion[i] == t.motion
        hits["colour"] += c
        hits["shape"] += s
        hits["motion"] += m
        hits["single_object"] += single[i]
        hits["all"] += c and s and m and single[i]
    return {k: v / n for k, v in hits.items()}
