"""The built-in ``toy2d`` modality: the engine's learning check on a plain CPU.

Data: 16x16 RGB images of one shape each (circle, square, triangle, cross) in a random colour,
size and position on black, generated procedurally: item i is a pure function of (seed, i), so
the set needs no files and resumes/shards exactly. Model: a small class-conditional DiT (one token
per 2x2 or 4x4 patch). Quality: a hand-coded checker classifies each sample's shape from its
foreground mask; the measure is the fraction of samples (EMA weights, classifier-free guidance)
whose shape is the class they were asked for. Chance is 1 / number of classes.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from shared_core.config import from_dict
from shared_core.denoiser import NetworkDenoiser
from shared_core.errors import ConfigError
from shared_core.guidance import CFGDenoiser
from shared_core.nn.dit import DIT_PRESETS, build_dit
from shared_core.random import make_generator, rand, randn
from shared_core.samplers import SAMPLERS, get_sampler
from shared_core.train.distributed import DistInfo, derive_seed, gather_in_order, is_main, shard_indices
from shared_core.train.loop import (
    Augment,
    DiffusionObjective,
    Objective,
    RandomFlip,
    RunConfig,
    build_schedule,
)
from shared_core.train.modality import Modality

__all__ = [
    "SHAPES",
    "ShapesDataConfig",
    "ShapesDataset",
    "Toy2D",
    "Toy2DConfig",
    "Toy2DModelConfig",
    "Toy2DSampleConfig",
    "checker_scores",
    "classify_shapes",
    "render_shape",
    "sample_toy2d",
    "shape_mask",
    "template_ious",
    "toy2d_config",
]

SHAPES = ("circle", "square", "triangle", "cross")

# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapesDataConfig:
    image_size: int = 16
    classes: tuple[str, ...] = SHAPES  # a subset of SHAPES, in label order
    num_samples: int = 0  # 0: an endless procedural stream; N: a fixed set of N images
    seed: int = 0
    min_extent: float = 8.0  # shape width/height in pixels, uniform in [min_extent, max_extent]
    max_extent: float = 12.0
    jitter: float = 2.0  # max offset of the shape's centre from the image centre, pixels (kept inside)
    random_colour: bool = True  # False: white shapes (an easier set, for quick tests)
    flip: bool = True  # random horizontal flips (every shape here is mirror-symmetric)

    def __post_init__(self) -> None:
        bad = [c for c in self.classes if c not in SHAPES]
        if bad or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be distinct names from {SHAPES}, got {self.classes}")
        if not 2 <= self.min_extent <= self.max_extent <= self.image_size:
            raise ValueError("need 2 <= min_extent <= max_extent <= image_size")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")


@dataclass(frozen=True)
class Toy2DModelConfig:
    preset: str = "tiny"  # a shared_core.nn.dit preset; the fields below override it
    patch_size: int = 2
    hidden_size: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None


@dataclass(frozen=True)
class Toy2DSampleConfig:
    sampler: str = "dpmpp_2m"  # deterministic samplers make sharded generation exact
    steps: int = 20
    guidance_scale: float = 2.0  # s = 1 + w of classifier-free guidance; 1 = no guidance
    clip_x0: float | None = 1.0  # clamp the denoised estimate to the data range (DDPM's clip_sample)
    num_samples: int = 256  # labels cycle through the classes
    batch_size: int = 64
    seed: int = 0
    save: bool = True  # write samples.safetensors and samples.png to the run directory

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: {', '.join(sorted(SAMPLERS))}")
        if self.steps < 1 or self.num_samples < 1 or self.batch_size < 1:
            raise ValueError("steps, num_samples and batch_size must be >= 1")


@dataclass(frozen=True)
class Toy2DConfig(RunConfig):
    data: ShapesDataConfig = field(default_factory=ShapesDataConfig)
    model: Toy2DModelConfig = field(default_factory=Toy2DModelConfig)
    sample: Toy2DSampleConfig = field(default_factory=Toy2DSampleConfig)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def shape_mask(
    kind: str, cx: Tensor | float, cy: Tensor | float, r: Tensor | float, size: int = 16
) -> Tensor:
    """Boolean mask of a shape of half-extent ``r`` centred at (cx, cy), sampled at pixel centres.

    ``cx, cy, r`` are floats or tensors broadcasting to a batch shape T (e.g. (T, 1, 1)); the
    triangle points up (y grows downwards), the cross is a plus sign with arms r / 3 wide.

    Returns:
        (*T, size, size) bool.
    """
    c = torch.arange(size, dtype=torch.float32) + 0.5
    dy, dx = c[:, None] - torch.as_tensor(cy), c[None, :] - torch.as_tensor(cx)  # (..., S, 1), (..., 1, S)
    r = torch.as_tensor(r, dtype=torch.float32)
    if kind == "circle":
        return dx**2 + dy**2 <= r**2
    if kind == "square":
        return (dx.abs() <= r) & (dy.abs() <= r)
    if kind == "triangle":
        return (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) / 2)
    if kind == "cross":
        a = r / 3
        return ((dx.abs() <= a) & (dy.abs() <= r)) | ((dy.abs() <= a) & (dx.abs() <= r))
    raise ValueError(f"unknown shape {kind!r}; valid: {', '.join(SHAPES)}")


def render_shape(kind: str, cx: float, cy: float, r: float, colour: Tensor, size: int = 16) -> Tensor:
    """Draw one shape (see ``shape_mask``) in ``colour`` (3,) in [0, 1] on black.

    Returns:
        (3, size, size) image in [-1, 1].
    """
    return shape_mask(kind, cx, cy, r, size).float()[None] * colour[:, None, None] * 2 - 1


class ShapesDataset:
    """Procedural shape images: item i is a pure function of (seed, i).

    Returns:
        ``{"x": (3, S, S) float in [-1, 1], "y": () long class index}``.
    """

    def __init__(self, cfg: ShapesDataConfig) -> None:
        self.cfg = cfg

    def __len__(self) -> int:
        if not self.cfg.num_samples:
            raise TypeError("an endless procedural stream has no length")
        return self.cfg.num_samples

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        cfg = self.cfg
        g = make_generator(derive_seed(cfg.seed, index))
        u = rand((7,), g, dtype=torch.float64).tolist()
        label = min(int(u[0] * len(cfg.classes)), len(cfg.classes) - 1)
        r = (cfg.min_extent + u[1] * (cfg.max_extent - cfg.min_extent)) / 2
        # Centre within +-jitter of the image centre, and never closer than r to an edge.
        reach = min(cfg.jitter, cfg.image_size / 2 - r)
        cx, cy = (cfg.image_size / 2 + (2 * v - 1) * reach for v in u[2:4])
        # A saturated random colour: random direction, brightest channel in [0.7, 1].
        rgb = torch.tensor(u[4:7], dtype=torch.float32) * 0.8 + 0.2
        brightness = 0.7 + 0.3 * float(rand((), g))
        colour = rgb / rgb.max() * brightness if cfg.random_colour else torch.ones(3)
        x = render_shape(cfg.classes[label], cx, cy, r, colour, cfg.image_size)
        return {"x": x, "y": torch.tensor(label, dtype=torch.long)}


# ----------------------------------------------------------------------------------------------
# The hand-coded checker
# ----------------------------------------------------------------------------------------------


def _largest_component(mask: list[list[bool]]) -> list[tuple[int, int]]:
    """Pixels of the largest 4-connected foreground component (breadth-first flood fill)."""
    h, w = len(mask), len(mask[0])
    seen = [[False] * w for _ in range(h)]
    best: list[tuple[int, int]] = []
    for i in range(h):
        for j in range(w):
            if not mask[i][j] or seen[i][j]:
                continue
            comp, queue = [], deque([(i, j)])
            seen[i][j] = True
            while queue:
                y, x = queue.popleft()
                comp.append((y, x))
                for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    if 0 <= ny < h and 0 <= nx < w and mask[ny][nx] and not seen[ny][nx]:
                        seen[ny][nx] = True
                        queue.append((ny, nx))
            if len(comp) > len(best):
                best = comp
    return best


# Template fits: half-extent and centre offsets (pixels) tried around the component's bounding box.
_R_OFFSETS = torch.tensor([-0.5, -0.25, 0.0, 0.25])
_SHIFTS = torch.tensor([-0.25, 0.0, 0.25])


def _template_ious(mask: Tensor) -> dict[str, float]:
    """Best IoU of the foreground ``mask`` (S, S) with each shape's template fitted to its largest
    component's bounding box."""
    size = mask.shape[-1]
    pixels = _largest_component(mask.tolist())
    if len(pixels) < 8:
        return dict.fromkeys(SHAPES, 0.0)
    ys, xs = [p[0] for p in pixels], [p[1] for p in pixels]
    cy, cx = (min(ys) + max(ys) + 1) / 2, (min(xs) + max(xs) + 1) / 2
    half = max(max(ys) - min(ys) + 1, max(xs) - min(xs) + 1) / 2
    r = (half + _R_OFFSETS)[:, None, None, None, None]  # (R, 1, 1, 1, 1)
    sy = (cy + _SHIFTS)[None, :, None, None, None]  # (1, Y, 1, 1, 1)
    sx = (cx + _SHIFTS)[None, None, :, None, None]  # (1, 1, X, 1, 1)
    m = mask[None, None, None]  # (1, 1, 1, S, S)
    out = {}
    for kind in SHAPES:
        tmpl = shape_mask(kind, sx, sy, r, size)  # (R, Y, X, S, S)
        inter = (tmpl & m).flatten(-2).sum(-1).float()
        union = (tmpl | m).flatten(-2).sum(-1).float()
        out[kind] = float((inter / union.clamp(min=1)).max())
    return out


def template_ious(images: Tensor, threshold: float = 0.35) -> Tensor:
    """The checker's evidence: each image's best IoU with each shape of ``SHAPES``.

    The foreground is every pixel whose brightest channel exceeds ``threshold`` (in [0, 1]). Each
    shape's ideal mask is fitted to the bounding box of the foreground's largest connected
    component (a few sizes and sub-pixel shifts) and compared with the whole foreground by IoU, so
    stray blobs count against a sample.

    Args:
        images: (B, 3, S, S) in [-1, 1].

    Returns:
        (B, len(SHAPES)) IoUs in [0, 1].
    """
    bright = ((images.detach().float().cpu() + 1) / 2).amax(1)  # (B, S, S)
    rows = [list(_template_ious(m).values()) for m in bright > threshold]
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, len(SHAPES))


def _to_classes(best: Tensor, ok: Tensor, classes: tuple[str, ...]) -> Tensor:
    """Indices into SHAPES -> indices into ``classes`` (-1 where not ``ok`` or not a class)."""
    lut = torch.tensor([classes.index(s) if s in classes else -1 for s in SHAPES])
    return torch.where(ok, lut[best], torch.full_like(best, -1))


def classify_shapes(
    images: Tensor, classes: tuple[str, ...] = SHAPES, threshold: float = 0.35, min_iou: float = 0.8
) -> Tensor:
    """Hand-coded shape classifier for toy2d images: template matching, no learning.

    The shape whose template fits best (``template_ious``) wins if its IoU reaches ``min_iou``.

    Args:
        images: (B, 3, S, S) in [-1, 1].
        classes: label order.

    Returns:
        (B,) long: the index in ``classes`` of the recognised shape, or -1 (unrecognised or a
        shape outside ``classes``).
    """
    iou = template_ious(images, threshold)
    best_iou, best = iou.max(1)
    return _to_classes(best, best_iou >= min_iou, classes)


def checker_scores(images: Tensor, labels: Tensor, classes: tuple[str, ...] = SHAPES) -> dict[str, Any]:
    """Score samples drawn for ``labels`` with the checker.

    Returns:
        ``accuracy``: recognised (IoU >= 0.8) as their label; ``unrecognised``: fraction with no
        good fit; ``per_class`` accuracy; ``forced_choice_accuracy``: best-fitting template, however
        poor; ``debiased_accuracy``: argmax over shapes of the IoU minus that shape's mean IoU over
        all samples. The last cancels a preference shared by every label (an undertrained model
        draws round blobs for every class), so it shows early whether the label steers the shape;
        like the others it is at chance for a model that ignores its label.
    """
    iou = template_ious(images)
    best_iou, best = iou.max(1)
    strict = _to_classes(best, best_iou >= 0.8, classes)
    forced = _to_classes(best, torch.ones_like(best, dtype=torch.bool), classes)
    debiased = _to_classes(
        (iou - iou.mean(0, keepdim=True)).argmax(1), torch.ones_like(best, dtype=torch.bool), classes
    )
    correct = strict == labels
    return {
        "accuracy": float(correct.float().mean()),
        "unrecognised": float((strict < 0).float().mean()),
        "per_class": {c: float(correct[labels == i].float().mean()) for i, c in enumerate(classes)},
        "forced_choice_accuracy": float((forced == labels).float().mean()),
        "debiased_accuracy": float((debiased == labels).float().mean()),
    }


# ----------------------------------------------------------------------------------------------
# Sampling and evaluation
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_toy2d(
    model: nn.Module, cfg: Toy2DConfig, labels: Tensor, indices: range, *, device: torch.device | None = None
) -> Tensor:
    """Sample images for ``labels[indices]`` with classifier-free guidance.

    Item i's initial noise comes from its own generator (seed, i), so the result for an item does
    not depend on which rank or batch made it (exact for deterministic samplers).

    Returns:
        (len(indices), 3, S, S).
    """
    device = device or next(model.parameters()).device
    schedule = build_schedule(cfg.diffusion)
    k = len(cfg.data.classes)
    denoiser = NetworkDenoiser(model, schedule, cfg.diffusion.prediction, clip_x0=cfg.sample.clip_x0)
    guided = CFGDenoiser.from_scale(denoiser, cfg.sample.guidance_scale, {"y": torch.tensor([k])})
    sampler = get_sampler(cfg.sample.sampler)
    sigmas = schedule.sigmas(cfg.sample.steps)
    shape = (3, cfg.data.image_size, cfg.data.image_size)
    was_training = model.training
    model.eval()
    outs = []
    idx = list(indices)
    for start in range(0, len(idx), cfg.sample.batch_size):
        chunk = idx[start : start + cfg.sample.batch_size]
        noise = torch.stack([randn(shape, make_generator(derive_seed(cfg.sample.seed, i))) for i in chunk])
        x = (noise * schedule.prior_std(sigmas[0]).float()).to(device)
        y = labels[chunk].to(device)
        outs.append(sampler(guided, x, sigmas, extra_args={"y": y}).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0, *shape)


def _save_grid(images: Tensor, path: Path, cols: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import image as mpimg

    n, _, s, _ = images.shape
    rows = math.ceil(n / cols)
    grid = torch.zeros(3, rows * (s + 1) + 1, cols * (s + 1) + 1)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[:, 1 + r * (s + 1) : 1 + r * (s + 1) + s, 1 + c * (s + 1) : 1 + c * (s + 1) + s] = (img + 1) / 2
    mpimg.imsave(path, grid.clamp(0, 1).permute(1, 2, 0).numpy())


# ----------------------------------------------------------------------------------------------
# The modality
# ----------------------------------------------------------------------------------------------


class Toy2D(Modality):
    """Class-conditional 16x16 shapes; the engine's learning check."""

    name = "toy2d"
    config_cls = Toy2DConfig

    def build_dataset(self, cfg: Toy2DConfig) -> ShapesDataset:
        return ShapesDataset(cfg.data)

    def build_model(self, cfg: Toy2DConfig) -> nn.Module:
        m = cfg.model
        if m.preset not in DIT_PRESETS:
            raise ConfigError(
                f"model.preset {m.preset!r} is not a DiT preset; valid: {', '.join(DIT_PRESETS)}"
            )
        overrides = {
            k: v
            for k, v in (
                ("hidden_size", m.hidden_size),
                ("depth", m.depth),
                ("num_heads", m.num_heads),
                ("mlp_ratio", m.mlp_ratio),
            )
            if v is not None
        }
        if cfg.data.image_size % m.patch_size:
            raise ConfigError(
                f"model.patch_size {m.patch_size} does not divide data.image_size {cfg.data.image_size}"
            )
        try:
            # Label dropout for CFG happens in the objective, from per-sample generators (exact
            # resume/DDP); the model's own dropout would draw from the global RNG.
            return build_dit(
                m.preset,
                in_channels=3,
                num_classes=len(cfg.data.classes),
                class_dropout_prob=0.0,
                patch_size=(m.patch_size, m.patch_size),
                **overrides,
            )
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None

    def build_objective(self, cfg: Toy2DConfig, model: nn.Module) -> Objective:
        null = torch.tensor(len(cfg.data.classes))  # the DiT's null class
        return DiffusionObjective.from_config(cfg.diffusion, cond_keys=("y",), null_cond={"y": null})

    def build_augment(self, cfg: Toy2DConfig) -> Augment | None:
        return RandomFlip(dims=(-1,)) if cfg.data.flip else None

    def evaluate(
        self,
        model: nn.Module,
        cfg: Toy2DConfig,
        *,
        out_dir: Path | None = None,
        dist_info: DistInfo | None = None,
    ) -> dict[str, Any]:
        """Sample ``sample.num_samples`` images (split over ranks) and score them with the checker.

        Returns:
            ``checker_scores`` of the samples, chance level, the checker's accuracy on real data
            and the sampling settings.
        """
        k, n = len(cfg.data.classes), cfg.sample.num_samples
        labels = torch.arange(n) % k
        mine = shard_indices(n)
        samples = gather_in_order(sample_toy2d(model, cfg, labels, mine), n)
        real = ShapesDataset(cfg.data)
        real_items = [real[i] for i in range(min(n, 256))]
        real_pred = classify_shapes(torch.stack([r["x"] for r in real_items]), cfg.data.classes)
        real_acc = (real_pred == torch.stack([r["y"] for r in real_items])).float().mean()
        result = {
            **checker_scores(samples, labels, cfg.data.classes),
            "chance": 1.0 / k,
            "checker_accuracy_on_data": float(real_acc),
            "num_samples": n,
            "sampler": cfg.sample.sampler,
            "steps": cfg.sample.steps,
            "guidance_scale": cfg.sample.guidance_scale,
        }
        if out_dir is not None and cfg.sample.save and is_main():
            from safetensors.torch import save_file

            os.makedirs(out_dir, exist_ok=True)
            save_file(
                {"samples": samples.contiguous(), "labels": labels},
                str(Path(out_dir) / "samples.safetensors"),
            )
            _save_grid(samples[: min(n, 8 * k * 2)], Path(out_dir) / "samples.png", cols=2 * k)
        return result


def toy2d_config(**sections: Any) -> Toy2DConfig:
    """A ``Toy2DConfig`` from plain dicts (e.g. ``toy2d_config(train={"steps": 10})``), strictly checked."""
    return from_dict(Toy2DConfig, sections)
