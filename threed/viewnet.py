"""A small CNN that reads a 32x32 render of the shape world: its shape and its colour.

It scores text-to-3D results the way CLIP R-precision does in DreamFusion, with a model trained on
ground-truth renders (``threed.prior.ViewsDataset``: random views, random light) instead of CLIP:
a result's views are classified, the log-probabilities averaged over views, and every
(colour, shape) caption of the world ranked; R-precision is how often the prompted one ranks
first. The same score on ground-truth renders is the ceiling.

Three conv blocks (32, 64, 128 channels, each conv-ReLU-maxpool), global average pooling, two
linear heads (10 shapes, 7 colours). Deterministic for a thread count; about a minute to train on
one core; the weights ship as ``checkpoints/threed/viewnet.safetensors`` with the recipe and the
held-out accuracies in the metadata (``build_view_net`` rebuilds them).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared_core.pretrained import load_tagged, save_tagged, tagged_stats
from threed.world import COLOURS, SHAPES

__all__ = ["DEFAULT_VIEWNET", "ViewNet", "ViewNetConfig", "build_view_net", "load_view_net", "train_view_net"]

DEFAULT_VIEWNET = Path(__file__).resolve().parent.parent / "checkpoints" / "threed" / "viewnet.safetensors"
_FORMAT = "extradim-threed-viewnet/1"


@dataclass(frozen=True)
class ViewNetConfig:
    width: int = 32
    size: int = 32
    objects: int = 600  # training objects (x views_per_object renders)
    views_per_object: int = 4
    held_out_objects: int = 150
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 5  # the render world's seed: away from the prior's training world (0)


class ViewNet(nn.Module):
    def __init__(self, cfg: ViewNetConfig) -> None:
        super().__init__()
        w = cfg.width
        chans = [3, w, 2 * w, 4 * w]
        self.blocks = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in itertools.pairwise(chans))
        self.shape_head = nn.Linear(4 * w, len(SHAPES))
        self.colour_head = nn.Linear(4 * w, len(COLOURS))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``(B, 3, H, W)`` in [0, 1] -> (shape logits (B, 10), colour logits (B, 7))."""
        h = images * 2 - 1
        for conv in self.blocks:
            h = F.max_pool2d(F.relu(conv(h)), 2)
        h = h.mean((2, 3))
        return self.shape_head(h), self.colour_head(h)


def _renders(cfg: ViewNetConfig, objects: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    from threed.prior import ViewsDataConfig, ViewsDataset

    data = ViewsDataset(
        ViewsDataConfig(size=cfg.size, objects=objects, views_per_object=cfg.views_per_object, seed=seed),
        None, progress=False,
    )  # fmt: skip
    v = cfg.views_per_object
    return (
        data.images.float() / 255,
        data.labels.repeat_interleave(v),
        data.colours.repeat_interleave(v),
    )


def train_view_net(cfg: ViewNetConfig | None = None) -> tuple[ViewNet, dict[str, Any]]:
    cfg = cfg or ViewNetConfig()
    start = time.perf_counter()
    x, ys, yc = _renders(cfg, cfg.objects, cfg.seed)
    hx, hs, hc = _renders(cfg, cfg.held_out_objects, cfg.seed + 1)
    torch.manual_seed(cfg.seed)
    net = ViewNet(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
        batch = x[idx]
        if torch.rand((), generator=g) < 0.5:
            batch = batch.flip(-1)  # a mirrored view is a view of the mirrored (same-class) object
        ls, lc = net(batch)
        loss = F.cross_entropy(ls, ys[idx]) + F.cross_entropy(lc, yc[idx])
        opt.zero_grad()
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = cfg.lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / cfg.steps))).item()
        opt.step()
    net.eval()
    with torch.no_grad():
        ls, lc = net(hx)
    stats = {
        "held_out_shape_accuracy": float((ls.argmax(1) == hs).float().mean()),
        "held_out_colour_accuracy": float((lc.argmax(1) == hc).float().mean()),
        "held_out_views": len(hx),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    return net, stats


def build_view_net(path: str | os.PathLike[str] = DEFAULT_VIEWNET, cfg: ViewNetConfig | None = None) -> Path:
    cfg = cfg or ViewNetConfig()
    net, stats = train_view_net(cfg)
    return save_tagged(net, path, _FORMAT, asdict(cfg), stats)


def load_view_net(path: str | os.PathLike[str] = DEFAULT_VIEWNET) -> ViewNet:
    return load_tagged(path, _FORMAT, lambda c: ViewNet(ViewNetConfig(**c)), "view classifier")


if __name__ == "__main__":  # python -m threed.viewnet: rebuild the shipped weights
    import json

    torch.set_num_threads(int(os.environ.get("EXTRADIM_NUM_THREADS", "1")))
    out = build_view_net()
    print(f"wrote {out}: {json.dumps(tagged_stats(out))}")
