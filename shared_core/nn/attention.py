"""The one multi-head attention module of the core: self- or cross-attention, joint or axis-factorised.

Factorised (space-time style) attention is not a different layer: the token grid `(B, N = prod(grid), D)`
is folded with einops so that the axes *not* attended over join the batch, e.g. for a `(T, H, W)`
grid

    attend over (H, W):  'b (t h w) d -> (b t) (h w) d'     (spatial pass)
    attend over (T,):    'b (t h w) d -> (b h w) t d'       (temporal pass)

then ordinary attention runs on the folded sequences and the result is unfolded again. The module
never knows what an axis means; the caller names them by index.

Backends: `"sdpa"` is `torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient
kernels on GPU, a fused kernel on CPU); `"xformers"` is `xformers.ops.memory_efficient_attention`
(CUDA only); `"auto"` picks xformers when it is installed and the tensors are on CUDA, else sdpa.
Under `"auto"`, inputs xformers has no kernel for (a build that does not match the installed torch,
a dtype or head size its kernels skip) fall back to sdpa with one warning per kind of input: on an
H200 with torch 2.11, the PyPI xformers 0.0.35 (built for torch 2.10) loads but has no CUDA kernels
(benchmarks/CUDA_CHECK.md). Asking for `"xformers"` by name where it cannot run is an error, never a
silent fallback.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from shared_core.errors import first_line

__all__ = ["ATTENTION_BACKENDS", "Attention", "AttentionBackend", "fold_axes", "unfold_axes"]

AttentionBackend = Literal["auto", "sdpa", "xformers"]
ATTENTION_BACKENDS: tuple[str, ...] = ("auto", "sdpa", "xformers")


@functools.cache
def _xformers_installed() -> bool:
    # find_spec instead of an import: importing xformers is slow and may print warnings. Cached, as
    # "auto" asks on every CUDA forward.
    return importlib.util.find_spec("xformers") is not None


# (dtype, head size, masked) inputs xformers had no kernel for under "auto": they go to sdpa.
_XFORMERS_UNSUPPORTED: set[tuple[torch.dtype, int, bool]] = set()


# ----------------------------------------------------------------------------------------------------
#                                  Folding grid axes into the batch
# ----------------------------------------------------------------------------------------------------


def _fold_patterns(rank: int, axes: Sequence[int]) -> tuple[str, str]:
    names = [f"g{i}" for i in range(rank)]
    kept = [names[i] for i in range(rank) if i not in axes]
    attended = [names[i] for i in sorted(axes)]
    flat = f"b ({' '.join(names)}) d"
    folded = f"(b {' '.join(kept)}) ({' '.join(attended)}) d"
    return flat, folded


def _check_axes(grid_shape: Sequence[int], axes: Sequence[int]) -> None:
    rank = len(grid_shape)
    if not axes or len(set(axes)) != len(axes) or any(not 0 <= a < rank for a in axes):
        raise ValueError(
            f"axes {tuple(axes)} must be distinct indices of a rank-{rank} grid {tuple(grid_shape)}"
        )


def fold_axes(x: torch.Tensor, grid_shape: Sequence[int], axes: Sequence[int]) -> torch.Tensor:
    """Fold the grid axes not in `axes` into the batch.

    Args:
        x: `(B, N, D)` tokens in row-major order over `grid_shape` (`N = prod(grid_shape)`).
        grid_shape: token-grid shape, e.g. `(T, H, W)`.
        axes: indices of the axes to keep in the sequence, e.g. `(1, 2)` for a spatial pass.

    Returns:
        `(B * prod(other sizes), prod(sizes of axes), D)`; a view when no data has to move
        (e.g. attending over trailing axes).
    """
    _check_axes(grid_shape, axes)
    flat, folded = _fold_patterns(len(grid_shape), axes)
    return rearrange(x, f"{flat} -> {folded}", **{f"g{i}": n for i, n in enumerate(grid_shape)})


def unfold_axes(x: torch.Tensor, grid_shape: Sequence[int], axes: Sequence[int]) -> torch.Tensor:
    """Inverse of `fold_axes`: `(B * prod(others), prod(axes), D) -> (B, N, D)`."""
    _check_axes(grid_shape, axes)
    flat, folded = _fold_patterns(len(grid_shape), axes)
    return rearrange(x, f"{folded} -> {flat}", **{f"g{i}": n for i, n in enumerate(grid_shape)})


# ----------------------------------------------------------------------------------------------------
#                                           Attention
# ----------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention over tokens `(B, N, D)`: self-attention, or cross-attention to a context.

    Self-attention uses one fused `qkv` Linear (one GEMM instead of three); cross-attention a `q`
    Linear on the tokens and a fused `kv` Linear on the context.

    Args:
        dim: token width `D`; `dim % num_heads == 0`.
        num_heads: number of heads `H`.
        context_dim: width `Dc` of the context tokens; `None` makes this a self-attention layer.
        qkv_bias: whether the input projections have a bias (DiT: yes).
        backend: `"auto"`, `"sdpa"` or `"xformers"` (see the module docstring).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        context_dim: int | None = None,
        qkv_bias: bool = True,
        backend: AttentionBackend = "auto",
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; valid: {', '.join(ATTENTION_BACKENDS)}")
        if backend == "xformers" and not _xformers_installed():
            raise ValueError(
                "attention backend 'xformers' was requested but xformers is not installed "
                "(pip install 'extradim[xformers]' on a CUDA machine, or use backend='sdpa'/'auto')"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.backend = backend
        self.is_cross = context_dim is not None
        if context_dim is None:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _resolve_backend(self, x: torch.Tensor) -> str:
        if self.backend == "sdpa":
            return "sdpa"
        if self.backend == "xformers":
            if not x.is_cuda:
                raise ValueError(
                    f"attention backend 'xformers' needs CUDA tensors, got device {x.device}; "
                    "use backend='sdpa' or 'auto' on this device"
                )
            return "xformers"
        return "xformers" if x.is_cuda and _xformers_installed() else "sdpa"

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        grid_shape: Sequence[int] | None = None,
        axes: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: `(B, N, D)` query tokens.
            context: `(B, L, Dc)` context tokens; required for (and only for) cross-attention.
            context_mask: `(B, L)` bool, True = attend to this context token. A sample whose mask is
                all False gets a zero output (its context is empty), not NaN.
            grid_shape: token-grid shape with `prod(grid_shape) == N`; needed when `axes` is given.
            axes: for self-attention, the grid axes to attend over (others are folded into the
                batch); `None` attends jointly over all `N` tokens.

        Returns:
            `(B, N, D)`.
        """
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention needs a context (B, L, Dc)")
            if axes is not None:
                raise ValueError("axis folding applies to self-attention only")
            return self._cross(x, context, context_mask)
        if context is not None:
            raise ValueError(
                "this is a self-attention layer; build it with context_dim to attend to a context"
            )
        fold: tuple[Sequence[int], Sequence[int]] | None = None  # (grid_shape, axes) when folding
        if axes is not None:
            if grid_shape is None:
                raise ValueError("axes needs grid_shape")
            # Attending over every axis of the grid is joint attention: skip the (identity) fold.
            if tuple(sorted(axes)) != tuple(range(len(grid_shape))):
                fold = (grid_shape, axes)
        if fold is not None:
            x = fold_axes(x, *fold)  # (B', N', D)
        b, n, d = x.shape
        # unbind, not indexing: its backward is one stack instead of three zero-filled scatters.
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).unbind(2)  # 3 x (B', N', H, Dh)
        out = self._attend(q, k, v, None)  # (B', N', H, Dh)
        out = self.proj(out.reshape(b, n, d))  # (B', N', D)
        return out if fold is None else unfold_axes(out, *fold)  # (B, N, D)

    def _cross(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape
        L = context.shape[1]
        q = self.q(x).view(b, n, self.num_heads, self.head_dim)  # (B, N, H, Dh)
        k, v = self.kv(context).view(b, L, 2, self.num_heads, self.head_dim).unbind(2)  # 2 x (B, L, H, Dh)
        empty = None
        if mask is not None:
            if mask.shape != (b, L) or mask.dtype != torch.bool:
                raise ValueError(
                    f"context_mask must be bool of shape {(b, L)}, got {mask.dtype} {tuple(mask.shape)}"
                )
            # A row with no valid key would softmax over nothing (NaN); let it see everything and zero
            # its output afterwards, which is what "no context" means for a residual branch.
            empty = ~mask.any(dim=1)  # (B,)
            mask = mask | empty[:, None]
        out = self._attend(q, k, v, mask).reshape(b, n, d)  # (B, N, D)
        out = self.proj(out)
        if empty is not None:
            out = out.masked_fill(empty[:, None, None], 0.0)
        return out

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """`q (B, N, H, Dh)`, `k, v (B, L, H, Dh)`, `key_mask (B, L)` bool or None -> `(B, N, H, Dh)`."""
        if self._resolve_backend(q) == "xformers":
            kind = (q.dtype, q.shape[-1], key_mask is not None)
            if self.backend == "xformers" or kind not in _XFORMERS_UNSUPPORTED:
                try:
                    return self._attend_xformers(q, k, v, key_mask)
                except NotImplementedError as exc:  # xformers' dispatcher found no kernel
                    first = first_line(exc)
                    what = f"no kernel for {q.dtype} attention with head size {q.shape[-1]} ({first})"
                    if self.backend == "xformers":  # asked for by name: an error, not a fallback
                        raise RuntimeError(
                            f"attention backend 'xformers' has {what}; use backend 'auto' or 'sdpa'"
                        ) from exc
                    _XFORMERS_UNSUPPORTED.add(kind)
                    warnings.warn(
                        f"xformers has {what}; attention backend 'auto' uses sdpa for it",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, L), broadcast
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
        )  # (B, H, N, Dh)
        return out.transpose(1, 2)

    @staticmethod
    def _attend_xformers(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        import xformers.ops as xops  # guarded: only reached when installed and on CUDA

        bias = None
        if key_mask is not None:
            b, n, h, _ = q.shape
            L = k.shape[1]
            # xformers takes an additive bias (B, H, N, L) whose row stride must be a multiple of 8:
            # allocate a padded row, slice it back and broadcast with expand (no B*H*N*L memory).
            padded = -(-L // 8) * 8
            bias = torch.zeros(b, 1, 1, padded, dtype=q.dtype, device=q.device)
            bias[..., :L].masked_fill_(~key_mask[:, None, None, :], float("-inf"))
            bias = bias[..., :L].expand(b, h, n, L)
        # memory_efficient_attention works in (B, M, H, K) layout, which is ours: no transposes.
        return xops.memory_efficient_attention(q.contiguous(), k.contiguous(), v.contiguous(), attn_bias=bias)
