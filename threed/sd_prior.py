"""A diffusers Stable Diffusion pipeline from a local folder as the score-distillation prior
(threestudio's default setup), behind the same interface as the shape-world prior.

    prior = StableDiffusionPrior.load("path/to/stable-diffusion-folder")   # no download
    extradim dream "a red torus" --prior path/to/stable-diffusion-folder

SDS runs in the VAE's latent space, as in threestudio's ``stable-diffusion-guidance``: the render
(at most 64x64, upsampled to the UNet's sample size x the VAE's down-scaling) is encoded by the
VAE encoder, differentiably, and the SDS direction is applied to the latents. The prompt gets DreamFusion's
view-dependent suffix (", front view" / ", side view" / ", back view" / ", overhead view") from
each camera, since a plain text-to-image model has no camera input. The UNet sees integer
timesteps (its scheduler's ``alphas_cumprod``; eps- or v-prediction as its config says).

Needs ``diffusers`` (``pip install diffusers``); nothing is fetched from the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shared_core.denoiser import NetworkDenoiser
from shared_core.errors import CheckpointError, ExtradimError, first_line
from shared_core.guidance import CFGDenoiser
from shared_core.schedules import DiscreteSchedule
from threed.views import view_phrase

__all__ = ["StableDiffusionPrior"]

_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


class StableDiffusionPrior:
    distance = 3.2  # cameras of score distillation (the model has no camera input of its own)
    fov = 45.0

    def __init__(self, pipe: Any, path: Path | None = None) -> None:
        self.pipe, self.path = pipe, path
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            m.eval().requires_grad_(False)
        pred = pipe.scheduler.config.get("prediction_type", "epsilon")
        if pred not in _PREDICTIONS:
            raise ExtradimError(f"unsupported prediction_type {pred!r} in the scheduler config")
        self.prediction = _PREDICTIONS[pred]
        self.schedule = DiscreteSchedule.from_alphas_cumprod(pipe.scheduler.alphas_cumprod)
        self.vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self.input_size = int(pipe.unet.config.sample_size) * self.vae_scale  # e.g. 512 for SD 1.5
        # the NeRF renders at most 64x64 (a 512x512 render per view is far too slow on a CPU);
        # ``latents`` upsamples to the VAE's input size, as threestudio does
        self.size = min(64, self.input_size)
        self.scaling = float(pipe.vae.config.scaling_factor)
        self.name = f"stable-diffusion:{path.name if path else 'in-memory'}"
        self._cache: dict[str, Tensor] = {}

    @classmethod
    def load(cls, path: str | Path) -> StableDiffusionPrior:
        try:
            from diffusers import StableDiffusionPipeline
        except ImportError:
            raise ExtradimError("a Stable Diffusion prior needs diffusers: pip install diffusers") from None
        p = Path(path)
        if not (p / "model_index.json").is_file():
            raise CheckpointError(f"{p} is not a diffusers pipeline folder (no model_index.json)")
        try:
            pipe = StableDiffusionPipeline.from_pretrained(p, safety_checker=None, local_files_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"cannot load the Stable Diffusion pipeline in {p}: {first_line(exc)}"
            ) from None
        return cls(pipe, p)

    def _embed(self, text: str) -> Tensor:
        if text not in self._cache:
            tok = self.pipe.tokenizer(
                [text], padding="max_length", max_length=self.pipe.tokenizer.model_max_length,
                truncation=True, return_tensors="pt",
            )  # fmt: skip
            with torch.no_grad():
                self._cache[text] = self.pipe.text_encoder(tok.input_ids)[0]
        return self._cache[text]

    def encode(self, prompt: str) -> str:
        return prompt

    def latents(self, images: Tensor) -> Tensor:
        """Renders ``(B, 3, size, size)`` in [-1, 1] -> scaled VAE latents (differentiable), the
        renders bilinearly upsampled to the VAE's input size first."""
        if images.shape[-1] != self.input_size:
            images = torch.nn.functional.interpolate(
                images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        return self.pipe.vae.encode(images).latent_dist.mean * self.scaling

    def decode(self, latents: Tensor) -> Tensor:
        with torch.no_grad():
            return ((self.pipe.vae.decode(latents / self.scaling).sample + 1) / 2).clamp(0, 1)

    def denoiser(self, cond: str, cameras: Tensor, guidance: float) -> Any:
        prompts = [f"{cond}, {view_phrase(float(a), float(e))}" for a, e in cameras.tolist()]
        ctx = torch.cat([self._embed(p) for p in prompts])
        null = self._embed("")
        unet = self.pipe.unet

        def net(x: Tensor, t: Tensor, encoder_hidden_states: Tensor) -> Tensor:
            return unet(x, t, encoder_hidden_states=encoder_hidden_states).sample

        den = NetworkDenoiser(net, self.schedule, self.prediction, quantize=True)
        guided = CFGDenoiser.from_scale(
            den, guidance, lambda b: {"encoder_hidden_states": null.expand(b, -1, -1)}
        )
        return lambda x, sigma: guided(x, sigma, encoder_hidden_states=ctx.to(x))
