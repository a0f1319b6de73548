"""Patchify / unpatchify for grids of any rank 1..3: `(B, C, *grid)` <-> tokens `(B, N, P*C)`.

Within a token the channels are ordered `(p0 [p1 [p2]] c)`, channel last, the order DiT's
`unpatchify` uses (`"nhwpqc"`); a converted Conv patch embedding therefore becomes a plain Linear on
these tokens (see `convert_diffusers.py`). Tokens run over the patch grid in row-major order (the
first axis slowest), the order `embeddings.sincos_pos_embed` assumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

__all__ = ["patchify", "unpatchify"]


def _names(rank: int) -> tuple[list[str], list[str]]:
    return [f"g{i}" for i in range(rank)], [f"p{i}" for i in range(rank)]


def _check_rank(patch_size: Sequence[int]) -> None:
    if not 1 <= len(patch_size) <= 3:
        raise ValueError(f"patch_size must have 1, 2 or 3 entries (grid rank), got {tuple(patch_size)}")


def patchify(x: torch.Tensor, patch_size: Sequence[int]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Cut a grid into non-overlapping patches and flatten each into a token.

    Args:
        x: `(B, C, *grid)` with `len(grid) == len(patch_size)`; each grid size divisible by its patch.
        patch_size: patch extent per grid axis, e.g. `(2, 2)` for images or `(1, 2, 2)` for video.

    Returns:
        tokens `(B, N, prod(patch_size) * C)` with `N = prod(grid // patch_size)`, and the token-grid
        shape `grid // patch_size`.
    """
    _check_rank(patch_size)
    grid = tuple(x.shape[2:])
    if len(grid) != len(patch_size):
        raise ValueError(f"input grid {grid} has rank {len(grid)} but patch_size is {tuple(patch_size)}")
    if any(n % p for n, p in zip(grid, patch_size)):
        raise ValueError(f"grid {grid} is not divisible by patch_size {tuple(patch_size)}")
    g, p = _names(len(grid))
    pattern = f"b c {' '.join(f'({gi} {pi})' for gi, pi in zip(g, p))} -> b ({' '.join(g)}) ({' '.join(p)} c)"
    tokens = rearrange(x, pattern, **dict(zip(p, patch_size)))
    return tokens, tuple(n // q for n, q in zip(grid, patch_size))


def unpatchify(
    tokens: torch.Tensor, token_grid: Sequence[int], patch_size: Sequence[int], channels: int
) -> torch.Tensor:
    """Inverse of `patchify`.

    Args:
        tokens: `(B, N, prod(patch_size) * channels)` with `N = prod(token_grid)`.
        token_grid: the patch-grid shape returned by `patchify`.
        patch_size: patch extent per grid axis.
        channels: output channels `C`.

    Returns:
        `(B, C, *(token_grid * patch_size))`.
    """
    _check_rank(patch_size)
    if len(token_grid) != len(patch_size):
        raise ValueError(f"token_grid {tuple(token_grid)} and patch_size {tuple(patch_size)} differ in rank")
    g, p = _names(len(token_grid))
    pattern = f"b ({' '.join(g)}) ({' '.join(p)} c) -> b c {' '.join(f'({gi} {pi})' for gi, pi in zip(g, p))}"
    sizes = dict(zip(g, token_grid)) | dict(zip(p, patch_size))
    return rearrange(tokens, pattern, c=channels, **sizes)
