"""DiT: a modality-agnostic diffusion transformer with adaLN-Zero blocks.

Peebles & Xie, "Scalable Diffusion Models with Transformers" (2023). The transformer itself only
sees tokens `(B, N, D)`; what makes them is one of two input kinds:

- a grid `(B, C, *grid)` of rank 1..3 (signals, images/latents, videos/volumes), cut into patches and
  given fixed sin-cos positions;
- a token set `(B, N, C)` (e.g. a point cloud, as in Point-E) with no positions, so the network is
  permutation-equivariant.

Per-block attention is joint over all tokens or factorised over named axes of the token grid
(Latte / STDiT style spatial-then-temporal passes), cycled over the depth; the core never knows what
an axis means. Conditioning: timestep + optional class label (with a null class for CFG training)
+ optional pooled vector drive adaLN-Zero; an optional token sequence is attended to by a masked,
zero-initialised cross-attention (PixArt-alpha). Classifier-free guidance is *not* done here: a
separate wrapper combines the conditional and the null-label predictions on all channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .attention import ATTENTION_BACKENDS, Attention, AttentionBackend
from .embeddings import LabelEmbedder, TimestepEmbedder, VectorEmbedder, sincos_pos_embed
from .patchify import patchify, unpatchify

__all__ = [
    "DIT_PRESETS",
    "ConditionEmbedder",
    "DiT",
    "DiTBlock",
    "DiTConfig",
    "FinalLayer",
    "build_dit",
    "dit_config",
]

AxisGroup = tuple[str | int, ...]


# ----------------------------------------------------------------------------------------------------
#                                              Config
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiTConfig:
    """Everything that defines a DiT. Lists (e.g. from YAML) are stored as tuples.

    Attributes:
        in_channels: channels `C` of the input grid, or feature size of each input token.
        patch_size: patch extent per grid axis, e.g. `(2, 2)` or `(1, 2, 2)`; its length is the grid
            rank. `None` means the input is a token set `(B, N, C)` (no patches, no positions).
        hidden_size: transformer width `D`.
        depth: number of blocks.
        num_heads: attention heads (`hidden_size % num_heads == 0`).
        mlp_ratio: MLP hidden width / `D`.
        learn_sigma: also output the variance interpolation channels (IDDPM): twice the predicted
            channels.
        target_channels: channels the model predicts, the first ones of the input (0: all
            `in_channels`). The rest are conditioning features concatenated to the input (e.g. a
            low-resolution image, or Fourier features of a token's coordinates) and not predicted.
        num_classes: class-conditional if > 0 (labels in `[0, num_classes)`, `num_classes` = null).
        class_dropout_prob: training-time probability of replacing a label by the null class.
        pooled_dim: size of a pooled condition vector added to the timestep embedding (0: none).
        context_dim: width `Dc` of condition tokens for cross-attention (0: no cross-attention).
        attn_layout: `"joint"`, or a sequence of axis groups cycled over the blocks, e.g.
            `(("h", "w"), ("t",))`; a group lists token-grid axes by name (see `grid_axes`) or index.
        grid_axes: names of the token-grid axes, e.g. `("t", "h", "w")`; only needed for named groups.
        attn_backend: `"auto"`, `"sdpa"` or `"xformers"`.
        timestep_freq_shift: 0 is DiT's timestep frequency spacing; diffusers' DiT uses 1.
        mlp_norm_eps: epsilon of the LayerNorm before the MLP (DiT 1e-6; diffusers' DiT 1e-5).
        cond_embed_per_block: give every block its own timestep/label/pooled embedder (block 0's also
            feeds the final layer). Only for diffusers' `DiTTransformer2DModel`, which is built that
            way; published DiT checkpoints hold identical copies and convert to the shared default.
    """

    in_channels: int = 4
    patch_size: tuple[int, ...] | None = (2, 2)
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    learn_sigma: bool = False
    target_channels: int = 0
    num_classes: int = 0
    class_dropout_prob: float = 0.1
    pooled_dim: int = 0
    context_dim: int = 0
    attn_layout: str | tuple[AxisGroup, ...] = "joint"
    grid_axes: tuple[str, ...] | None = None
    attn_backend: AttentionBackend = "auto"
    timestep_freq_shift: float = 0.0
    mlp_norm_eps: float = 1e-6
    cond_embed_per_block: bool = False

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise YAML lists to tuples through object.__setattr__.
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.grid_axes is not None:
            object.__setattr__(self, "grid_axes", tuple(self.grid_axes))
        if not isinstance(self.attn_layout, str):
            object.__setattr__(self, "attn_layout", tuple(tuple(g) for g in self.attn_layout))
        if not 0 <= self.target_channels <= self.in_channels:
            raise ValueError(
                f"target_channels must be in 0..in_channels={self.in_channels}, got {self.target_channels}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.patch_size is not None and (not 1 <= len(self.patch_size) <= 3 or min(self.patch_size) < 1):
            raise ValueError(f"patch_size must be 1..3 positive ints or None, got {self.patch_size}")
        if self.attn_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"unknown attn_backend {self.attn_backend!r}; valid: {', '.join(ATTENTION_BACKENDS)}"
            )
        if self.grid_axes is not None and (
            len(self.grid_axes) != self.grid_rank or len(set(self.grid_axes)) != len(self.grid_axes)
        ):
            raise ValueError(
                f"grid_axes {self.grid_axes} must name each of the {self.grid_rank} grid axes once"
            )
        self.block_axes()  # validates attn_layout

    @property
    def grid_rank(self) -> int:
        """Rank of the input grid; 0 for a token set."""
        return 0 if self.patch_size is None else len(self.patch_size)

    @property
    def out_channels(self) -> int:
        """Output channels: the predicted channels (`target_channels` or `in_channels`), twice that
        with learned variance."""
        c = self.target_channels or self.in_channels
        return 2 * c if self.learn_sigma else c

    def block_axes(self) -> list[tuple[int, ...] | None]:
        """Per block, the token-grid axes its self-attention runs over (`None` = joint)."""
        if isinstance(self.attn_layout, str):
            if self.attn_layout != "joint":
                raise ValueError(
                    f"attn_layout must be 'joint' or a sequence of axis groups, got {self.attn_layout!r}"
                )
            return [None] * self.depth
        if self.grid_rank == 0:
            raise ValueError("a factorised attn_layout needs a grid input (patch_size), not a token set")
        if not self.attn_layout or any(not g for g in self.attn_layout):
            raise ValueError(f"attn_layout needs non-empty axis groups, got {self.attn_layout}")
        groups = [tuple(sorted({self._axis_index(a) for a in g})) for g in self.attn_layout]
        return [groups[i % len(groups)] for i in range(self.depth)]

    def _axis_index(self, axis: str | int) -> int:
        if isinstance(axis, str):
            if self.grid_axes is None or axis not in self.grid_axes:
                raise ValueError(f"unknown grid axis {axis!r}; grid_axes={self.grid_axes}")
            return self.grid_axes.index(axis)
        if not 0 <= axis < self.grid_rank:
            raise ValueError(f"grid axis index {axis} is out of range for grid rank {self.grid_rank}")
        return int(axis)


# ----------------------------------------------------------------------------------------------------
#                                          Building blocks
# ----------------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: `x * (1 + scale) + shift` with `x (B, N, D)`, `shift, scale (B, 1, D)`; one fused kernel."""
    return torch.addcmul(shift, x, 1 + scale)


class Mlp(nn.Module):
    """Position-wise MLP with tanh-GELU, as in DiT."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConditionEmbedder(nn.Module):
    """`c = emb(t) [+ emb(y)] [+ emb(pooled)]`, the vector `(B, D)` that drives every adaLN."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.t_embedder = TimestepEmbedder(D, freq_shift=config.timestep_freq_shift)
        self.y_embedder = (
            LabelEmbedder(config.num_classes, D, config.class_dropout_prob) if config.num_classes else None
        )
        self.pooled_embedder = VectorEmbedder(config.pooled_dim, D) if config.pooled_dim else None

    def forward(
        self,
        t: torch.Tensor,
        y: torch.Tensor | None,
        pooled: torch.Tensor | None,
        drop_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """`t (B,)`, `y (B,)`, `pooled (B, Dp)`, `drop_labels (B,)` bool or None -> `(B, D)`."""
        c = self.t_embedder(t)  # (B, D)
        if self.y_embedder is not None:
            c = c + self.y_embedder(y, force_drop=drop_labels)
        if self.pooled_embedder is not None:
            c = c + self.pooled_embedder(pooled)
        return c


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: self-attention, optional cross-attention, MLP.

    Args:
        hidden_size: width `D`.
        num_heads: attention heads.
        mlp_ratio: MLP width / `D`.
        axes: token-grid axes the self-attention runs over; `None` = all tokens jointly.
        context_dim: condition-token width for cross-attention; 0 = none.
        attn_backend: attention backend.
        mlp_norm_eps: epsilon of the pre-MLP LayerNorm.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        axes: tuple[int, ...] | None = None,
        context_dim: int = 0,
        attn_backend: AttentionBackend = "auto",
        mlp_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.axes = axes
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, backend=attn_backend)
        # Cross-attention is not modulated (PixArt-alpha): a plain LayerNorm, zero-init output.
        self.norm_cross: nn.LayerNorm | None = None
        self.cross_attn: Attention | None = None
        if context_dim:
            self.norm_cross = nn.LayerNorm(hidden_size, eps=1e-6)
            self.cross_attn = Attention(hidden_size, num_heads, context_dim=context_dim, backend=attn_backend)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=mlp_norm_eps)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        grid_shape: Sequence[int] | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`x (B, N, D)`, `c (B, D)`, `context (B, L, Dc)`, `context_mask (B, L)` -> `(B, N, D)`."""
        mod = self.adaLN_modulation(c).unsqueeze(1)  # (B, 1, 6D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)  # 6 x (B, 1, D)
        h = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), grid_shape=grid_shape, axes=self.axes)
        x = torch.addcmul(x, gate_msa, h)  # x + gate * attn, (B, N, D)
        if self.cross_attn is not None and self.norm_cross is not None and context is not None:
            x = x + self.cross_attn(self.norm_cross(x), context=context, context_mask=context_mask)
        h = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, N, D)
        return torch.addcmul(x, gate_mlp, h)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a Linear to `out_dim` features per token."""

    def __init__(self, hidden_size: int, out_dim: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """`x (B, N, D)`, `c (B, D)` -> `(B, N, out_dim)`."""
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)  # 2 x (B, 1, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ----------------------------------------------------------------------------------------------------
#                                             The model
# ----------------------------------------------------------------------------------------------------


def _zero_(module: nn.Module) -> None:
    for p in module.parameters():
        nn.init.zeros_(p)


def _normal_weight_(module: nn.Module, std: float) -> None:
    nn.init.normal_(module.get_parameter("weight"), std=std)


class DiT(nn.Module):
    """Diffusion transformer over a grid `(B, C, *grid)` or a token set `(B, N, C)`.

    Args:
        config: the `DiTConfig`; see `DIT_PRESETS` / `dit_config` for the published sizes.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        D = config.hidden_size
        patch_volume = math.prod(config.patch_size) if config.patch_size is not None else 1
        # A Linear on (p.. c)-ordered patches == DiT's strided Conv patch embedding, for any grid rank.
        self.x_embedder = nn.Linear(patch_volume * config.in_channels, D)
        self.cond_embed = ConditionEmbedder(config)
        self.block_cond_embeds = (
            nn.ModuleList(ConditionEmbedder(config) for _ in range(config.depth - 1))
            if config.cond_embed_per_block
            else None
        )
        self.blocks = nn.ModuleList(
            DiTBlock(
                D,
                config.num_heads,
                config.mlp_ratio,
                axes=axes,
                context_dim=config.context_dim,
                attn_backend=config.attn_backend,
                mlp_norm_eps=config.mlp_norm_eps,
            )
            for axes in config.block_axes()
        )
        self.final_layer = FinalLayer(D, patch_volume * config.out_channels)
        # Fixed positions depend on the token-grid shape seen at run time; cached per (shape, device, dtype).
        self._pos_cache: dict[tuple[Any, ...], torch.Tensor] = {}
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All init choices in one place (DiT Sec. 3.2 and its models.py)."""

        # Transformer layers: xavier-uniform weights and zero biases, as in ViT/DiT. The patch
        # embedding is DiT's conv initialised as a Linear, so this covers it too.
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)

        for m in self.modules():
            # Conditioning embedders: N(0, 0.02) as in DiT.
            if isinstance(m, TimestepEmbedder | VectorEmbedder):
                _normal_weight_(m.mlp[0], std=0.02)
                _normal_weight_(m.mlp[2], std=0.02)
            elif isinstance(m, LabelEmbedder):
                nn.init.normal_(m.embedding_table.weight, std=0.02)
            elif isinstance(m, DiTBlock):
                # adaLN-Zero: zero shift/scale/gate, so every residual block starts as the identity.
                _zero_(m.adaLN_modulation[-1])
                # Zero cross-attention output: a new condition starts as a no-op too (PixArt-alpha).
                if m.cross_attn is not None:
                    _zero_(m.cross_attn.proj)
            elif isinstance(m, FinalLayer):
                # Zero output head: the untrained model predicts exactly 0 (DiT's final layer).
                _zero_(m.adaLN_modulation[-1])
                _zero_(m.linear)

    def pos_embed(
        self, token_grid: tuple[int, ...], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """Fixed sin-cos positions `(1, N, D)` for a token grid."""
        key = (token_grid, device, dtype)
        if key not in self._pos_cache:
            pe = sincos_pos_embed(self.config.hidden_size, token_grid)  # (N, D)
            self._pos_cache[key] = pe.to(device=device, dtype=dtype).unsqueeze(0)
        return self._pos_cache[key]

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the denoiser output for noisy `x` at timesteps `t`.

        Args:
            x: `(B, C, *grid)` for a grid model, `(B, N, C)` for a token-set model.
            t: `(B,)` (or scalar) int or float timesteps.
            y: `(B,)` int class labels in `[0, num_classes]` (`num_classes` = null); required iff
                `num_classes > 0`. In training mode labels are dropped with `class_dropout_prob`.
            context: `(B, L, Dc)` condition tokens for cross-attention; `None` skips it (the same as
                an all-False mask).
            context_mask: `(B, L)` bool, True for real context tokens; `None` = all real.
            pooled: `(B, Dp)` pooled condition vector; required iff `pooled_dim > 0`.

        Returns:
            Same shape as `x` but with `out_channels` channels (`C`; `target_channels` if set; twice
            that when `learn_sigma`), channel axis 1 for grids, last axis for token sets.
        """
        cfg, patch = self.config, self.config.patch_size
        self._check_inputs(x, y, context, pooled)
        B = x.shape[0]
        t = t.reshape(-1).expand(B) if t.numel() == 1 else t  # (B,)
        token_grid: tuple[int, ...] | None = None
        if patch is not None:
            tokens, token_grid = patchify(x, patch)  # (B, N, P*C), grid // patch
            h = self.x_embedder(tokens) + self.pos_embed(token_grid, x.device, x.dtype)  # (B, N, D)
        else:
            h = self.x_embedder(x)  # (B, N, D); a set: no positions, so permutation-equivariant

        # One label-drop draw shared by all embedders (matters with cond_embed_per_block).
        drop = None
        if y is not None and self.training and cfg.class_dropout_prob > 0:
            drop = torch.rand(B, device=x.device) < cfg.class_dropout_prob  # (B,)
        c = self.cond_embed(t, y, pooled, drop)  # (B, D)
        block_cs = [c] * cfg.depth
        if self.block_cond_embeds is not None:
            block_cs = [c] + [e(t, y, pooled, drop) for e in self.block_cond_embeds]

        for block, c_i in zip(self.blocks, block_cs):
            h = block(h, c_i, token_grid, context, context_mask)  # (B, N, D)
        h = self.final_layer(h, c)  # (B, N, P*C_out)

        if patch is None or token_grid is None:
            return h  # (B, N, C_out)
        return unpatchify(h, token_grid, patch, cfg.out_channels)  # (B, C_out, *grid)

    def _check_inputs(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        context: torch.Tensor | None,
        pooled: torch.Tensor | None,
    ) -> None:
        cfg = self.config
        if cfg.grid_rank:
            want, ndim, channels = (
                f"(B, {cfg.in_channels}, *grid), grid rank {cfg.grid_rank}",
                cfg.grid_rank + 2,
                1,
            )
        else:
            want, ndim, channels = f"(B, N, {cfg.in_channels})", 3, -1
        if x.ndim != ndim or x.shape[channels] != cfg.in_channels:
            raise ValueError(f"x must be {want}, got {tuple(x.shape)}")
        if (y is None) != (cfg.num_classes == 0):
            raise ValueError(
                f"y is required iff num_classes > 0 (num_classes={cfg.num_classes}); "
                "pass y = num_classes for the null label"
            )
        if (pooled is None) != (cfg.pooled_dim == 0):
            raise ValueError(f"pooled is required iff pooled_dim > 0 (pooled_dim={cfg.pooled_dim})")
        if context is not None and not cfg.context_dim:
            raise ValueError("context given but the model has no cross-attention (context_dim=0)")


# ----------------------------------------------------------------------------------------------------
#                                              Presets
# ----------------------------------------------------------------------------------------------------

# DiT's ImageNet-256 setting: 32x32x4 SD-VAE latents, 1000 classes, learned variance.
_IMAGENET_256 = {"in_channels": 4, "num_classes": 1000, "learn_sigma": True}


def _preset(depth: int, width: int, heads: int, patch: int, **defaults: Any) -> Callable[..., DiTConfig]:
    def make(**overrides: Any) -> DiTConfig:
        base: dict[str, Any] = {
            "depth": depth,
            "hidden_size": width,
            "num_heads": heads,
            "patch_size": (patch, patch),
        }
        return DiTConfig(**(base | defaults | overrides))

    return make


DIT_PRESETS: dict[str, Callable[..., DiTConfig]] = {
    "DiT-S/2": _preset(12, 384, 6, 2, **_IMAGENET_256),
    "DiT-S/4": _preset(12, 384, 6, 4, **_IMAGENET_256),
    "DiT-S/8": _preset(12, 384, 6, 8, **_IMAGENET_256),
    "DiT-B/2": _preset(12, 768, 12, 2, **_IMAGENET_256),
    "DiT-B/4": _preset(12, 768, 12, 4, **_IMAGENET_256),
    "DiT-B/8": _preset(12, 768, 12, 8, **_IMAGENET_256),
    "DiT-L/2": _preset(24, 1024, 16, 2, **_IMAGENET_256),
    "DiT-L/4": _preset(24, 1024, 16, 4, **_IMAGENET_256),
    "DiT-L/8": _preset(24, 1024, 16, 8, **_IMAGENET_256),
    "DiT-XL/2": _preset(28, 1152, 16, 2, **_IMAGENET_256),
    "DiT-XL/4": _preset(28, 1152, 16, 4, **_IMAGENET_256),
    "DiT-XL/8": _preset(28, 1152, 16, 8, **_IMAGENET_256),
    # Small sizes for CPU work; unconditional 4-channel 2-D by default, override anything.
    "tiny": _preset(4, 128, 4, 2),
    "mini": _preset(6, 192, 6, 2),
}


def dit_config(name: str, **overrides: Any) -> DiTConfig:
    """The config of a preset, e.g. `dit_config("DiT-S/2", patch_size=(1, 2, 2))`."""
    if name not in DIT_PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; valid: {', '.join(DIT_PRESETS)}")
    return DIT_PRESETS[name](**overrides)


def build_dit(name: str, **overrides: Any) -> DiT:
    """Build a preset model, e.g. `build_dit("tiny", in_channels=3, patch_size=None)`."""
    return DiT(dit_config(name, **overrides))
