"""Text-to-clip generation with a trained ``LatentVideoModel``: load, encode prompts, sample, decode.

    pipe = VideoPipeline.load()                       # the shipped weights (checkpoints/video/)
    clips = pipe.generate(["a red circle moving left"], seed=0)   # (1, 3, 16, 32, 32) in [-1, 1]

A shipped checkpoint is two files: ``<name>.safetensors`` (the EMA weights of the autoencoder
and the DiT; loading never unpickles) and ``<name>.yaml`` (the run's ``VideoConfig``, strict keys).
Prompt ``i``'s initial noise is drawn on the CPU from its own generator ``(seed, i)``, so a clip
does not depend on the batch size or on which other prompts share its batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shared_core.denoiser import NetworkDenoiser
from shared_core.errors import ExtradimError
from shared_core.guidance import CFGDenoiser
from shared_core.io import file_sha256
from shared_core.pretrained import load_pretrained, save_pretrained
from shared_core.random import make_generator, randn
from shared_core.samplers import SAMPLERS, get_sampler
from shared_core.text import TextEncoder
from shared_core.train.distributed import derive_seed
from shared_core.train.loop import build_schedule
from video.modality import LatentVideoModel, VideoConfig, null_condition

__all__ = ["DEFAULT_CHECKPOINT", "VideoPipeline", "save_pipeline_checkpoint"]

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "video" / "shapes.safetensors"


def save_pipeline_checkpoint(model: LatentVideoModel, cfg: VideoConfig, path: str | os.PathLike[str]) -> Path:
    """Write ``path`` (.safetensors) and its ``.yaml`` config beside it, each atomically."""
    return save_pretrained(model, cfg, path, kind="video")


class VideoPipeline:
    """A trained text-to-clip model with its text encoder and default sampling settings."""

    def __init__(
        self,
        model: LatentVideoModel,
        cfg: VideoConfig,
        text_encoder: TextEncoder,
        *,
        checkpoint: Path | None = None,
    ) -> None:
        self.model, self.cfg, self.text = model.eval(), cfg, text_encoder
        self.schedule = build_schedule(cfg.diffusion)
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = file_sha256(checkpoint) if checkpoint else ""
        self.frames, self.size = cfg.data.frames, cfg.data.size

    @classmethod
    def load(
        cls, checkpoint: str | os.PathLike[str] | None = None, *, text_encoder: str | None = None
    ) -> VideoPipeline:
        """Load a shipped ``.safetensors`` (+ ``.yaml``) or a training checkpoint folder (its EMA weights).

        ``None`` is the shipped default. Missing, corrupt or mismatched files raise a one-line
        ``CheckpointError``.
        """
        path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        model, cfg, weights = load_pretrained(path, VideoConfig, LatentVideoModel)
        encoder = TextEncoder.load(text_encoder or cfg.data.text_encoder, max_length=cfg.data.max_text_length)
        if encoder.dim != cfg.model.text_dim:
            raise ExtradimError(f"text encoder width {encoder.dim} != the model's {cfg.model.text_dim}")
        return cls(model, cfg, encoder, checkpoint=weights)

    def settings(self, steps: int | None, sampler: str | None, guidance: float | None) -> dict[str, Any]:
        """Resolved sampling settings (defaults from the checkpoint's config); bad values raise."""
        s = self.cfg.sample
        out = {
            "sampler": sampler or s.sampler,
            "steps": s.steps if steps is None else steps,
            "guidance": s.guidance if guidance is None else guidance,
            "spacing": s.spacing,
        }
        if out["sampler"] not in SAMPLERS:
            raise ExtradimError(f"unknown sampler {out['sampler']!r}; valid: {', '.join(sorted(SAMPLERS))}")
        if not 1 <= out["steps"] <= 1000:
            raise ExtradimError(f"steps must be in 1..1000, got {out['steps']}")
        if not 0 <= out["guidance"] <= 50:
            raise ExtradimError(f"guidance must be in 0..50, got {out['guidance']}")
        return out

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        steps: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        batch_size: int = 16,
        callback: Callable[[int], None] | None = None,
        first_index: int = 0,
    ) -> Tensor:
        """Clips ``(len(prompts), 3, F, H, W)`` in [-1, 1].

        ``callback(n)`` is called after each denoising step with the number of clips in the step's
        batch (for progress bars). Noise of prompt ``i`` comes from generator ``(seed, first_index + i)``.
        """
        st = self.settings(steps, sampler, guidance)
        emb = self.text.encode(prompts, pad_to=self.cfg.data.max_text_length)  # validates the prompts
        sigmas = self._sigmas(st["steps"], st["spacing"])
        L, D = emb.tokens.shape[1], emb.tokens.shape[2]
        denoiser = NetworkDenoiser(
            self.model, self.schedule, self.cfg.diffusion.prediction, clip_x0=self.cfg.sample.clip_x0
        )
        guided = CFGDenoiser.from_scale(denoiser, st["guidance"], lambda b: null_condition(b, L, D))
        sample = get_sampler(st["sampler"])
        shape = self.model.latent_shape(self.cfg.data)
        outs = []
        for start in range(0, len(prompts), batch_size):
            idx = range(start, min(start + batch_size, len(prompts)))
            noise = torch.stack(
                [randn(shape, make_generator(derive_seed(seed, first_index + i))) for i in idx]
            )
            x = noise * float(self.schedule.prior_std(sigmas[0]))
            cond = {
                "context": emb.tokens[idx.start : idx.stop],
                "context_mask": emb.mask[idx.start : idx.stop],
                "pooled": emb.pooled[idx.start : idx.stop],
            }
            step_cb = _batch_callback(callback, len(idx))
            latents = sample(
                guided,
                x,
                sigmas,
                extra_args=cond,
                callback=step_cb,
                # one noise stream per clip: with a stochastic sampler a clip does not depend on its batch
                generator=[make_generator(derive_seed(seed, 1, first_index + i)) for i in idx],
            )
            outs.append(self.model.ae.decode(latents))
        return torch.cat(outs)

    def _sigmas(self, steps: int, spacing: str) -> Tensor:
        if spacing == "karras":
            return self.schedule.sigmas(steps, karras=True)
        if not self.schedule.discrete:
            return self.schedule.sigmas(steps)
        return self.schedule.sigmas(steps, spacing=spacing)  # type: ignore[call-arg]


def _batch_callback(callback: Callable[[int], None] | None, n: int) -> Callable[[Any], None] | None:
    """A sampler callback that reports ``n`` clips per denoising step to ``callback``."""
    return None if callback is None else (lambda _info: callback(n))
