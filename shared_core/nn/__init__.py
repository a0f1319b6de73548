"""Neural-network building blocks of the shared core: one attention module, embeddings, patchify,
the DiT backbone and its diffusers weight converter."""

from .attention import ATTENTION_BACKENDS, Attention, AttentionBackend, fold_axes, unfold_axes
from .convert_diffusers import dit_config_from_diffusers, from_diffusers_state_dict, to_diffusers_state_dict
from .dit import DIT_PRESETS, ConditionEmbedder, DiT, DiTBlock, DiTConfig, FinalLayer, build_dit, dit_config
from .embeddings import (
    LabelEmbedder,
    TimestepEmbedder,
    VectorEmbedder,
    sincos_1d,
    sincos_pos_embed,
    timestep_embedding,
)
from .patchify import patchify, unpatchify

__all__ = [
    "ATTENTION_BACKENDS",
    "DIT_PRESETS",
    "Attention",
    "AttentionBackend",
    "ConditionEmbedder",
    "DiT",
    "DiTBlock",
    "DiTConfig",
    "FinalLayer",
    "LabelEmbedder",
    "TimestepEmbedder",
    "VectorEmbedder",
    "build_dit",
    "dit_config",
    "dit_config_from_diffusers",
    "fold_axes",
    "from_diffusers_state_dict",
    "patchify",
    "sincos_1d",
    "sincos_pos_embed",
    "timestep_embedding",
    "to_diffusers_state_dict",
    "unfold_axes",
    "unpatchify",
]
