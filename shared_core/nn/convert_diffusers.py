"""Convert diffusers' `DiTTransformer2DModel` weights to our `DiT` and back (pure state-dict maps).

What differs between the two and how it is carried over:

- Patch embedding: diffusers has a strided `Conv2d` weight `(D, C, p, p)`; ours is a Linear on
  channel-last patches `(p q c)`, so the weight is permuted to `(D, p, q, C)` and flattened.
- Attention: diffusers has separate `to_q/to_k/to_v`; ours one fused `qkv` (concatenated on rows).
- Conditioning: diffusers gives *every block* its own `CombinedTimestepLabelEmbeddings` and the final
  layer uses block 0's. Checkpoints converted from the original DiT hold identical copies, which fold
  into our single shared embedder; untied copies (a model trained in diffusers, or a random one)
  need `DiTConfig.cond_embed_per_block=True`, chosen automatically.
- Timestep features: diffusers uses `downscale_freq_shift=1` (`timestep_freq_shift=1.0` here, DiT's
  is 0) with the same `[cos, sin]` order and 256 channels.
- The pre-MLP LayerNorm (`norm3`) has eps `norm_eps` (1e-5) in diffusers, 1e-6 in DiT:
  `DiTConfig.mlp_norm_eps` carries it.
- Positions are DiT's 2-D sin-cos (not stored). diffusers rescales them when run at a resolution other
  than `sample_size`; ours does not, so outputs agree at the native `sample_size`.
- Learned variance: diffusers' `out_channels = 2 * in_channels` is `learn_sigma=True`.

diffusers is not imported: configs are plain mappings (`model.config` works).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .dit import DiTConfig

__all__ = ["dit_config_from_diffusers", "from_diffusers_state_dict", "to_diffusers_state_dict"]

Tensor = torch.Tensor

# (ours, diffusers) names inside one condition embedder / one block, for 1:1 tensors.
_EMBED_MAP = {
    "t_embedder.mlp.0": "timestep_embedder.linear_1",
    "t_embedder.mlp.2": "timestep_embedder.linear_2",
}
_BLOCK_MAP = {
    "adaLN_modulation.1": "norm1.linear",
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
}
_FINAL_MAP = {"final_layer.adaLN_modulation.1": "proj_out_1", "final_layer.linear": "proj_out_2"}


def dit_config_from_diffusers(config: Mapping[str, Any], cond_embed_per_block: bool = False) -> DiTConfig:
    """Our `DiTConfig` for a diffusers `DiTTransformer2DModel` config.

    Raises:
        ValueError: for settings our DiT does not represent (other activations/norms, dropout...).
    """
    unsupported = {
        "norm_type": "ada_norm_zero",
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "norm_elementwise_affine": False,
    }
    for key, value in unsupported.items():
        if config.get(key, value) != value:
            raise ValueError(
                f"cannot convert a DiTTransformer2DModel with {key}={config[key]!r} (need {value!r})"
            )
    if config.get("dropout", 0.0):
        raise ValueError("cannot convert a DiTTransformer2DModel with dropout > 0")
    in_ch = config["in_channels"]
    out_ch = config.get("out_channels") or in_ch
    if out_ch not in (in_ch, 2 * in_ch):
        raise ValueError(f"out_channels={out_ch} must be in_channels ({in_ch}) or 2x it (learned variance)")
    heads = config["num_attention_heads"]
    p = config["patch_size"]
    return DiTConfig(
        in_channels=in_ch,
        patch_size=(p, p),
        hidden_size=heads * config["attention_head_dim"],
        depth=config["num_layers"],
        num_heads=heads,
        learn_sigma=out_ch == 2 * in_ch,
        num_classes=config["num_embeds_ada_norm"],
        class_dropout_prob=0.1,  # diffusers' CombinedTimestepLabelEmbeddings default
        timestep_freq_shift=1.0,
        mlp_norm_eps=config.get("norm_eps", 1e-5),
        cond_embed_per_block=cond_embed_per_block,
    )


def _embedders_tied(sd: Mapping[str, Tensor], depth: int) -> bool:
    prefix = "transformer_blocks.{}.norm1.emb."
    keys = [k[len(prefix.format(0)) :] for k in sd if k.startswith(prefix.format(0))]
    return all(
        torch.equal(sd[prefix.format(i) + k], sd[prefix.format(0) + k]) for i in range(1, depth) for k in keys
    )


def from_diffusers_state_dict(
    state_dict: Mapping[str, Tensor], config: Mapping[str, Any]
) -> tuple[DiTConfig, dict[str, Tensor]]:
    """Map a `DiTTransformer2DModel` state dict to ours.

    Args:
        state_dict: the diffusers model's `state_dict()`.
        config: the diffusers model's config (`model.config`).

    Returns:
        Our `DiTConfig` (with `cond_embed_per_block` set iff the per-block embedders differ) and a
        state dict for `DiT(config).load_state_dict(...)`.
    """
    sd = state_dict
    depth = config["num_layers"]
    cfg = dit_config_from_diffusers(config, cond_embed_per_block=not _embedders_tied(sd, depth))
    out: dict[str, Tensor] = {}

    w = sd["pos_embed.proj.weight"]  # (D, C, p, q)
    out["x_embedder.weight"] = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)  # (D, p*q*C), (p q c) order
    out["x_embedder.bias"] = sd["pos_embed.proj.bias"]

    embed_targets = ["cond_embed"] + (
        [f"block_cond_embeds.{i - 1}" for i in range(1, depth)] if cfg.cond_embed_per_block else []
    )
    for i, ours in enumerate(embed_targets):
        theirs = f"transformer_blocks.{i}.norm1.emb"
        for o, d in _EMBED_MAP.items():
            for s in ("weight", "bias"):
                out[f"{ours}.{o}.{s}"] = sd[f"{theirs}.{d}.{s}"]
        out[f"{ours}.y_embedder.embedding_table.weight"] = sd[
            f"{theirs}.class_embedder.embedding_table.weight"
        ]

    for i in range(depth):
        b, tb = f"blocks.{i}", f"transformer_blocks.{i}"
        for o, d in _BLOCK_MAP.items():
            for s in ("weight", "bias"):
                out[f"{b}.{o}.{s}"] = sd[f"{tb}.{d}.{s}"]
        for s in ("weight", "bias"):
            out[f"{b}.attn.qkv.{s}"] = torch.cat([sd[f"{tb}.attn1.to_{n}.{s}"] for n in "qkv"], dim=0)

    for o, d in _FINAL_MAP.items():
        for s in ("weight", "bias"):
            out[f"{o}.{s}"] = sd[f"{d}.{s}"]
    return cfg, out


def to_diffusers_state_dict(
    state_dict: Mapping[str, Tensor], config: DiTConfig
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Map our state dict to a `DiTTransformer2DModel` one.

    Args:
        state_dict: our `DiT.state_dict()`.
        config: its `DiTConfig`; must be a 2-D grid model with square patches, class labels, no
            cross-attention or pooled condition, and the diffusers options (`timestep_freq_shift=1`).

    Returns:
        The diffusers state dict and the constructor kwargs for `DiTTransformer2DModel(**kwargs)`
        (`sample_size` is not part of our config; pass the training resolution yourself, default 32).
    """
    ps = config.patch_size
    if ps is None or len(ps) != 2 or ps[0] != ps[1]:
        raise ValueError(f"diffusers' DiT needs a 2-D grid with square patches, got patch_size={ps}")
    if not config.num_classes or config.context_dim or config.pooled_dim or config.attn_layout != "joint":
        raise ValueError(
            "diffusers' DiT is class-conditional with joint attention only (no context / pooled)"
        )
    if config.timestep_freq_shift != 1.0:
        raise ValueError(
            "diffusers' DiT uses timestep_freq_shift=1.0; this model would compute other features"
        )
    if config.mlp_ratio != 4.0:
        raise ValueError("diffusers' DiT has mlp_ratio 4")
    if config.target_channels not in (0, config.in_channels):
        raise ValueError("diffusers' DiT predicts all its input channels (target_channels must be 0)")
    sd, depth, p = state_dict, config.depth, ps[0]
    out: dict[str, Tensor] = {}

    w = sd["x_embedder.weight"]  # (D, p*q*C)
    out["pos_embed.proj.weight"] = w.reshape(w.shape[0], p, p, config.in_channels).permute(0, 3, 1, 2)
    out["pos_embed.proj.bias"] = sd["x_embedder.bias"]

    for i in range(depth):
        ours = f"block_cond_embeds.{i - 1}" if config.cond_embed_per_block and i > 0 else "cond_embed"
        theirs = f"transformer_blocks.{i}.norm1.emb"
        for o, d in _EMBED_MAP.items():
            for s in ("weight", "bias"):
                out[f"{theirs}.{d}.{s}"] = sd[f"{ours}.{o}.{s}"]
        out[f"{theirs}.class_embedder.embedding_table.weight"] = sd[
            f"{ours}.y_embedder.embedding_table.weight"
        ]

    for i in range(depth):
        b, tb = f"blocks.{i}", f"transformer_blocks.{i}"
        for o, d in _BLOCK_MAP.items():
            for s in ("weight", "bias"):
                out[f"{tb}.{d}.{s}"] = sd[f"{b}.{o}.{s}"]
        for s in ("weight", "bias"):
            for n, part in zip("qkv", sd[f"{b}.attn.qkv.{s}"].chunk(3, dim=0)):
                out[f"{tb}.attn1.to_{n}.{s}"] = part

    for o, d in _FINAL_MAP.items():
        for s in ("weight", "bias"):
            out[f"{d}.{s}"] = sd[f"{o}.{s}"]

    heads = config.num_heads
    kwargs = {
        "num_attention_heads": heads,
        "attention_head_dim": config.hidden_size // heads,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "num_layers": depth,
        "patch_size": p,
        "num_embeds_ada_norm": config.num_classes,
        "norm_type": "ada_norm_zero",
        "norm_eps": config.mlp_norm_eps,
    }
    return out, kwargs
