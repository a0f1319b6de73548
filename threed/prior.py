"""The ``views`` modality: a text- and camera-conditioned image diffusion prior for score distillation.

    extradim train views --config configs/threed/views.yaml

DreamFusion distils a text-to-image model into a radiance field. No such model can be downloaded
here, so this one is trained on renders of the shape world (``threed.views``): each training item
is one object seen from one camera (azimuth relative to the object's own frame, elevation in a
range), Lambertian-shaded under a random light, on a black background (or, with ``data.background:
random``, on a solid colour drawn per view).

The model is the shared DiT on image patches (32x32 RGB, 4x4 patches: 64 tokens), cross-attending
to the text encoder's token states; the pooled text vector and a learned embedding of the camera
(cos/sin of ``k`` times the azimuth for ``k = 1..model.camera_harmonics``, and of the elevation)
drive adaLN-Zero, and with ``model.camera_token`` the camera embedding is also one more
cross-attention token, which each patch weighs on its own. Text is dropped for classifier-free
guidance; the camera never is, so the unconditional branch is view-aware too (as in Zero-1-to-3).

A first prior (adaLN camera only, harmonics 1, shapes drawn uniformly) learned to ignore the camera
(``benchmarks/probe_prior_views.py``) and score distillation turned every shape into a surface of
revolution; the shipped recipe adds the harmonics, the camera token and ``data.classes`` drawing the
four yaw-dependent shapes (cube, mug, dumbbell, table) twice as often.

The renders are made once when training starts (objects x views_per_object, a few minutes on one
core) and kept as uint8; item ``i`` is view ``i % views_per_object`` of object ``i // views``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from shared_core.nn.dit import DiT, DiTConfig
from shared_core.samplers import SAMPLERS
from shared_core.text import DEFAULT_ENCODER, EmbeddingBank, TextEncoder
from shared_core.train.distributed import DistInfo
from shared_core.train.loop import DiffusionObjective, Objective, RunConfig
from shared_core.train.modality import Modality
from threed.modality import all_captions, text_null_condition
from threed.views import Camera, render_mesh, view_embedding
from threed.world import COLOURS, SHAPES, ShapeWorld, _item_rng, ground_truth_mesh

__all__ = [
    "DEFAULT_VIEWS",
    "ShapeWorldPrior",
    "ViewPriorModel",
    "ViewsConfig",
    "ViewsDataConfig",
    "ViewsDataset",
    "ViewsModality",
    "ViewsModelConfig",
    "ViewsSampleConfig",
    "random_light",
    "upscale_prior",
]


@dataclass(frozen=True)
class ViewsDataConfig:
    size: int = 32
    objects: int = 1500  # distinct objects rendered
    views_per_object: int = 8
    elevation: tuple[float, float] = (-10.0, 80.0)  # degrees, drawn uniformly
    distance: float = 3.2
    fov: float = 45.0
    ambient: float = 0.3
    supersample: int = 2
    seed: int = 0
    text_encoder: str = DEFAULT_ENCODER
    max_text_length: int = 16
    # shapes drawn uniformly from this list (None: all); repeat a name to draw it more often, e.g. the
    # shapes whose look depends on the azimuth, from which alone the prior learns the camera
    classes: tuple[str, ...] | None = None
    # "black", or "random": each view composited over a solid colour uniform in RGB, so that dark
    # surface and empty space differ (score distillation can then ask for opaque, thin parts)
    background: str = "black"

    def __post_init__(self) -> None:
        object.__setattr__(self, "elevation", tuple(float(e) for e in self.elevation))
        if self.background not in ("black", "random"):
            raise ValueError(f"unknown background {self.background!r}; valid: black, random")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
            bad = [c for c in self.classes if c not in SHAPES]
            if bad or not self.classes:
                raise ValueError(f"unknown or no classes: {bad}; valid: {', '.join(SHAPES)}")
        if self.size < 8 or self.size % 4 or self.objects < 1 or self.views_per_object < 1:
            raise ValueError("need size >= 8 divisible by 4, objects >= 1 and views_per_object >= 1")
        lo, hi = self.elevation
        if not -90 <= lo <= hi <= 90 or not 0 <= self.ambient <= 1 or self.supersample < 1:
            raise ValueError(
                "need -90 <= elevation[0] <= elevation[1] <= 90, ambient in [0, 1], supersample >= 1"
            )


@dataclass(frozen=True)
class ViewsModelConfig:
    patch_size: int = 4
    hidden_size: int = 192
    depth: int = 6
    num_heads: int = 6
    mlp_ratio: float = 4.0
    text_dim: int = 384
    camera_dim: int = 64  # width of the learned camera embedding joined to the pooled text vector
    camera_harmonics: int = 1  # azimuth features cos/sin(k az), k = 1..camera_harmonics
    camera_token: bool = False  # also hand the camera embedding to cross-attention as one more token

    def __post_init__(self) -> None:
        if self.camera_harmonics < 1 or self.camera_dim < 1:
            raise ValueError("need camera_harmonics >= 1 and camera_dim >= 1")


@dataclass(frozen=True)
class ViewsSampleConfig:
    sampler: str = "dpmpp_2m"
    steps: int = 20
    guidance: float = 4.0
    spacing: str = "karras"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: {', '.join(sorted(SAMPLERS))}")


@dataclass(frozen=True)
class ViewsConfig(RunConfig):
    data: ViewsDataConfig = field(default_factory=ViewsDataConfig)
    model: ViewsModelConfig = field(default_factory=ViewsModelConfig)
    sample: ViewsSampleConfig = field(default_factory=ViewsSampleConfig)


class ViewPriorModel(nn.Module):
    """``forward(x (B, 3, H, W), t, context=, context_mask=, pooled=, camera=(B, 2) [az, el] degrees)``."""

    def __init__(self, cfg: ViewsConfig) -> None:
        super().__init__()
        m = cfg.model
        self.harmonics = m.camera_harmonics
        self.camera_embed = nn.Sequential(
            nn.Linear(2 * m.camera_harmonics + 2, m.camera_dim),
            nn.SiLU(),
            nn.Linear(m.camera_dim, m.camera_dim),
        )
        # a token every image patch can attend to with its own weight: camera effects that differ
        # across the image (where a dumbbell's bar lies) need not pass through global adaLN alone
        self.camera_token = nn.Linear(m.camera_dim, m.text_dim) if m.camera_token else None
        self.dit = DiT(
            DiTConfig(
                in_channels=3,
                patch_size=(m.patch_size, m.patch_size),
                hidden_size=m.hidden_size,
                depth=m.depth,
                num_heads=m.num_heads,
                mlp_ratio=m.mlp_ratio,
                context_dim=m.text_dim,
                pooled_dim=m.text_dim + m.camera_dim,
            )
        )

    def forward(
        self, x: Tensor, t: Tensor, *, context: Tensor, context_mask: Tensor, pooled: Tensor, camera: Tensor
    ) -> Tensor:
        cam = self.camera_embed(view_embedding(camera[:, 0], camera[:, 1], self.harmonics).to(x.dtype))
        if self.camera_token is not None:
            context = torch.cat([context, self.camera_token(cam)[:, None].to(context.dtype)], 1)
            context_mask = torch.cat([context_mask, context_mask.new_ones(len(x), 1)], 1)
        return self.dit(x, t, context=context, context_mask=context_mask, pooled=torch.cat([pooled, cam], -1))


def upscale_prior(model: ViewPriorModel, cfg: ViewsConfig, factor: int) -> tuple[ViewPriorModel, ViewsConfig]:
    """The prior at ``factor`` times the resolution, with ``factor`` times larger patches (the same
    token grid, so the same positions and attention), starting as the same function: on an image it
    predicts the old prediction for the image's ``factor``-box-downsample, upsampled by nearest
    neighbour. A start for training at the higher resolution (``train.init_from``)."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    new_cfg = dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, size=cfg.data.size * factor),
        model=dataclasses.replace(cfg.model, patch_size=cfg.model.patch_size * factor),
    )
    new = ViewPriorModel(new_cfg)
    p, c = cfg.model.patch_size, 3
    # token features are (p_row, p_col, channel)-ordered: fine pixel (i, j) reads coarse (i // f, j // f)
    fine = torch.arange(p * factor)
    idx = ((fine[:, None, None] // factor) * p + fine[None, :, None] // factor) * c + torch.arange(c)
    state = model.state_dict()
    state["dit.x_embedder.weight"] = state["dit.x_embedder.weight"][:, idx.reshape(-1)] / factor**2
    state["dit.final_layer.linear.weight"] = state["dit.final_layer.linear.weight"][idx.reshape(-1)]
    state["dit.final_layer.linear.bias"] = state["dit.final_layer.linear.bias"][idx.reshape(-1)]
    new.load_state_dict(state)
    return new, new_cfg


def random_light(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """A light direction near the camera's (DreamFusion samples the light around the camera)."""
    d = camera.position() / camera.distance + 0.6 * rng.standard_normal(3)
    return d / np.linalg.norm(d)


class ViewsDataset:
    """Pre-rendered views: ``{"x": (3, H, W) in [-1, 1], "camera": (2,), context, context_mask, pooled}``.

    Object ``j`` is item ``j`` of ``ShapeWorld(seed)``; its views' cameras and lights come from
    their own seeded generators, so the set is a pure function of the config.
    """

    def __init__(self, cfg: ViewsDataConfig, bank: EmbeddingBank | None, *, progress: bool = True) -> None:
        self.cfg, self.bank = cfg, bank
        world = ShapeWorld(num_points=1, seed=cfg.seed, classes=cfg.classes)
        n, v, s = cfg.objects, cfg.views_per_object, cfg.size
        self.images = torch.empty(n * v, 3, s, s, dtype=torch.uint8)
        self.cameras = torch.empty(n * v, 2)
        self.captions: list[str] = []
        self.labels = torch.empty(n, dtype=torch.long)  # per object: index into SHAPES
        self.colours = torch.empty(n, dtype=torch.long)  # per object: index into COLOURS
        lo, hi = cfg.elevation
        for j in tqdm(range(n), desc="render views", disable=not progress, unit="object"):
            shape, colour, params, caption = world.describe([j])[0]
            mesh = ground_truth_mesh(shape, colour, params)
            self.captions.append(caption)
            self.labels[j] = SHAPES.index(shape)
            self.colours[j] = list(COLOURS).index(colour)
            rng = _item_rng(cfg.seed + 1, j)
            back = _item_rng(cfg.seed + 2, j)  # background colours: their own stream
            for k in range(v):
                # even azimuth coverage per object (stratified), random elevation; relative to the
                # object's own frame, i.e. the world camera turns with the object's yaw
                az_rel = (k + rng.random()) * 360.0 / v
                el = float(lo + (hi - lo) * rng.random())
                colour = tuple(back.random(3).tolist()) if cfg.background == "random" else 0.0
                cam = Camera(az_rel + math.degrees(params.yaw), el, cfg.distance, cfg.fov)
                view = render_mesh(
                    mesh,
                    cam,
                    s,
                    light=random_light(cam, rng),
                    ambient=cfg.ambient,
                    background=colour,
                    supersample=cfg.supersample,
                )
                self.images[j * v + k] = (view.image * 255).round().to(torch.uint8)
                self.cameras[j * v + k] = torch.tensor([az_rel % 360.0, el])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        i = int(index) % len(self)
        item = {"x": self.images[i].float() / 127.5 - 1, "camera": self.cameras[i]}
        if self.bank is not None:
            item.update(self.bank.row(self.bank.index[self.captions[i // self.cfg.views_per_object]]))
        return item


def _log(msg: str) -> None:
    print(f"[views] {msg}", flush=True)


class ViewsModality(Modality):
    """Text + camera -> 32x32 render of a shape-world object (the score-distillation prior)."""

    name = "views"
    config_cls = ViewsConfig

    def __init__(self) -> None:
        self._encoder: TextEncoder | None = None

    def text_encoder(self, cfg: ViewsConfig) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder.load(cfg.data.text_encoder, max_length=cfg.data.max_text_length)
            if self._encoder.dim != cfg.model.text_dim:
                raise ValueError(
                    f"model.text_dim={cfg.model.text_dim} but the text encoder gives {self._encoder.dim}"
                )
        return self._encoder

    def build_model(self, cfg: ViewsConfig) -> ViewPriorModel:
        return ViewPriorModel(cfg)

    def build_dataset(self, cfg: ViewsConfig) -> ViewsDataset:
        start = time.perf_counter()
        bank = EmbeddingBank(self.text_encoder(cfg), all_captions())
        _log(f"caption bank: {len(bank)} captions in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        data = ViewsDataset(cfg.data, bank)
        _log(f"rendered {len(data)} views in {time.perf_counter() - start:.0f} s")
        return data

    def build_objective(self, cfg: ViewsConfig, model: nn.Module) -> Objective:
        null = {
            k: v[0] for k, v in text_null_condition(1, cfg.data.max_text_length, cfg.model.text_dim).items()
        }
        return DiffusionObjective.from_config(
            cfg.diffusion, cond_keys=("context", "context_mask", "pooled", "camera"), null_cond=null
        )

    def evaluate(
        self, model: nn.Module, cfg: Any, *, out_dir: Path | None = None, dist_info: DistInfo | None = None
    ) -> dict[str, Any] | None:
        return None


# ----------------------------------------------------------------------------------------------
# The trained prior behind the interface score distillation speaks
# ----------------------------------------------------------------------------------------------

DEFAULT_VIEWS = Path(__file__).resolve().parent.parent / "checkpoints" / "threed" / "views.safetensors"


class ShapeWorldPrior:
    """The ``views`` model as a score-distillation prior (see ``threed.dream.ImagePrior``).

    ``encode(prompt)`` once, then ``denoiser(cond, cameras, guidance)`` gives a callable
    ``(x (B, 3, H, W) in [-1, 1], sigma (B,)) -> x0`` guided by the text at the given cameras
    ``(B, 2)`` [azimuth, elevation] in degrees.
    """

    def __init__(
        self, model: ViewPriorModel, cfg: ViewsConfig, text: TextEncoder, path: Path | None = None
    ) -> None:
        from shared_core.train.loop import build_schedule

        self.model, self.cfg, self.text, self.path = model.eval().requires_grad_(False), cfg, text, path
        self.schedule = build_schedule(cfg.diffusion)
        self.size, self.distance, self.fov = cfg.data.size, cfg.data.distance, cfg.data.fov
        self.name = f"views:{path.name if path else 'in-memory'}"

    @classmethod
    def load(cls, path: str | Path | None = None, *, text_encoder: str | None = None) -> ShapeWorldPrior:
        from shared_core.errors import ExtradimError
        from shared_core.pretrained import load_pretrained

        model, cfg, p = load_pretrained(path or DEFAULT_VIEWS, ViewsConfig, ViewPriorModel)
        enc = TextEncoder.load(text_encoder or cfg.data.text_encoder, max_length=cfg.data.max_text_length)
        if enc.dim != cfg.model.text_dim:
            raise ExtradimError(f"text encoder width {enc.dim} != the prior's {cfg.model.text_dim}")
        return cls(model, cfg, enc, p)

    def encode(self, prompt: str) -> dict[str, Tensor]:
        emb = self.text.encode([prompt], pad_to=self.cfg.data.max_text_length)
        return {"context": emb.tokens, "context_mask": emb.mask, "pooled": emb.pooled}

    def latents(self, images: Tensor) -> Tensor:
        return images  # a pixel-space prior

    def denoiser(self, cond: dict[str, Tensor], cameras: Tensor, guidance: float) -> Any:
        from shared_core.denoiser import NetworkDenoiser
        from shared_core.guidance import CFGDenoiser

        net = NetworkDenoiser(self.model, self.schedule, self.cfg.diffusion.prediction)
        L, D = self.cfg.data.max_text_length, self.cfg.model.text_dim

        def with_camera(x: Tensor, sigma: Tensor, **c: Tensor) -> Tensor:
            return net(x, sigma, camera=cameras.repeat(x.shape[0] // cameras.shape[0], 1).to(x), **c)

        guided = CFGDenoiser.from_scale(with_camera, guidance, lambda b: text_null_condition(b, L, D))

        def denoise(x: Tensor, sigma: Tensor) -> Tensor:
            b = x.shape[0]
            return guided(x, sigma, **{k: v.expand(b, *v.shape[1:]) for k, v in cond.items()})

        return denoise

    @torch.no_grad()
    def sample(
        self,
        prompt: str,
        cameras: Tensor,
        *,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] of the prompt at ``cameras (B, 2)`` (to inspect the prior)."""
        from shared_core.random import make_generator, randn
        from shared_core.samplers import get_sampler
        from shared_core.train.distributed import derive_seed

        s = self.cfg.sample
        sigmas = self.schedule.sigmas(steps or s.steps, karras=True)
        den = self.denoiser(self.encode(prompt), cameras, s.guidance if guidance is None else guidance)
        shape = (3, self.size, self.size)
        x = torch.stack([randn(shape, make_generator(derive_seed(seed, i))) for i in range(len(cameras))])
        x = x * float(self.schedule.prior_std(sigmas[0]))
        out = get_sampler(s.sampler)(den, x, sigmas, generator=make_generator(derive_seed(seed, 1)))
        return ((out + 1) / 2).clamp(0, 1)
