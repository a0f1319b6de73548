"""The ``video`` modality: text-to-clip latent diffusion on the Shapes world.

    extradim train video --config configs/video/shapes.yaml

The design, and why (the issue's naive pixel DiT learned only colour in 19 CPU-minutes):

1. A per-frame autoencoder (``video.autoencoder``) maps 16x32x32 RGB clips to 16x8x8x4 latents;
   it trains first, inside the same command, in a few minutes.
2. A DiT from the shared backbone runs on the latent grid with 2x2x2 tubelets (128 tokens), 3-D
   positions, joint space-time attention (or factorised: spatial within a frame, then temporal
   at each location, as in Latte/STDiT), cross-attention to the text encoder's token states and
   the pooled text vector added to the timestep embedding (adaLN-Zero).
3. x0-prediction with uniform weighting on the x0 error (the high-noise steps, which decide the
   layout and motion, keep their weight), classifier-free guidance by dropping the text.
4. Captions come from a bank of paraphrases per (colour, shape, motion) combination whose
   embeddings are computed once at start-up, so the 22.7M-parameter text encoder costs nothing
   per step.

The model the engine trains is ``LatentVideoModel``: the frozen autoencoder plus the DiT, so the
engine's checkpoints (and the shipped weights) hold both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from shared_core.nn.dit import DiT, DiTConfig
from shared_core.random import make_generator, rand
from shared_core.text import DEFAULT_ENCODER, EmbeddingBank, TextEncoder
from shared_core.train.distributed import DistInfo, derive_seed
from shared_core.train.loop import DiffusionObjective, Objective, RunConfig
from shared_core.train.modality import Modality
from video.autoencoder import AutoencoderConfig, FrameAutoencoder, load_autoencoder, train_autoencoder
from video.checker import attribute_accuracy, check_clips
from video.world import Attributes, ShapesWorld, canonical_caption, paraphrases, render_clips, to_unit_range

__all__ = [
    "CaptionBank",
    "LatentObjective",
    "LatentVideoModel",
    "ShapesClipDataset",
    "VideoConfig",
    "VideoDataConfig",
    "VideoModality",
    "VideoModelConfig",
    "VideoSampleConfig",
]


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoDataConfig:
    size: int = 32
    frames: int = 16
    seed: int = 0
    held_out: tuple[tuple[str, str, str], ...] | None = None  # None: video.world.default_held_out()
    captions_per_combo: int = 96  # paraphrases per combination in the caption bank (plus the canonical)
    canonical_prob: float = 0.25  # how often a training clip gets its canonical caption
    text_encoder: str = DEFAULT_ENCODER  # "minilm" or a local Hugging Face directory
    max_text_length: int = 32

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 8 or self.frames < 2:
            raise ValueError(f"need size >= 8 divisible by 8 and frames >= 2, got {self.size}, {self.frames}")
        if self.captions_per_combo < 1 or not 0.0 <= self.canonical_prob <= 1.0:
            raise ValueError("captions_per_combo must be >= 1 and canonical_prob in [0, 1]")
        if self.held_out is not None:
            object.__setattr__(self, "held_out", tuple(tuple(h) for h in self.held_out))


@dataclass(frozen=True)
class VideoModelConfig:
    patch_size: tuple[int, int, int] = (2, 2, 2)  # (t, h, w) tubelet on the latent grid
    hidden_size: int = 192
    depth: int = 6
    num_heads: int = 6
    mlp_ratio: float = 4.0
    attention: Literal["joint", "factorised"] = "joint"
    text_dim: int = 384  # width of the text encoder's token states

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (t, h, w), got {self.patch_size}")
        if self.attention not in ("joint", "factorised"):
            raise ValueError(f"attention must be 'joint' or 'factorised', got {self.attention!r}")

    def dit_config(self, in_channels: int) -> DiTConfig:
        layout: Any = "joint" if self.attention == "joint" else (("h", "w"), ("t",))
        return DiTConfig(
            in_channels=in_channels,
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            context_dim=self.text_dim,
            pooled_dim=self.text_dim,
            attn_layout=layout,
            grid_axes=("t", "h", "w"),
        )


@dataclass(frozen=True)
class VideoSampleConfig:
    sampler: str = "dpmpp_2m"
    steps: int = 20
    guidance: float = 4.0  # CFG scale s = 1 + w; 1 disables guidance
    spacing: Literal["trailing", "leading", "linspace", "karras"] = "trailing"
    clip_x0: float | None = None  # clamp the denoised latent (None: no clamp)
    num_eval_clips: int = 252  # clips per evaluation (split over seen and held-out prompts)
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.guidance < 0 or self.batch_size < 1 or self.num_eval_clips < 0:
            raise ValueError("need steps >= 1, guidance >= 0, batch_size >= 1, num_eval_clips >= 0")


@dataclass(frozen=True)
class VideoConfig(RunConfig):
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    model: VideoModelConfig = field(default_factory=VideoModelConfig)
    sample: VideoSampleConfig = field(default_factory=VideoSampleConfig)


def make_world(cfg: VideoDataConfig, split: Literal["train", "held_out", "all"] = "train") -> ShapesWorld:
    return ShapesWorld(cfg.size, cfg.frames, cfg.seed, held_out=cfg.held_out, split=split)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class LatentVideoModel(nn.Module):
    """The frozen per-frame autoencoder and the latent DiT: ``forward`` is the DiT on latents.

    ``forward(x (B, C, F, h, w), t (B,), context (B, L, Dt), context_mask (B, L), pooled (B, Dt))``.
    """

    def __init__(self, cfg: VideoConfig) -> None:
        super().__init__()
        self.ae = FrameAutoencoder(cfg.autoencoder).requires_grad_(False)
        self.dit = DiT(cfg.model.dit_config(cfg.autoencoder.latent_channels))

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        pooled: Tensor | None = None,
    ) -> Tensor:
        return self.dit(x, t, context=context, context_mask=context_mask, pooled=pooled)

    def latent_shape(self, cfg: VideoDataConfig) -> tuple[int, int, int, int]:
        return (self.ae.latent_channels, cfg.frames, cfg.size // 4, cfg.size // 4)


def null_condition(batch: int, length: int, dim: int) -> dict[str, Tensor]:
    """The unconditional input of classifier-free guidance: no text tokens, a zero pooled vector."""
    return {
        "context": torch.zeros(batch, length, dim),
        "context_mask": torch.zeros(batch, length, dtype=torch.bool),
        "pooled": torch.zeros(batch, dim),
    }


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


class CaptionBank:
    """The canonical caption plus ``k`` paraphrases per combination, embedded once (``EmbeddingBank``).

    Caption ``j`` of combination ``c`` (index into ``combos``; ``j = 0`` is canonical) is bank row
    ``c * (k + 1) + j``.
    """

    def __init__(self, encoder: TextEncoder, combos: tuple[Attributes, ...], k: int, seed: int) -> None:
        captions: list[str] = []
        for i, a in enumerate(combos):
            options = [p for p in paraphrases(a) if p != canonical_caption(a)]
            g = make_generator(derive_seed(seed, 7, i))
            pick = torch.randperm(len(options), generator=g)[:k].tolist()
            captions += [canonical_caption(a)] + [options[j] for j in pick]
        self.k = k
        self.bank = EmbeddingBank(encoder, captions)
        self.captions = [captions[c * (k + 1) : (c + 1) * (k + 1)] for c in range(len(combos))]

    def row(self, combo: int, j: int) -> dict[str, Tensor]:
        return self.bank.row(combo * (self.k + 1) + j)


class ShapesClipDataset:
    """Shapes clips with bank captions; item ``i`` is a pure function of ``(seed, i)``.

    Returns ``{"clip": (3, F, H, W) in [-1, 1], "context": (L, D), "context_mask": (L,), "pooled": (D,)}``.
    """

    def __init__(self, cfg: VideoDataConfig, bank: CaptionBank) -> None:
        self.cfg, self.bank = cfg, bank
        self.world = make_world(cfg)
        self.combo_index = {a: i for i, a in enumerate(self.world.combos)}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        attrs, params, _ = self.world.describe([index])
        clip = to_unit_range(render_clips(attrs, params, self.cfg.size, self.cfg.frames))[0]
        c = self.combo_index[attrs[0]]
        u = rand((2,), make_generator(derive_seed(self.cfg.seed, 11, index)), dtype=torch.float64).tolist()
        k = self.bank.k
        j = 0 if u[0] < self.cfg.canonical_prob else 1 + min(int(u[1] * k), k - 1)
        return {"clip": clip, **self.bank.row(c, j)}


class LatentObjective:
    """Encode ``batch["clip"]`` with the frozen autoencoder, then the core diffusion objective on latents."""

    def __init__(self, ae: FrameAutoencoder, inner: DiffusionObjective) -> None:
        self.ae, self.inner = ae, inner
        self.observes = inner.observes

    def __call__(self, net: Any, batch: dict[str, Tensor], generators: Any) -> Any:
        with torch.no_grad():
            x = self.ae.encode(batch["clip"])
        return self.inner(net, {**batch, "x": x}, generators)

    def observe(self, t: Tensor, mse: Tensor) -> None:
        self.inner.observe(t, mse)

    def state_dict(self) -> dict[str, Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.inner.load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# The modality
# ----------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[video] {msg}", flush=True)


class VideoModality(Modality):
    """Text-to-clip latent diffusion on the Shapes world (see the module docstring)."""

    name = "video"
    config_cls = VideoConfig

    def __init__(self) -> None:
        self._model: LatentVideoModel | None = None
        self._encoder: TextEncoder | None = None

    def text_encoder(self, cfg: VideoConfig) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder.load(cfg.data.text_encoder, max_length=cfg.data.max_text_length)
            if self._encoder.dim != cfg.model.text_dim:
                raise ValueError(
                    f"model.text_dim={cfg.model.text_dim} but the text encoder gives {self._encoder.dim}"
                )
        return self._encoder

    def build_model(self, cfg: VideoConfig) -> LatentVideoModel:
        """The model, with its autoencoder trained first (stage 1, deterministic from its seed), or
        loaded from ``autoencoder.init``."""
        model = LatentVideoModel(cfg)
        if cfg.autoencoder.init:
            load_autoencoder(model.ae, cfg.autoencoder.init)
            _log(f"autoencoder: loaded from {cfg.autoencoder.init} (stage 1 skipped)")
            self._model = model
            return model
        world = make_world(cfg.data)

        def frames(n: int, g: torch.Generator) -> Tensor:
            # One random frame from each of n clips: frames of one clip show one object, and
            # batches of whole clips (4 objects per 64 frames) left colours wrong after 1500 steps
            # where this reaches a 100% checker pass in 600.
            clips = world.sample(n, g).clips  # (n, 3, F, H, W)
            t = torch.randint(0, clips.shape[2], (n,), generator=g)
            return clips[torch.arange(n), :, t]

        from tqdm.auto import tqdm

        start = time.perf_counter()
        with tqdm(total=cfg.autoencoder.steps, desc="train video autoencoder", unit="step") as bar:

            def progress(step: int, loss: float) -> None:
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}")

            stats = train_autoencoder(model.ae, cfg.autoencoder, frames, progress)
        real = make_world(cfg.data, "all").sample(128, 0)
        with torch.no_grad():
            rec = model.ae.decode(model.ae.encode(real.clips))
        stats |= {f"checker_{k}": v for k, v in attribute_accuracy(check_clips(rec), real.attributes).items()}
        _log(f"autoencoder: {cfg.autoencoder.steps} steps in {time.perf_counter() - start:.0f} s, {stats}")
        self._model = model
        return model

    def build_model_to_resume(self, cfg: VideoConfig) -> LatentVideoModel:
        """The model without stage 1: the checkpoint being resumed holds the trained autoencoder."""
        self._model = LatentVideoModel(cfg)
        _log("resuming: the autoencoder comes from the checkpoint (not retrained)")
        return self._model

    def build_dataset(self, cfg: VideoConfig) -> ShapesClipDataset:
        start = time.perf_counter()
        world = make_world(cfg.data)
        bank = CaptionBank(self.text_encoder(cfg), world.combos, cfg.data.captions_per_combo, cfg.data.seed)
        _log(f"caption bank: {sum(map(len, bank.captions))} captions in {time.perf_counter() - start:.0f} s")
        return ShapesClipDataset(cfg.data, bank)

    def build_objective(self, cfg: VideoConfig, model: nn.Module) -> Objective:
        assert isinstance(model, LatentVideoModel)
        L, D = cfg.data.max_text_length, cfg.model.text_dim
        null = {k: v[0] for k, v in null_condition(1, L, D).items()}
        inner = DiffusionObjective.from_config(
            cfg.diffusion, cond_keys=("context", "context_mask", "pooled"), null_cond=null
        )
        return LatentObjective(model.ae, inner)

    def evaluate(
        self, model: nn.Module, cfg: Any, *, out_dir: Path | None = None, dist_info: DistInfo | None = None
    ) -> dict[str, Any] | None:
        """Attribute-checker accuracy of EMA samples on seen and held-out prompts (rank 0 only)."""
        if cfg.sample.num_eval_clips == 0 or (dist_info is not None and not dist_info.is_main):
            return None
        from video.evaluate import checker_report
        from video.pipeline import VideoPipeline

        assert isinstance(model, LatentVideoModel)
        pipe = VideoPipeline(model, cfg, self.text_encoder(cfg))
        return checker_report(pipe, cfg.sample.num_eval_clips, seed=cfg.sample.seed, out_dir=out_dir)
