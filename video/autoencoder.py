"""A small per-frame convolutional autoencoder: the latent space the video diffusion model works in.

Each frame ``(3, H, W)`` in [-1, 1] maps to ``(C, H/4, W/4)`` (two stride-2 convolutions), so a
16x32x32 clip becomes 16x8x8x4 latents: 48x fewer values than pixels, and 2x2x2 tubelets give 128
tokens of 32 values instead of 4x4x4 pixel tubelets of 192. Diffusion in this space learned shape
and motion several times faster than in pixels (``shared/MEASURED.md``). The encoder is
deterministic; ``scale`` (a buffer set after training) makes the latents unit-variance, as Stable
Diffusion's scaling factor does.

Training is plain reconstruction (L1 + MSE) on frames of the training world, a few minutes on CPU
(``train_autoencoder``); its reconstructions pass the attribute checker (tested).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["AutoencoderConfig", "FrameAutoencoder", "load_autoencoder", "train_autoencoder"]


@dataclass(frozen=True)
class AutoencoderConfig:
    latent_channels: int = 4
    width: int = 64  # channels of the first stage; the second has 1.5x
    steps: int = 1500  # training steps of ``train_autoencoder``
    batch_size: int = 128  # frames per step
    lr: float = 2e-3
    seed: int = 0
    # A video checkpoint (.safetensors) whose trained autoencoder (``ae.*``, its latent scale
    # included) is loaded instead of training stage 1: DiT experiments on one shared latent space.
    init: str = ""

    def __post_init__(self) -> None:
        if min(self.latent_channels, self.width, self.batch_size) < 1 or self.steps < 0 or self.lr <= 0:
            raise ValueError("latent_channels, width, batch_size must be >= 1, steps >= 0 and lr > 0")
        if self.width % 16:  # GroupNorm(8) over width and 1.5 x width channels
            raise ValueError(f"width must be a multiple of 16, got {self.width}")


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class FrameAutoencoder(nn.Module):
    """Per-frame autoencoder: ``encode (B, 3, F, H, W) -> (B, C, F, H/4, W/4)`` and back.

    Latents are multiplied by ``scale`` on the way out of ``encode`` and divided on the way into
    ``decode``, so the diffusion model sees unit-variance data.
    """

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        w1, w2, c = cfg.width, cfg.width * 3 // 2, cfg.latent_channels
        self.encoder = nn.Sequential(
            _block(3, w1),
            nn.Conv2d(w1, w1, 4, stride=2, padding=1),
            _block(w1, w2),
            nn.Conv2d(w2, w2, 4, stride=2, padding=1),
            _block(w2, w2),
            nn.Conv2d(w2, c, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(c, w2, 3, padding=1),
            _block(w2, w2),
            nn.ConvTranspose2d(w2, w2, 4, stride=2, padding=1),
            _block(w2, w1),
            nn.ConvTranspose2d(w1, w1, 4, stride=2, padding=1),
            _block(w1, w1),
            nn.Conv2d(w1, 3, 3, padding=1),
        )
        self.register_buffer("scale", torch.ones(()))
        self.latent_channels = c

    def _frames(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        b = x.shape[0]
        y = fn(rearrange(x, "b c f h w -> (b f) c h w"))
        return rearrange(y, "(b f) c h w -> b c f h w", b=b)

    def encode(self, clips: Tensor) -> Tensor:
        """``(B, 3, F, H, W)`` in [-1, 1] -> scaled latents ``(B, C, F, H/4, W/4)``."""
        return self._frames(self.encoder, clips) * self.scale

    def decode(self, latents: Tensor) -> Tensor:
        """Scaled latents ``(B, C, F, h, w)`` -> clips ``(B, 3, F, 4h, 4w)``, clamped to [-1, 1]."""
        return self._frames(self.decoder, latents / self.scale).clamp(-1, 1)

    def forward(self, frames: Tensor) -> Tensor:
        """Reconstruct frames ``(N, 3, H, W)`` (training; no scaling, no clamp)."""
        return self.decoder(self.encoder(frames))


def train_autoencoder(
    ae: FrameAutoencoder,
    cfg: AutoencoderConfig,
    sample_frames: Callable[[int, torch.Generator], Tensor],
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Fit ``ae`` to frames from ``sample_frames(n, generator) -> (n, 3, H, W)``, then set ``scale``.

    AdamW with cosine decay; the loss is L1 + MSE. Returns the final reconstruction errors.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    ae.train().requires_grad_(True)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 1), pct_start=0.05
    )
    for step in range(cfg.steps):
        x = sample_frames(cfg.batch_size, g)
        rec = ae(x)
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress(step, float(loss.detach()))
    ae.eval().requires_grad_(False)
    with torch.no_grad():
        x = sample_frames(512, g)
        z = ae.encoder(x)
        rec = ae.decoder(z).clamp(-1, 1)
        ae.scale.fill_(1.0 / float(z.std()))
        return {
            "l1": float((rec - x).abs().mean()),
            "max_abs": float((rec - x).abs().max()),
            "latent_std": float(z.std()),
        }


def load_autoencoder(ae: FrameAutoencoder, path: str | os.PathLike[str]) -> None:
    """Load the ``ae.*`` tensors of a video checkpoint (``.safetensors``, e.g. the shipped
    ``checkpoints/video/shapes.safetensors``) into ``ae``, strictly; a missing, corrupt or
    mismatched file raises a one-line ``CheckpointError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from shared_core.errors import CheckpointError, first_line
    from shared_core.pretrained import load_state_strict

    try:
        state = {k[3:]: v for k, v in load_file(str(path)).items() if k.startswith("ae.")}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read autoencoder.init {path}: {first_line(exc)}") from exc
    if not state:
        raise CheckpointError(f"autoencoder.init {path} holds no autoencoder (no 'ae.*' tensors)")
    load_state_strict(ae, state, f"autoencoder.init {path} does not match autoencoder config")
