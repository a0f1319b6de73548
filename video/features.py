"""Clip features for distribution metrics: a small 3-D-conv classifier of the Shapes world whose
features feed the Fréchet distance and KID of ``shared_core.metrics``.

The classifier (``FeatureNet``, 88k parameters) is trained on real clips of all 126 combinations
to predict (colour, shape, motion); its pooled 64-d activations are the features, as Inception's
pool features are for FID (Heusel et al. 2017). Training is deterministic (fixed seeds, clips
drawn by index from a world with its own seed) and takes about a minute on one idle CPU core; the
weights are cached in ``checkpoints/video/features.safetensors`` with the training recipe in the
metadata, and ``build_feature_net`` rebuilds them.

    net = load_feature_net()                      # cached, or trained and cached on first use
    f = extract_features(net, clips)              # (B, 64)
    shared_core.metrics.frechet_distance(f_gen, f_real)
    shared_core.metrics.kernel_inception_distance(f_gen, f_real)

Both metrics are biased by the sample size (the Fréchet distance strongly), so a value means
something only next to the same metric between two disjoint real sets of the same size.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared_core.errors import CheckpointError
from shared_core.pretrained import load_tagged, save_tagged
from video.world import COLOURS, MOTIONS, SHAPES, ShapesWorld

__all__ = [
    "DEFAULT_FEATURES",
    "FeatureNet",
    "FeatureNetConfig",
    "build_feature_net",
    "extract_features",
    "load_feature_net",
    "train_feature_net",
]

DEFAULT_FEATURES = Path(__file__).resolve().parent.parent / "checkpoints" / "video" / "features.safetensors"
_FORMAT = "extradim-video-features/1"


@dataclass(frozen=True)
class FeatureNetConfig:
    """The classifier's size and its training recipe (stored in the weights' metadata)."""

    width: int = 16  # channels of the first stage; then 2x and 4x (the feature dimension)
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 1234  # the training world's seed (not the evaluation world's)
    size: int = 32
    frames: int = 16
    test_clips: int = 512  # unseen real clips the reported accuracy is measured on

    @property
    def dim(self) -> int:
        return 4 * self.width


# ----------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------


class FeatureNet(nn.Module):
    """3-D convolutions -> global average pool (the features) -> three linear heads.

    ``features(clips (B, 3, F, H, W) in [-1, 1]) -> (B, 4 * width)``; ``forward`` gives the logits
    ``(B, 7), (B, 3), (B, 6)`` of colour, shape and motion. Any F >= 4 and H, W >= 8 work (the pool
    is global), though the weights are trained at ``config.frames x config.size``.
    """

    def __init__(self, cfg: FeatureNetConfig) -> None:
        super().__init__()
        w = cfg.width
        self.cfg = cfg
        self.body = nn.Sequential(
            # A full-resolution spatial layer first: circles and squares differ only in a few
            # corner pixels at 32x32, which a strided first layer blurs away.
            nn.Conv3d(3, w // 2, (1, 3, 3), padding=(0, 1, 1)),  # (w/2, F, H, W)
            nn.GroupNorm(4, w // 2),
            nn.SiLU(),
            nn.Conv3d(w // 2, w, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)),  # (w, F, H/2, W/2)
            nn.GroupNorm(4, w),
            nn.SiLU(),
            nn.Conv3d(w, 2 * w, (3, 4, 4), stride=2, padding=(1, 1, 1)),  # (2w, F/2, H/4, W/4)
            nn.GroupNorm(8, 2 * w),
            nn.SiLU(),
            nn.Conv3d(2 * w, 4 * w, 3, stride=2, padding=1),  # (4w, F/4, H/8, W/8)
            nn.GroupNorm(8, 4 * w),
            nn.SiLU(),
        )
        self.heads = nn.ModuleList([nn.Linear(4 * w, n) for n in (len(COLOURS), len(SHAPES), len(MOTIONS))])

    def features(self, clips: Tensor) -> Tensor:
        return self.body(clips).mean((2, 3, 4))  # (B, 4w)

    def forward(self, clips: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.features(clips)
        c, s, m = (head(f) for head in self.heads)
        return c, s, m


def _labels(attrs: list[Any]) -> Tensor:
    colours = list(COLOURS)
    return torch.tensor(
        [[colours.index(a.colour), SHAPES.index(a.shape), MOTIONS.index(a.motion)] for a in attrs]
    )  # (B, 3)


def train_feature_net(
    cfg: FeatureNetConfig | None = None, log: bool = False
) -> tuple[FeatureNet, dict[str, Any]]:
    """Train the classifier on real clips of all combinations (deterministic for a given thread count).

    Returns:
        The net (eval mode) and its stats: accuracy per attribute on ``cfg.test_clips`` unseen real
        clips, and the training time.
    """
    cfg = cfg or FeatureNetConfig()
    world = ShapesWorld(cfg.size, cfg.frames, seed=cfg.seed, split="all", captions="canonical")
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        net = FeatureNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=max(1, cfg.steps), pct_start=0.1)
    start = time.perf_counter()
    net.train()
    with torch.enable_grad():  # callers (e.g. the CLI) may run under no_grad
        for step in range(cfg.steps):
            batch = world.sample(cfg.batch_size, step)
            y = _labels(batch.attributes)
            logits = net(batch.clips)
            loss = sum(F.cross_entropy(lg, y[:, k]) for k, lg in enumerate(logits))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            sched.step()
            if log and (step % 50 == 0 or step == cfg.steps - 1):
                print(f"[features] step {step} loss {float(loss.detach()):.4f}", flush=True)
    net.eval()
    # Accuracy on clips the training never drew (batch indices past the training range).
    test = world.sample(cfg.test_clips, cfg.steps * cfg.batch_size // cfg.test_clips + 1)
    with torch.no_grad():
        pred = torch.stack([lg.argmax(1) for lg in net(test.clips)], 1)
    acc = (pred == _labels(test.attributes)).float().mean(0).tolist()
    stats = {
        "accuracy": dict(zip(("colour", "shape", "motion"), (round(a, 4) for a in acc))),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return net, stats


def build_feature_net(
    path: str | os.PathLike[str] = DEFAULT_FEATURES, cfg: FeatureNetConfig | None = None, log: bool = True
) -> FeatureNet:
    """(Re)train the classifier and save it to ``path`` (safetensors, recipe and stats in metadata)."""
    cfg = cfg or FeatureNetConfig()
    net, stats = train_feature_net(cfg, log=log)
    save_tagged(net, path, _FORMAT, asdict(cfg), stats)
    if log:
        print(f"[features] wrote {path}: {stats}", flush=True)
    return net


def load_feature_net(
    path: str | os.PathLike[str] = DEFAULT_FEATURES, *, build_if_missing: bool = True
) -> FeatureNet:
    """The cached classifier at ``path``; trained and cached first when missing and allowed.

    Raises:
        CheckpointError: missing (and not built) or unreadable weights.
    """
    path = Path(path)
    if not path.is_file():
        if not build_if_missing:
            raise CheckpointError(f"feature network not found: {path}")
        return build_feature_net(path)
    return load_tagged(path, _FORMAT, lambda c: FeatureNet(FeatureNetConfig(**c)), "feature network")


@torch.no_grad()
def extract_features(net: FeatureNet, clips: Tensor, batch_size: int = 64) -> Tensor:
    """Pooled features of clips.

    Args:
        net: the classifier.
        clips: (B, 3, F, H, W) float in [-1, 1] or uint8.

    Returns:
        (B, D) float64.
    """
    out = []
    for i in range(0, len(clips), batch_size):
        x = clips[i : i + batch_size]
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float().clamp(-1, 1)
        out.append(net.features(x).double())
    return torch.cat(out)
