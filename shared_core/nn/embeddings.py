"""Conditioning and position embeddings for the DiT backbone.

- `timestep_embedding` / `TimestepEmbedder`: sinusoidal features of a (possibly fractional) timestep
  followed by an MLP, as in DiT (Peebles & Xie 2023, Sec. 3.2) and ADM.
- `LabelEmbedder`: a class table with one extra *null* row (index `num_classes`) so that training can
  drop labels for classifier-free guidance (Ho & Salimans 2022); guidance itself lives elsewhere.
- `VectorEmbedder`: a pooled condition vector (e.g. pooled text) projected to the model width.
- `sincos_pos_embed`: fixed sin-cos positions for 1-, 2- and 3-D token grids; for 2-D it equals DiT's /
  MAE's `get_2d_sincos_pos_embed`, so converted weights see the positions they were trained with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "LabelEmbedder",
    "TimestepEmbedder",
    "VectorEmbedder",
    "sincos_1d",
    "sincos_pos_embed",
    "timestep_embedding",
]


# ----------------------------------------------------------------------------------------------------
#                                   Timesteps, labels, pooled vectors
# ----------------------------------------------------------------------------------------------------


def timestep_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, freq_shift: float = 0.0
) -> torch.Tensor:
    """Sinusoidal timestep features, `[cos(t w_k), sin(t w_k)]` with `w_k = max_period^(-k / (half - shift))`.

    Args:
        t: `(B,)` timesteps, integer or float (fractional values are fine: continuous-time models).
        dim: feature size `F`; an odd size gets one zero channel appended.
        max_period: the lowest frequency's period.
        freq_shift: 0 reproduces DiT/ADM; diffusers' DiT uses 1 (`downscale_freq_shift=1`).

    Returns:
        `(B, F)` float32 features.
    """
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / (half - freq_shift))  # (F/2,)
    args = t.float()[:, None] * freqs[None]  # (B, F/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*(F/2))
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timestep -> `(B, D)`: sinusoidal features then Linear-SiLU-Linear (DiT's `TimestepEmbedder`).

    Args:
        hidden_size: output width `D`.
        frequency_size: size of the sinusoidal features (256 in DiT).
        freq_shift: see `timestep_embedding` (0 for DiT, 1 for diffusers' DiT).
    """

    def __init__(self, hidden_size: int, frequency_size: int = 256, freq_shift: float = 0.0) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.freq_shift = freq_shift
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Args: t `(B,)` int or float timesteps. Returns: `(B, D)`."""
        freqs = timestep_embedding(t, self.frequency_size, freq_shift=self.freq_shift)
        return self.mlp(freqs.to(next(self.mlp.parameters()).dtype))


class LabelEmbedder(nn.Module):
    """Class label -> `(B, D)`, with a null class at index `num_classes` for classifier-free guidance.

    The null row always exists (even with `dropout_prob=0`), so a guidance wrapper can ask any
    class-conditional model for its unconditional prediction by passing `y = null_class`.

    Args:
        num_classes: number of real classes.
        hidden_size: output width `D`.
        dropout_prob: probability, in training mode only, of replacing a label by the null class.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    @property
    def null_class(self) -> int:
        """Index of the "no label" embedding."""
        return self.num_classes

    def drop_labels(self, y: torch.Tensor, force_drop: torch.Tensor | None = None) -> torch.Tensor:
        """Replace labels by the null class, at random (`dropout_prob`) or where `force_drop` is True.

        Args:
            y: `(B,)` int labels.
            force_drop: optional `(B,)` bool; if given it decides alone (no randomness).
        """
        drop = torch.rand(y.shape, device=y.device) < self.dropout_prob if force_drop is None else force_drop
        return torch.where(drop, torch.full_like(y, self.null_class), y)

    def forward(self, y: torch.Tensor, force_drop: torch.Tensor | None = None) -> torch.Tensor:
        """Args: y `(B,)` labels in `[0, num_classes]`; force_drop optional `(B,)` bool. Returns `(B, D)`."""
        if force_drop is not None or (self.training and self.dropout_prob > 0):
            y = self.drop_labels(y, force_drop)
        return self.embedding_table(y)


class VectorEmbedder(nn.Module):
    """A pooled condition vector `(B, Dp)` -> `(B, D)` through Linear-SiLU-Linear.

    Args:
        in_dim: size `Dp` of the pooled vector (e.g. a text encoder's pooled output).
        hidden_size: output width `D`.
    """

    def __init__(self, in_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Args: v `(B, Dp)`. Returns `(B, D)`."""
        return self.mlp(v)


# ----------------------------------------------------------------------------------------------------
#                                      Fixed sin-cos positions
# ----------------------------------------------------------------------------------------------------


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Transformer sin-cos features `[sin(x w_k), cos(x w_k)]`, `w_k = 10000^(-k / (dim/2))`.

    Args:
        dim: even feature size.
        positions: `(M,)` positions (any float values).

    Returns:
        `(M, dim)` in float64 (callers cast; float64 keeps the high frequencies exact).
    """
    if dim % 2:
        raise ValueError(f"sincos_1d needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))  # (dim/2,)
    out = positions.to(torch.float64).reshape(-1, 1) * omega[None]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed(dim: int, grid_shape: Sequence[int]) -> torch.Tensor:
    """Fixed sin-cos position embedding for a token grid of rank 1, 2 or 3.

    The channels are split into one even-sized chunk per axis (as evenly as possible, an odd `dim`
    leaves one zero channel). The *last* axis owns the first chunk, the first axis the last one: for
    2-D this is exactly DiT's/MAE's `get_2d_sincos_pos_embed` (whose `meshgrid(w, h)` puts the
    column coordinate first), so DiT/diffusers checkpoints agree with it.

    Args:
        dim: embedding width `D` (at least `2 * rank`).
        grid_shape: token-grid shape, e.g. `(16, 16)` or `(T, H, W)`.

    Returns:
        `(prod(grid_shape), D)` float32, tokens in row-major grid order (first axis slowest).
    """
    rank = len(grid_shape)
    if not 1 <= rank <= 3:
        raise ValueError(f"grid rank must be 1, 2 or 3, got grid_shape={tuple(grid_shape)}")
    pairs = dim // 2
    if pairs < rank:
        raise ValueError(f"dim={dim} is too small for a rank-{rank} sin-cos embedding")
    chunk_pairs = [pairs // rank + (i < pairs % rank) for i in range(rank)]
    coords = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in grid_shape], indexing="ij")
    chunks = [
        sincos_1d(2 * p, coords[axis].reshape(-1))  # (N, 2p)
        for p, axis in zip(chunk_pairs, reversed(range(rank)))
    ]
    if dim % 2:
        chunks.append(torch.zeros(chunks[0].shape[0], 1, dtype=torch.float64))
    return torch.cat(chunks, dim=1).float()  # (N, D)
