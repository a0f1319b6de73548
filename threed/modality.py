"""The ``points`` modality: Point-E-style text-to-point-cloud diffusion on the shape world.

    extradim train points --config configs/threed/points_base.yaml       # text -> 512 points
    extradim train points --config configs/threed/points_upsampler.yaml  # 512 -> + chunks of 512

Two stages, as in Point-E (Nichol et al. 2022), both on the shared DiT as a token-set model (one
token per point, xyz + rgb, no position embedding, so the model is permutation-equivariant):

- ``base``: text-conditioned (cross-attention to the text encoder's token states, the pooled text
  vector added to the timestep embedding), classifier-free guidance by dropping the text.
- ``upsampler``: generates the extra points of the full cloud conditioned on the coarse cloud,
  which enters as cross-attention context through a small point-wise MLP. Training jitters the
  coarse cloud slightly, so the upsampler tolerates the base model's imperfect output. It learns
  sets of 512 extra points; the pipeline draws as many independent chunks as the requested cloud
  needs (given the coarse cloud, surface samples are independent of each other).

Captions come from an embedding bank of every caption the world can produce (6048), computed once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from shared_core.nn.dit import DiT, DiTConfig
from shared_core.random import make_generator, rand, randn
from shared_core.samplers import SAMPLERS
from shared_core.text import DEFAULT_ENCODER, EmbeddingBank, TextEncoder
from shared_core.train.distributed import DistInfo, derive_seed
from shared_core.train.loop import DiffusionObjective, Objective, RunConfig
from shared_core.train.modality import Modality
from threed.box import BoxModel, box_of
from threed.world import COLOURS, SHAPES, ShapeWorld, paraphrases

__all__ = [
    "PointsConfig",
    "PointsDataConfig",
    "PointsDataset",
    "PointsModality",
    "PointsModel",
    "PointsModelConfig",
    "PointsSampleConfig",
    "add_box_condition",
    "add_fourier_features",
    "add_self_conditioning",
    "all_captions",
    "build_points_model",
    "rotate_z",
    "text_null_condition",
]


@dataclass(frozen=True)
class PointsDataConfig:
    num_points: int = 512  # points the stage generates (base: the coarse cloud; upsampler: the extra ones)
    coarse_points: int = 512  # upsampler: points of the conditioning cloud
    coarse_jitter: float = 0.01  # upsampler: std of the Gaussian jitter on the training coarse cloud
    # Base: learn clouds in each item's own azimuth frame (the world's yaw about Z undone, xyz ->
    # Rz(-yaw) xyz), so a mug's handle or a table's long side always points the same way; the
    # pipeline then turns every generated cloud by a yaw uniform in [0, 2 pi) drawn from (seed, i)
    # and re-centres its bounding box in XY. The yaw is the world's one exact symmetry, so this
    # factors it out of what the network must learn instead of changing the distribution.
    canonical_yaw: bool = False
    # Box stage: the quantile q of the box it learns (per-axis q and 1 - q quantiles of the xyz;
    # ``threed.box``); the pipeline fits the base's clouds to the drawn box with the same q.
    box_quantile: float = 0.03
    # Base: with probability ``shape_noise_prob`` an item's network input is bent by a smooth random
    # deformation (``smooth_deformation``) of RMS size uniform in [0, ``shape_noise``] while its
    # target stays the clean cloud (``diffusion_loss``'s ``perturbation``): the network also learns
    # to undo low-frequency shape errors like its own samples' (model card, session 20). 0: off.
    shape_noise: float = 0.0
    shape_noise_prob: float = 0.5
    seed: int = 0
    text_encoder: str = DEFAULT_ENCODER
    max_text_length: int = 16

    def __post_init__(self) -> None:
        if self.num_points < 1 or self.coarse_points < 1 or self.coarse_jitter < 0:
            raise ValueError("num_points and coarse_points must be >= 1 and coarse_jitter >= 0")
        if not 0 <= self.box_quantile < 0.5:
            raise ValueError(f"box_quantile must be in [0, 0.5), got {self.box_quantile}")
        if self.shape_noise < 0 or not 0 <= self.shape_noise_prob <= 1:
            raise ValueError("shape_noise must be >= 0 and shape_noise_prob in [0, 1]")


def smooth_deformation(
    xyz: Tensor,
    rms: float,
    generator: torch.Generator,
    waves: int = 8,
    frequencies: tuple[float, float] = (3.0, 8.0),
) -> Tensor:
    """``(N, 3)``: a smooth random displacement of the points ``xyz`` (N, 3) with RMS length ``rms``:
    a sum of ``waves`` plane waves sin(f u.x + phi) c, directions u uniform on the sphere, f uniform in
    ``frequencies`` (radians per unit; 3-8 is a wavelength of 0.8-2.1 on a cloud of radius 1: bends
    within the shape more than changes of its overall size, and much coarser than its point
    spacing), phi uniform, c ~ N(0, I)."""
    u = randn((waves, 3), generator)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    lo, hi = frequencies
    f = lo + (hi - lo) * rand((waves,), generator)
    phase = 2 * math.pi * rand((waves,), generator)
    c = randn((waves, 3), generator)
    d = torch.sin(xyz.double() @ (u * f[:, None]).T.double() + phase.double()) @ c.double()  # (N, 3)
    scale = rms / d.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12)
    return (d * scale).to(xyz.dtype)


def rotate_z(points: Tensor, yaw: Tensor | float) -> Tensor:
    """``points (..., N, C)`` with xyz turned by ``yaw`` (radians; a float or a tensor of the batch
    shape ``...``) about Z: x -> Rz(yaw) x, the world's own turn."""
    yaw = torch.as_tensor(yaw, dtype=points.dtype, device=points.device)
    c, s = torch.cos(yaw)[..., None], torch.sin(yaw)[..., None]
    x, y = points[..., 0], points[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y, *points[..., 2:].unbind(-1)], dim=-1)


@dataclass(frozen=True)
class PointsModelConfig:
    # "box": the cloud's extents from the text (``threed.box.BoxModel``, an MLP: depth blocks of
    # width hidden_size; the attention settings are unused).
    stage: Literal["base", "upsampler", "box"] = "base"
    hidden_size: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384  # width of the text encoder's token states (base only)
    # F > 0: each point token (and each coarse point) also carries sin/cos of (pi / 2) 2^k x for
    # k < F per coordinate (NeRF's positional encoding; the lowest frequency's period, 4, spans the
    # data's [-1, 1] without aliasing), so that attention can tell near from far.
    fourier_frequencies: int = 0
    # k > 0: each noisy point also sees its k nearest neighbours (offsets and colours through a small
    # shared MLP, max-pooled: a PointNet++-style local feature) as extra input channels; the
    # upsampler's neighbours are coarse points, the base's the other noisy points of its own cloud.
    local_k: int = 0
    # Base: also condition on the cloud's box (``threed.box``: per-axis quantiles, the box stage's
    # output), appended to the pooled text vector: ``forward(..., box=)``. Training gives each
    # item's own box (never dropped with the text), the pipeline the box stage's draw.
    box_condition: bool = False

    def __post_init__(self) -> None:
        if self.stage not in ("base", "upsampler", "box"):
            raise ValueError(f"stage must be 'base', 'upsampler' or 'box', got {self.stage!r}")
        if not 0 <= self.fourier_frequencies <= 16:
            raise ValueError(f"fourier_frequencies must be in 0..16, got {self.fourier_frequencies}")
        if self.local_k < 0:
            raise ValueError(f"local_k must be >= 0, got {self.local_k}")
        if self.box_condition and self.stage != "base":
            raise ValueError("box_condition is for the base stage")


@dataclass(frozen=True)
class PointsSampleConfig:
    sampler: str = "dpmpp_2m"
    steps: int = 25
    guidance: float = 3.0  # CFG scale s = 1 + w (base only; the upsampler is unguided)
    guidance_rescale: float = 0.0  # phi of guidance rescale (Lin et al.): 0 = plain CFG
    spacing: Literal["trailing", "leading", "linspace", "karras"] = "karras"
    # Karras spacing's top level (VE sigma); None = the schedule's own (20291 for the discrete
    # cosine, where most levels are pure noise for clouds of radius ~1; EDM uses 80).
    sigma_max: float | None = None
    # Upsampler, k > 0: each extra point is then moved onto the surface fitted to its k nearest
    # coarse points (one moving-least-squares projection step, Alexa et al. 2003); 0 = off.
    # project_fit "plane": their PCA plane; "quadric": a height field h = quadratic(u, v) over that
    # plane (least squares), which follows curvature (a plane through 8 points of a sphere lies
    # inside it) and needs k >= 6.
    project_k: int = 0
    project_fit: Literal["plane", "quadric"] = "plane"
    # Upsampler: where sampling starts. "noise": pure noise at sigma_max, as trained; "coarse":
    # each chunk of extra points starts as the coarse points (in a random order) plus noise of
    # sigma_max (SDEdit, Meng et al. 2022): the coarse cloud is itself a sample of the same surface,
    # so at a small sigma_max (about the coarse spacing, ~0.1-0.2) this is already close to the
    # noisy fine cloud's distribution, and the upsampler only has to settle points locally.
    start: Literal["noise", "coarse"] = "noise"
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; valid: {', '.join(sorted(SAMPLERS))}")
        if self.steps < 1 or self.guidance < 0 or self.batch_size < 1:
            raise ValueError("need steps >= 1, guidance >= 0 and batch_size >= 1")
        if not 0 <= self.guidance_rescale <= 1:
            raise ValueError(f"guidance_rescale must be in [0, 1], got {self.guidance_rescale}")
        if self.project_k < 0 or 0 < self.project_k < 3:
            raise ValueError(
                f"project_k must be 0 (off) or >= 3 (a plane needs 3 points), got {self.project_k}"
            )
        if self.project_fit == "quadric" and 0 < self.project_k < 6:
            raise ValueError(
                f"project_fit 'quadric' needs project_k >= 6 (a quadric has 6 coefficients), "
                f"got {self.project_k}"
            )
        if self.sigma_max is not None and (self.sigma_max <= 0 or self.spacing != "karras"):
            raise ValueError(f"sigma_max must be > 0 and needs spacing 'karras', got {self.sigma_max}")


@dataclass(frozen=True)
class PointsConfig(RunConfig):
    data: PointsDataConfig = field(default_factory=PointsDataConfig)
    model: PointsModelConfig = field(default_factory=PointsModelConfig)
    sample: PointsSampleConfig = field(default_factory=PointsSampleConfig)

    def __post_init__(self) -> None:
        if self.data.shape_noise > 0 and self.model.stage != "base":
            raise ValueError("data.shape_noise is for the base stage")


def fourier_features(xyz: Tensor, frequencies: int) -> Tensor:
    """``(..., 3) -> (..., 6 F)``: sin and cos of ``(pi / 2) 2^k xyz`` for ``k < F``."""
    freqs = math.pi / 2 * 2.0 ** torch.arange(frequencies, dtype=xyz.dtype, device=xyz.device)
    angles = (xyz[..., None] * freqs).flatten(-2)  # (..., 3F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def nearest_points(points: Tensor, ref: Tensor, k: int) -> Tensor:
    """``(B, N, min(k, M), C)``: for each point of ``points (B, N, >=3)`` its ``k`` nearest points of
    ``ref (B, M, C)`` by xyz distance, all channels, nearest first."""
    k = min(k, ref.shape[1])
    idx = torch.cdist(points[..., :3], ref[..., :3]).topk(k, dim=-1, largest=False).indices  # (B, N, k)
    return ref[torch.arange(len(ref), device=ref.device)[:, None, None], idx]


class PointsModel(nn.Module):
    """A token-set DiT over points ``(B, N, 6)``; see the module docstring for the two stages.

    ``forward(x, t, context=, context_mask=, pooled=)`` (base) or ``forward(x, t, coarse=)`` with
    ``coarse (B, M, 6)`` (upsampler).
    """

    def __init__(self, cfg: PointsConfig) -> None:
        super().__init__()
        m = cfg.model
        self.stage = m.stage
        base = m.stage == "base"
        self.fourier = m.fourier_frequencies
        features = 6 + 6 * self.fourier
        self.local_k, local_dim = m.local_k, m.hidden_size // 2
        self.local_mlp = (
            nn.Sequential(nn.Linear(6, local_dim), nn.SiLU(), nn.Linear(local_dim, local_dim))
            if self.local_k
            else None
        )
        self.coarse_embed = (
            None
            if base
            else nn.Sequential(
                nn.Linear(features, m.hidden_size), nn.SiLU(), nn.Linear(m.hidden_size, m.hidden_size)
            )
        )
        # diffusion.self_condition > 0: each token also carries the model's own previous x0 estimate
        # of its point (6 channels, last; zeros when there is none), ``forward(..., self_cond=)``.
        self.self_condition = cfg.diffusion.self_condition > 0
        self.box_condition = m.box_condition
        self.dit = DiT(
            DiTConfig(
                in_channels=features + (local_dim if self.local_k else 0) + (6 if self.self_condition else 0),
                target_channels=6,
                patch_size=None,
                hidden_size=m.hidden_size,
                depth=m.depth,
                num_heads=m.num_heads,
                mlp_ratio=m.mlp_ratio,
                context_dim=m.text_dim if base else m.hidden_size,
                pooled_dim=(m.text_dim + (6 if m.box_condition else 0)) if base else 0,
            )
        )

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        pooled: Tensor | None = None,
        coarse: Tensor | None = None,
        self_cond: Tensor | None = None,
        box: Tensor | None = None,
    ) -> Tensor:
        if self.box_condition:
            if box is None or pooled is None:
                raise ValueError("this base is conditioned on the cloud's box: give pooled= and box=")
            pooled = torch.cat([pooled, box.to(pooled.dtype)], dim=-1)
        elif box is not None:
            raise ValueError("this model was not trained with a box condition (box=)")
        if self.coarse_embed is None:  # base
            tokens = self._tokens(x, x, self_cond)
            return self.dit(tokens, t, context=context, context_mask=context_mask, pooled=pooled)
        if coarse is None:
            raise ValueError("the upsampler needs the coarse cloud (coarse=)")
        tokens = self._tokens(x, coarse, self_cond)
        return self.dit(tokens, t, context=self.coarse_embed(self._with_fourier(coarse)))

    def _tokens(self, x: Tensor, neighbours: Tensor, self_cond: Tensor | None) -> Tensor:
        """The DiT's input tokens: points, their Fourier features, local features, x0 estimate."""
        parts = [self._with_fourier(x)]
        if self.local_mlp is not None:
            parts.append(self._local_features(x, neighbours))
        if self.self_condition:
            parts.append(torch.zeros_like(x) if self_cond is None else self_cond.to(x.dtype))
        elif self_cond is not None:
            raise ValueError("this model was not trained with self-conditioning (self_cond=)")
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    def _with_fourier(self, points: Tensor) -> Tensor:
        """``points`` with the Fourier features of their xyz appended (unchanged when F = 0)."""
        if not self.fourier:
            return points
        return torch.cat([points, fourier_features(points[..., :3], self.fourier)], dim=-1)

    def _local_features(self, x: Tensor, coarse: Tensor) -> Tensor:
        """(B, N, local_dim): max over each point's k nearest coarse points of MLP(offset, colour)."""
        assert self.local_mlp is not None
        nb = nearest_points(x, coarse, self.local_k)  # (B, N, k, 6)
        rel = torch.cat([nb[..., :3] - x[..., None, :3], nb[..., 3:]], dim=-1)
        return self.local_mlp(rel).amax(dim=2)


def _widened(
    model: PointsModel, cfg: PointsConfig, widen: Callable[[str], bool], width: int, at: int | None = None
) -> PointsModel:
    """A ``PointsModel(cfg)`` holding ``model``'s weights, with ``width`` zero input columns inserted
    at column ``at`` (None: appended) into each weight matrix whose name ``widen`` accepts, so it
    computes the same function until they are trained (as ControlNet and inpainting models widen a
    pretrained input)."""
    state = model.state_dict()
    for key in [k for k in state if widen(k)]:
        w = state[key]
        cut = w.shape[1] if at is None else at
        state[key] = torch.cat([w[:, :cut], w.new_zeros(w.shape[0], width), w[:, cut:]], dim=1)
    new = PointsModel(cfg)
    new.load_state_dict(state)
    return new


def add_self_conditioning(
    model: PointsModel, cfg: PointsConfig, probability: float = 0.5
) -> tuple[PointsModel, PointsConfig]:
    """A copy of a points stage trained without self-conditioning that takes ``self_cond=`` and
    starts as the same function: the six new input columns of the token embedding are zero. A start
    for ``train.init_from`` with ``diffusion.self_condition=probability``."""
    if model.self_condition:
        raise ValueError("the model already takes self-conditioning")
    new_cfg = dataclasses.replace(
        cfg, diffusion=dataclasses.replace(cfg.diffusion, self_condition=probability)
    )
    return _widened(model, new_cfg, lambda k: k == "dit.x_embedder.weight", 6), new_cfg


def add_fourier_features(
    model: PointsModel, cfg: PointsConfig, frequencies: int
) -> tuple[PointsModel, PointsConfig]:
    """A copy of a points stage trained without Fourier features (``model.fourier_frequencies: 0``)
    whose tokens (and the upsampler's coarse points) also carry ``frequencies`` octaves of them, and
    which starts as the same function: the new input columns, right after the six point channels,
    are zero. A start for ``train.init_from`` with ``model.fourier_frequencies=frequencies``."""
    if model.fourier or frequencies < 1:
        raise ValueError("need a model without Fourier features and frequencies >= 1")
    new_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fourier_frequencies=frequencies))
    inputs = ("dit.x_embedder.weight", "coarse_embed.0.weight")
    return _widened(model, new_cfg, lambda k: k in inputs, 6 * frequencies, at=6), new_cfg


def build_points_model(cfg: PointsConfig) -> nn.Module:
    """The network of ``cfg.model.stage``: ``PointsModel`` (base, upsampler) or ``BoxModel`` (box)."""
    return BoxModel(cfg) if cfg.model.stage == "box" else PointsModel(cfg)


def add_box_condition(model: PointsModel, cfg: PointsConfig) -> tuple[PointsModel, PointsConfig]:
    """A copy of a base trained without a box condition that takes ``box=`` and starts as the same
    function (the six new input columns of the pooled embedding are zero); a start for
    ``train.init_from`` with ``model.box_condition: true``."""
    if model.box_condition or model.stage != "base":
        raise ValueError("need a base stage without a box condition")
    new_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, box_condition=True))
    return _widened(model, new_cfg, lambda k: k.endswith("pooled_embedder.mlp.0.weight"), 6), new_cfg


def text_null_condition(batch: int, length: int, dim: int) -> dict[str, Tensor]:
    """Classifier-free guidance's unconditional input: no text tokens, a zero pooled vector."""
    return {
        "context": torch.zeros(batch, length, dim),
        "context_mask": torch.zeros(batch, length, dtype=torch.bool),
        "pooled": torch.zeros(batch, dim),
    }


def all_captions() -> list[str]:
    """Every caption of the shape world (all colours x shapes x templates x synonyms)."""
    return sorted({p for c in COLOURS for s in SHAPES for p in paraphrases(c, s)})


class PointsDataset:
    """Item ``i`` is a pure function of ``(seed, i)``.

    Base: ``{"x": (N, 6), "context", "context_mask", "pooled"}``; upsampler: ``{"x": (N, 6) the
    extra points, "coarse": (M, 6) the jittered conditioning cloud}`` (both i.i.d. samples of the
    same surface); box: ``{"x": (6,) the box of the base's item (``threed.box.box_of``), "pooled"}``.
    """

    def __init__(self, cfg: PointsConfig, bank: EmbeddingBank | None) -> None:
        d = cfg.data
        self.cfg, self.bank, self.base = cfg, bank, cfg.model.stage != "upsampler"
        total = d.num_points if self.base else d.num_points + d.coarse_points
        self.world = ShapeWorld(num_points=total, seed=d.seed)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        batch = self.world.sample_ids([index])
        points = batch.points[0]
        if self.base:
            assert self.bank is not None
            if self.cfg.data.canonical_yaw:
                points = rotate_z(points, -batch.params[0].yaw)
            text = self.bank.row(self.bank.index[batch.captions[0]])
            if self.cfg.model.stage == "box":
                return {"x": box_of(points[None], self.cfg.data.box_quantile)[0], "pooled": text["pooled"]}
            item = {"x": points, **text}
            if self.cfg.model.box_condition:
                item["box"] = box_of(points[None], self.cfg.data.box_quantile)[0]
            if self.cfg.data.shape_noise > 0:
                item["perturbation"] = self._perturbation(points, index)
            return item
        m = self.cfg.data.coarse_points
        jitter = randn((m, 3), make_generator(derive_seed(self.cfg.data.seed, 13, index)))
        coarse = points[:m].clone()
        coarse[:, :3] += self.cfg.data.coarse_jitter * jitter
        return {"x": points[m:], "coarse": coarse}

    def _perturbation(self, points: Tensor, index: int) -> Tensor:
        """(N, 6): item ``index``'s input perturbation (``PointsDataConfig.shape_noise``), zero on colour."""
        d = self.cfg.data
        g = make_generator(derive_seed(d.seed, 17, index))
        out = torch.zeros_like(points)
        u = rand((2,), g, dtype=torch.float64)
        if u[0] < d.shape_noise_prob:
            out[:, :3] = smooth_deformation(points[:, :3], float(u[1]) * d.shape_noise, g)
        return out


def _log(msg: str) -> None:
    print(f"[points] {msg}", flush=True)


class PointsModality(Modality):
    """Text-to-point-cloud diffusion (base, upsampler or box stage, chosen by ``model.stage``)."""

    name = "points"
    config_cls = PointsConfig

    def __init__(self) -> None:
        self._encoder: TextEncoder | None = None

    def text_encoder(self, cfg: PointsConfig) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder.load(cfg.data.text_encoder, max_length=cfg.data.max_text_length)
            if self._encoder.dim != cfg.model.text_dim:
                raise ValueError(
                    f"model.text_dim={cfg.model.text_dim} but the text encoder gives {self._encoder.dim}"
                )
        return self._encoder

    def build_model(self, cfg: PointsConfig) -> nn.Module:
        return build_points_model(cfg)

    def build_dataset(self, cfg: PointsConfig) -> PointsDataset:
        if cfg.model.stage == "upsampler":
            return PointsDataset(cfg, None)
        start = time.perf_counter()
        bank = EmbeddingBank(self.text_encoder(cfg), all_captions())
        _log(f"caption bank: {len(bank)} captions in {time.perf_counter() - start:.0f} s")
        return PointsDataset(cfg, bank)

    def build_objective(self, cfg: PointsConfig, model: nn.Module) -> Objective:
        if cfg.model.stage == "upsampler":
            return DiffusionObjective.from_config(
                cfg.diffusion, cond_keys=("coarse",), self_conditioning=True
            )
        if cfg.model.stage == "box":
            return DiffusionObjective.from_config(
                cfg.diffusion, cond_keys=("pooled",), null_cond={"pooled": torch.zeros(cfg.model.text_dim)}
            )
        null = {
            k: v[0] for k, v in text_null_condition(1, cfg.data.max_text_length, cfg.model.text_dim).items()
        }
        return DiffusionObjective.from_config(
            cfg.diffusion,
            cond_keys=("context", "context_mask", "pooled", *(("box",) if cfg.model.box_condition else ())),
            null_cond=null,
            self_conditioning=True,
        )

    def evaluate(
        self, model: nn.Module, cfg: Any, *, out_dir: Path | None = None, dist_info: DistInfo | None = None
    ) -> dict[str, Any] | None:
        return None  # stage-wise evaluation needs both stages: `extradim eval points`
