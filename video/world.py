"""The Shapes world: procedural text-to-clip training data whose definition evaluation relies on.

A clip shows exactly one upright shape (circle, square or triangle) in one of seven colours on a
black background, doing one of six motions; 7 x 3 x 6 = 126 (colour, shape, motion) combinations.
About 10% of them are held out of training (``default_held_out``) so evaluation can report seen
and unseen compositions separately.

The definition (all lengths in frame widths; frames are square):

- size: the bounding box of the shape is ``s x s`` with ``s`` in [0.25, 0.45] (circle diameter,
  square side, triangle base = height, apex up).
- translations (left/right/up/down): constant size, constant velocity, displacement ``D`` in
  [0.3, 1 - s] along the axis (>= 0.25 with margin), random start, the box always inside the frame.
- growing/shrinking: fixed centre, side ratio in [1.3, 1.8] between first and last frame, so the
  area changes by a factor in [1.69, 3.24] (grows by >= 69% / shrinks by >= 41%), and the largest
  box is inside the frame.
- pixels: exact palette colour times the fraction of the pixel the shape covers (exact along each
  row, 8 sub-rows per pixel row), rounded to uint8; the background is 0.

Clip ``i`` of a world is a pure function of ``(seed, i)`` (a counter-based hash, no generator
state), so training resumes and shards exactly: ``sample(batch, index)`` is clips
``index * batch ... index * batch + batch - 1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CAPTION_TEMPLATES",
    "COLOURS",
    "COLOUR_SYNONYMS",
    "MOTIONS",
    "MOTION_PHRASES",
    "MOTION_SYNONYMS",
    "SHAPES",
    "SHAPE_SYNONYMS",
    "Attributes",
    "ClipParams",
    "ShapesBatch",
    "ShapesWorld",
    "all_combinations",
    "canonical_caption",
    "default_held_out",
    "paraphrases",
    "parse_caption",
    "rasterize",
    "render_clip",
    "render_clips",
    "to_unit_range",
]

# ----------------------------------------------------------------------------------------------
# The vocabulary of the world
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
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "grow", "shrink")
# The motion words of the canonical caption "a {colour} {shape} {motion phrase}".
MOTION_PHRASES: dict[str, str] = {
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "grow": "growing",
    "shrink": "shrinking",
}

# Synonyms used in training captions; the first of each list is the canonical word. Every entry
# starts with a consonant so the templates' "a" stays grammatical.
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
    "circle": ("circle", "ball", "disc", "dot", "round shape"),
    "square": ("square", "box", "block", "tile", "square shape"),
    "triangle": ("triangle", "triangular shape", "three-sided shape", "pyramid shape"),
}
MOTION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "left": ("moving left", "sliding to the left", "drifting leftwards", "moving to the left", "heading left",
             "travelling left", "gliding left"),
    "right": ("moving right", "sliding to the right", "drifting rightwards", "moving to the right",
              "heading right", "travelling right", "gliding right"),
    "up": ("moving up", "drifting upwards", "rising", "floating up", "moving upwards", "going up",
           "climbing"),
    "down": ("moving down", "drifting downwards", "falling", "sinking", "dropping", "moving downwards",
             "going down"),
    "grow": ("growing", "getting bigger", "expanding", "growing larger", "swelling", "increasing in size"),
    "shrink": ("shrinking", "getting smaller", "contracting", "becoming smaller", "decreasing in size",
               "shrinking away"),
}  # fmt: skip

# Paraphrase templates: {c} colour, {s} shape, {m} motion phrase (a gerund phrase), {a} a size
# adjective that carries no information (the "small blue square drifting upwards").
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a {c} {s} {m}",
    "{c} {s} {m}",
    "the {c} {s} {m}",
    "a {c} {s} that is {m}",
    "a {c} {s} is {m}",
    "{a} {c} {s} {m}",
    "a {a} {c} {s} {m}",
    "a video of a {c} {s} {m}",
    "one {c} {s} {m} on a black background",
    "a single {c} {s} {m}, black background",
)
_ADJECTIVES = ("small", "little", "simple", "flat", "plain")
# Fraction of training captions that are exactly canonical, so the evaluation prompts are in
# distribution while the text encoder still sees the paraphrases.
_P_CANONICAL = 0.25

# ----------------------------------------------------------------------------------------------
# Attributes and the held-out split
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Attributes:
    """What a clip shows: one of 7 colours x 3 shapes x 6 motions (names as in the constants)."""

    colour: str
    shape: str
    motion: str

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("colour", self.colour, tuple(COLOURS)),
            ("shape", self.shape, SHAPES),
            ("motion", self.motion, MOTIONS),
        ):
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")

    @property
    def index(self) -> int:
        """Position in ``all_combinations()`` (colour-major, then shape, then motion)."""
        c, s, m = list(COLOURS).index(self.colour), SHAPES.index(self.shape), MOTIONS.index(self.motion)
        return (c * len(SHAPES) + s) * len(MOTIONS) + m

    @classmethod
    def from_index(cls, index: int) -> Attributes:
        return all_combinations()[index]

    @classmethod
    def coerce(cls, value: Attributes | Sequence[str]) -> Attributes:
        """An ``Attributes`` from itself or a (colour, shape, motion) triple, e.g. from a YAML list."""
        if isinstance(value, Attributes):
            return value
        if isinstance(value, str) or len(value) != 3:
            raise ValueError(f"expected (colour, shape, motion), got {value!r}")
        return cls(*value)


_ALL = tuple(Attributes(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS)


def all_combinations() -> tuple[Attributes, ...]:
    """The 126 combinations in index order."""
    return _ALL


def default_held_out() -> tuple[Attributes, ...]:
    """The 13 (~10%) combinations kept out of training by default.

    Combination ``i`` (i = 0..12) takes colour ``i mod 7``, shape ``i mod 3`` and motion ``i mod 6``
    (distinct for i < 42 by the Chinese remainder theorem). So each colour is held out at most
    twice, each shape 4-5 times, each motion 2-3 times, and every colour, shape, motion and every
    pair of them still occurs in training: a held-out clip is a new composition of seen parts.

        red circle left, yellow square right, green triangle up, cyan circle down,
        blue square grow, magenta triangle shrink, white circle left, red square right,
        yellow triangle up, green circle down, cyan square grow, blue triangle shrink,
        magenta circle left
    """
    colours = list(COLOURS)
    return tuple(Attributes(colours[i % 7], SHAPES[i % 3], MOTIONS[i % 6]) for i in range(13))


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


def canonical_caption(attrs: Attributes) -> str:
    """``"a {colour} {shape} {motion phrase}"``, e.g. ``"a red circle moving left"``."""
    return f"a {attrs.colour} {attrs.shape} {MOTION_PHRASES[attrs.motion]}"


def _fill(template: str, c: str, s: str, m: str, a: str) -> str:
    return template.format(c=c, s=s, m=m, a=a)


def paraphrases(attrs: Attributes) -> list[str]:
    """Every caption the world can give ``attrs`` (all templates x synonyms x adjectives)."""
    out = {canonical_caption(attrs)}
    for t in CAPTION_TEMPLATES:
        for c in COLOUR_SYNONYMS[attrs.colour]:
            for s in SHAPE_SYNONYMS[attrs.shape]:
                for m in MOTION_SYNONYMS[attrs.motion]:
                    for a in _ADJECTIVES if "{a}" in t else ("",):
                        out.add(_fill(t, c, s, m, a))
    return sorted(out)


def _caption_from_uniforms(attrs: Attributes, u: np.ndarray) -> str:
    """One training caption for ``attrs`` chosen by five uniforms in [0, 1)."""
    if u[0] < _P_CANONICAL:
        return canonical_caption(attrs)

    def pick(options: Sequence[str], x: float) -> str:
        return options[min(int(x * len(options)), len(options) - 1)]

    template = pick(CAPTION_TEMPLATES, (u[0] - _P_CANONICAL) / (1 - _P_CANONICAL))
    return _fill(
        template,
        pick(COLOUR_SYNONYMS[attrs.colour], u[1]),
        pick(SHAPE_SYNONYMS[attrs.shape], u[2]),
        pick(MOTION_SYNONYMS[attrs.motion], u[3]),
        pick(_ADJECTIVES, u[4]),
    )


def _norm_text(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _parse_table() -> list[tuple[str, str, str]]:
    """(normalised phrase, category, value), longest phrase first so "lime green" wins over "green"."""
    extra_motion = {
        "left": ("left", "leftwards", "leftward", "to the left"),
        "right": ("right", "rightwards", "rightward", "to the right"),
        "up": ("up", "upwards", "upward", "rises", "ascending"),
        "down": ("down", "downwards", "downward", "falls", "descending", "sinks", "drops"),
        "grow": ("grows", "grow", "bigger", "larger", "expands", "enlarging"),
        "shrink": ("shrinks", "shrink", "smaller", "contracts"),
    }
    extra_shape = {"circle": ("round", "disk", "circular"), "square": ("cube",), "triangle": ("triangular",)}
    rows = []
    for category, table, extra in (
        ("colour", COLOUR_SYNONYMS, {}),
        ("shape", SHAPE_SYNONYMS, extra_shape),
        ("motion", MOTION_SYNONYMS, extra_motion),
    ):
        for value, words in table.items():
            for w in (*words, *extra.get(value, ())):
                rows.append((_norm_text(w), category, value))
    return sorted(set(rows), key=lambda r: (-len(r[0]), r))


_PARSE_TABLE = _parse_table()


def parse_caption(text: str) -> Attributes | None:
    """Map a canonical or paraphrased caption back to its attributes.

    Phrases are matched on word boundaries, longest first, each word used once; the caption
    parses when it names exactly one colour, one shape and one motion (synonyms of the same
    value may repeat). Anything else (missing or conflicting attributes) gives ``None``.
    """
    words = f" {_norm_text(text)} "
    found: dict[str, set[str]] = {"colour": set(), "shape": set(), "motion": set()}
    for phrase, category, value in _PARSE_TABLE:
        key = f" {phrase} "
        while key in words:
            found[category].add(value)
            # Blank the match out (keeping the spaces) so shorter phrases cannot reuse its words.
            words = words.replace(key, " " + "#" * len(phrase) + " ", 1)
    if any(len(v) != 1 for v in found.values()):
        return None
    return Attributes(*(next(iter(found[k])) for k in ("colour", "shape", "motion")))


# ----------------------------------------------------------------------------------------------
# The rasteriser
# ----------------------------------------------------------------------------------------------

_SUBROWS = 8  # vertical supersampling; coverage along a row is exact


def rasterize(
    shape_ids: Tensor, centres: Tensor, sides: Tensor, colours: Tensor, size: int, chunk: int = 512
) -> Tensor:
    """Anti-aliased frames of one upright shape each on black.

    Every shape is convex, so each horizontal line through it meets it in one span
    ``[cx - hw(y), cx + hw(y)]``; the coverage of a pixel by a span is exact, and averaging over 8
    sub-rows per pixel row gives the area coverage. Only a square window around each shape is
    computed (about a quarter of the frame), vectorised over frames and chunked for memory.

    Args:
        shape_ids: (N,) long, index into ``SHAPES``.
        centres: (N, 2) bounding-box centres (x, y) in frame widths, y pointing down.
        sides: (N,) bounding-box side in frame widths.
        colours: (N, 3) RGB in [0, 255].
        size: frame height and width in pixels.
        chunk: frames rendered at once (bounds the (chunk, 8 win, win) temporaries).

    Returns:
        (N, 3, size, size) uint8 frames.
    """
    n = shape_ids.shape[0]
    out = torch.zeros(n, 3, size * size, dtype=torch.uint8)
    if n == 0:
        return out.view(n, 3, size, size)
    # One window side for all frames (so the work is one dense tensor): the largest box + 2 px.
    win = min(size, int(float(sides.max()) * size) + 3)
    sub = (torch.arange(win * _SUBROWS, dtype=torch.float32) + 0.5) / _SUBROWS  # (Wk,) sub-rows, px
    cols = torch.arange(win, dtype=torch.float32)  # (win,) pixel left edges within the window
    for lo in range(0, n, chunk):
        sl = slice(lo, min(lo + chunk, n))
        cx, cy = (centres[sl].float() * size).unbind(-1)  # (n,) px
        half = (sides[sl].float() * size / 2)[:, None]  # (n, 1) px
        # Window origins: the box's top-left pixel, shifted back inside the frame where needed.
        x0 = (cx[:, None] - half).floor().clamp(0, size - win)  # (n, 1)
        y0 = (cy[:, None] - half).floor().clamp(0, size - win)
        dy = y0 + sub - cy[:, None]  # (n, Wk) sub-row offsets from the centre
        inside = dy.abs() <= half
        hw_circle = (half.square() - dy.square()).clamp(min=0).sqrt()
        hw_square = torch.where(inside, half, 0.0)
        # Apex at the top (smallest y): the half-width grows linearly from 0 to side / 2 at the base.
        hw_triangle = torch.where(inside, (dy + half) / 2, 0.0)
        sid = shape_ids[sl][:, None]
        hw = torch.where(sid == 0, hw_circle, torch.where(sid == 1, hw_square, hw_triangle))  # (n, Wk)
        left = (cx[:, None] - x0 - hw)[..., None]  # (n, Wk, 1) in window pixels
        right = (cx[:, None] - x0 + hw)[..., None]
        # Overlap of [left, right] with the pixel [x, x + 1]: clamp(right - x) - clamp(left - x).
        cov = (right - cols).clamp_(0, 1).sub_((left - cols).clamp_(0, 1))  # (n, Wk, win)
        cov = cov.view(-1, win, _SUBROWS, win).mean(2)  # (n, win, win)
        rgb = (cov[:, None] * colours[sl].float()[:, :, None, None]).round_().to(torch.uint8)  # (n,3,w,w)
        # Scatter each window into its frame at (y0, x0).
        idx = (y0.long() + torch.arange(win))[:, :, None] * size + (x0.long() + torch.arange(win))[:, None, :]
        out[sl].scatter_(2, idx.view(-1, 1, win * win).expand(-1, 3, -1), rgb.view(-1, 3, win * win))
    return out.view(n, 3, size, size)


@dataclass(frozen=True)
class ClipParams:
    """The continuous parameters of one clip, in frame widths, interpolated linearly over frames.

    ``(x0, y0)``/``(x1, y1)`` are the bounding-box centres in the first/last frame (y down),
    ``s0``/``s1`` the bounding-box sides.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    s0: float
    s1: float

    def as_tensor(self) -> Tensor:
        """(6,) float32 ``[x0, y0, x1, y1, s0, s1]``."""
        return torch.tensor([self.x0, self.y0, self.x1, self.y1, self.s0, self.s1], dtype=torch.float32)


def render_clips(attrs: Sequence[Attributes], params: Tensor, size: int = 32, frames: int = 16) -> Tensor:
    """Render a batch of clips.

    Args:
        attrs: B attributes (colour and shape are used; the motion is in ``params``).
        params: (B, 6) ``[x0, y0, x1, y1, s0, s1]`` as in ``ClipParams``.
        size: frame side in pixels.
        frames: frames per clip (>= 2).

    Returns:
        (B, F, 3, size, size) uint8.
    """
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    b = len(attrs)
    if params.shape != (b, 6):
        raise ValueError(f"params must be ({b}, 6), got {tuple(params.shape)}")
    t = torch.linspace(0, 1, frames)  # (F,)
    # params is [x0, y0, x1, y1, s0, s1]: regroup into start (x0, y0, s0) and end (x1, y1, s1).
    start = params[:, [0, 1, 4]].float()[:, None]  # (B, 1, 3)
    end = params[:, [2, 3, 5]].float()[:, None]
    traj = torch.lerp(start, end, t[None, :, None])  # (B, F, 3): cx, cy, side per frame
    shape_ids = torch.tensor([SHAPES.index(a.shape) for a in attrs]).repeat_interleave(frames)
    rgb = torch.tensor([COLOURS[a.colour] for a in attrs], dtype=torch.float32).repeat_interleave(frames, 0)
    flat = rasterize(shape_ids, traj[..., :2].reshape(-1, 2), traj[..., 2].reshape(-1), rgb, size)
    return flat.view(b, frames, 3, size, size)


def render_clip(attrs: Attributes, params: ClipParams, size: int = 32, frames: int = 16) -> Tensor:
    """One clip: (F, 3, size, size) uint8."""
    return render_clips([attrs], params.as_tensor()[None], size, frames)[0]


def to_unit_range(clips: Tensor) -> Tensor:
    """uint8 (B, F, 3, H, W) -> float (B, 3, F, H, W) in [-1, 1] (the model's layout)."""
    b, f, c, h, w = clips.shape
    out = torch.empty(b, c, f, h, w).copy_(clips.permute(0, 2, 1, 3, 4))  # contiguous in the new layout
    return out.div_(127.5).sub_(1)


# ----------------------------------------------------------------------------------------------
# Seeded, counter-based sampling
# ----------------------------------------------------------------------------------------------


def _splitmix64(z: np.ndarray) -> np.ndarray:
    # SplitMix64 finaliser (Steele et al. 2014) on uint64 arrays (wrapping arithmetic): a
    # bijective mixer, so consecutive clip ids give unrelated draws.
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniforms(seed: int, ids: np.ndarray, n: int) -> np.ndarray:
    """(len(ids), n) float64 uniforms in [0, 1): a pure function of (seed, id, column)."""
    key = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    base = _splitmix64(key ^ _splitmix64(ids.astype(np.uint64)))  # (B,)
    z = _splitmix64(base[:, None] ^ _splitmix64(np.arange(n, dtype=np.uint64) + key))  # (B, n)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# Columns of the per-clip uniforms.
_U_COMBO, _U_CAPTION, _U_GEOM = 0, 1, 6  # combo: 1, caption: 5, geometry: 4
_N_UNIFORMS = 10


def _params_from_uniforms(attrs: Sequence[Attributes], u: np.ndarray) -> Tensor:
    """(B, 6) clip parameters following the definition in the module docstring."""
    rows = []
    for a, (u0, u1, u2, u3) in zip(attrs, u[:, _U_GEOM : _U_GEOM + 4].tolist()):
        if a.motion in ("grow", "shrink"):
            ratio = 1.3 + 0.5 * u0  # side ratio; 0.45 / 1.8 = 0.25 keeps the range non-empty
            small = 0.25 + u1 * (0.45 / ratio - 0.25)
            big = small * ratio
            cx, cy = big / 2 + u2 * (1 - big), big / 2 + u3 * (1 - big)
            s0, s1 = (small, big) if a.motion == "grow" else (big, small)
            rows.append((cx, cy, cx, cy, s0, s1))
            continue
        s = 0.25 + 0.2 * u0
        dist = 0.3 + u1 * (1 - s - 0.3)
        a0 = s / 2 + u2 * (1 - s - dist)  # start along the axis, moving towards +
        a1 = a0 + dist
        if a.motion in ("left", "up"):
            a0, a1 = 1 - a0, 1 - a1
        perp = s / 2 + u3 * (1 - s)
        if a.motion in ("left", "right"):
            rows.append((a0, perp, a1, perp, s, s))
        else:
            rows.append((perp, a0, perp, a1, s, s))
    return torch.tensor(rows, dtype=torch.float64).float().reshape(len(rows), 6)


class ShapesBatch(NamedTuple):
    """``clips`` (B, 3, F, H, W) float in [-1, 1]; ``captions`` B strings; ``attributes`` B items."""

    clips: Tensor
    captions: list[str]
    attributes: list[Attributes]


class ShapesWorld:
    """A seeded stream of Shapes clips; clip ``i`` is a pure function of ``(seed, i)``.

    Args:
        size: frame side in pixels (32 or 64; any size >= 8 works).
        frames: frames per clip.
        seed: the world's seed.
        held_out: combinations kept out of training; None means ``default_held_out()``, ``()``
            none. Items are ``Attributes`` or (colour, shape, motion) triples.
        split: which combinations ``sample`` draws from (uniformly): "train" (all but the
            held-out ones), "held_out" or "all".
        captions: "paraphrase" (training: canonical 25% of the time, else a random template and
            synonyms) or "canonical".
    """

    def __init__(
        self,
        size: int = 32,
        frames: int = 16,
        seed: int = 0,
        held_out: Sequence[Attributes | Sequence[str]] | None = None,
        split: Literal["train", "held_out", "all"] = "train",
        captions: Literal["paraphrase", "canonical"] = "paraphrase",
    ) -> None:
        if size < 8 or frames < 2:
            raise ValueError(f"need size >= 8 and frames >= 2, got size={size}, frames={frames}")
        if split not in ("train", "held_out", "all"):
            raise ValueError(f"split must be 'train', 'held_out' or 'all', got {split!r}")
        if captions not in ("paraphrase", "canonical"):
            raise ValueError(f"captions must be 'paraphrase' or 'canonical', got {captions!r}")
        self.size, self.frames, self.seed = size, frames, int(seed)
        self.split, self.caption_mode = split, captions
        raw = default_held_out() if held_out is None else held_out
        self.held_out: tuple[Attributes, ...] = tuple(sorted({Attributes.coerce(h) for h in raw}))
        held = set(self.held_out)
        self.train_combos = tuple(a for a in _ALL if a not in held)
        self.combos: tuple[Attributes, ...] = {
            "train": self.train_combos,
            "held_out": self.held_out,
            "all": _ALL,
        }[split]
        if not self.combos:
            raise ValueError(f"split {split!r} has no combinations")

    def clip_ids(self, batch: int, index_or_generator: int | torch.Generator) -> Tensor:
        """(batch,) int64 clip ids: ``index * batch + arange(batch)``, or random ids from a generator."""
        if isinstance(index_or_generator, torch.Generator):
            return torch.randint(0, 2**62, (batch,), generator=index_or_generator)
        return int(index_or_generator) * batch + torch.arange(batch)

    def describe(self, ids: Tensor | Sequence[int]) -> tuple[list[Attributes], Tensor, list[str]]:
        """Attributes, (B, 6) ``ClipParams`` rows and captions of the clips ``ids``, without rendering."""
        u = _uniforms(self.seed, np.asarray(torch.as_tensor(ids, dtype=torch.int64)), _N_UNIFORMS)
        n = len(self.combos)
        attrs = [self.combos[min(int(x * n), n - 1)] for x in u[:, _U_COMBO]]
        return attrs, _params_from_uniforms(attrs, u), self._captions(attrs, u)

    def _captions(self, attrs: Sequence[Attributes], u: np.ndarray) -> list[str]:
        if self.caption_mode == "canonical":
            return [canonical_caption(a) for a in attrs]
        return [_caption_from_uniforms(a, row) for a, row in zip(attrs, u[:, _U_CAPTION:_U_GEOM])]

    def sample_ids(self, ids: Tensor | Sequence[int]) -> ShapesBatch:
        """The clips ``ids``: (B, 3, F, H, W) in [-1, 1], captions, attributes."""
        attrs, params, captions = self.describe(ids)
        clips = render_clips(attrs, params, self.size, self.frames)
        return ShapesBatch(to_unit_range(clips), captions, attrs)

    def sample(self, batch: int, index_or_generator: int | torch.Generator) -> ShapesBatch:
        """Batch ``index`` (clips ``index * batch ...``), or ``batch`` random clips from a generator."""
        return self.sample_ids(self.clip_ids(batch, index_or_generator))

    def render(self, attributes: Sequence[Attributes | Sequence[str]], index: int = 0) -> ShapesBatch:
        """Clips of the given attributes (e.g. evaluation prompts) with the geometry of batch ``index``.

        The geometry comes from the same (seed, clip id) draws as ``sample``; captions are canonical.
        """
        attrs = [Attributes.coerce(a) for a in attributes]
        ids = self.clip_ids(len(attrs), index)
        u = _uniforms(self.seed, np.asarray(ids), _N_UNIFORMS)
        clips = render_clips(attrs, _params_from_uniforms(attrs, u), self.size, self.frames)
        return ShapesBatch(to_unit_range(clips), [canonical_caption(a) for a in attrs], attrs)
