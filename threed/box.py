"""The ``box`` stage of the points pipeline: a cloud's extents drawn first, its points fitted to them.

A two-level model in the spirit of LION's global shape latent (Zeng et al. 2022) and of
layout-then-content generation: stage ``box`` draws a cloud's *box*, the per-axis ``q`` and
``1 - q`` quantiles of its xyz in the item's own azimuth frame (6 numbers: ``lo (3), hi (3)``),
from the text; the base draws the points; ``fit_to_box`` then moves the points per axis
(``x -> lo' + (x - lo) (hi' - lo') / (hi - lo)``) so that their box is the drawn one.

Why: the base's clouds carry per-cloud size errors of ~2% (a generated sphere is an ellipsoid of
mean radius 1.026 where every real sphere is the unit sphere; model card, session 14) that
training length, depth, samplers and self-conditioning all left in place, and 1-NNA at 2048
points punishes exactly those (a 3% random scale alone: 58%). Six numbers are easy to model
precisely; the points then only have to get the shape within its box right. Quantiles rather
than the bounding box: a generated cloud's few stray points would set its bounding box, and a
quantile box of 512 surface samples is still precise to ~0.5% (a sphere's coordinate is uniform
on [-1, 1]: the 3% quantile's standard error is ~0.015).

``BoxModel`` is a small residual MLP with adaLN (the DiT's conditioning: timestep embedding plus
the pooled text vector), a denoiser network like any other stage: ``forward(x (B, 6), t,
pooled=)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from shared_core.nn.embeddings import TimestepEmbedder, VectorEmbedder

__all__ = ["BoxModel", "box_of", "fit_to_box"]

_MIN_EXTENT = 1e-3  # an axis narrower than this is scaled as if it were this wide (no division by 0)


def box_of(xyz: Tensor, q: float) -> Tensor:
    """``(B, 6)``: the per-axis ``q`` and ``1 - q`` quantiles of ``xyz (B, N, >=3)`` (lo, then hi)."""
    if not 0 <= q < 0.5:
        raise ValueError(f"the box quantile must be in [0, 0.5), got {q}")
    qs = torch.tensor([q, 1 - q], dtype=xyz.dtype, device=xyz.device)
    lo, hi = torch.quantile(xyz[..., :3], qs, dim=-2)  # each (B, 3)
    return torch.cat([lo, hi], dim=-1)


def fit_to_box(cloud: Tensor, box: Tensor, q: float) -> Tensor:
    """``cloud (B, N, C)`` moved per axis so that ``box_of(cloud, q)`` is ``box (B, 6)``; only xyz change.

    Each axis is mapped by an increasing affine function (a box drawn with lo > hi on an axis is
    taken as its sorted pair: a cloud is never mirrored)."""
    own = box_of(cloud, q)
    lo, hi = own[:, None, :3], own[:, None, 3:]
    new_lo = torch.minimum(box[:, None, :3], box[:, None, 3:])
    new_hi = torch.maximum(box[:, None, :3], box[:, None, 3:])
    scale = (new_hi - new_lo) / (hi - lo).clamp_min(_MIN_EXTENT)
    xyz = new_lo + (cloud[..., :3] - lo) * scale
    return torch.cat([xyz, cloud[..., 3:]], dim=-1)


class _Block(nn.Module):
    """Pre-norm residual MLP block with adaLN-Zero modulation by the condition vector."""

    def __init__(self, width: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class BoxModel(nn.Module):
    """Denoiser network of the ``box`` stage: ``forward(x (B, 6), t (B,), pooled (B, text_dim))``.

    Built from ``PointsConfig.model`` (``hidden_size``, ``depth``, ``mlp_ratio``, ``text_dim``)."""

    stage = "box"
    self_condition = False

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        m = cfg.model
        width = m.hidden_size
        self.t_embed = TimestepEmbedder(width)
        self.text_embed = VectorEmbedder(m.text_dim, width)
        self.inp = nn.Linear(6, width)
        self.blocks = nn.ModuleList(_Block(width, m.mlp_ratio) for _ in range(m.depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.out = nn.Linear(width, 6)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, pooled: Tensor | None = None) -> Tensor:
        if pooled is None:
            raise ValueError("the box stage needs the pooled text vector (pooled=)")
        c = self.t_embed(t) + self.text_embed(pooled)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.norm(h))
