"""Text-to-point-cloud generation: the base model's coarse cloud, then the upsampler's extra points.

    pipe = PointsPipeline.load()                   # the shipped weights (checkpoints/threed/)
    clouds = pipe.generate(["a red torus"], seed=0, num_points=2048)   # (1, 2048, 6)

Clouds are ``(B, N, 6)``: xyz (normalised: centred, max radius about 1) and rgb in [-1, 1]. Prompt
``i``'s noise comes from its own CPU generators ``(seed, i)``, so a cloud does not depend on the batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from shared_core.denoiser import NetworkDenoiser, SelfConditioning
from shared_core.errors import CheckpointError, ExtradimError
from shared_core.guidance import AutoGuidanceDenoiser, CFGDenoiser
from shared_core.io import file_sha256
from shared_core.pretrained import load_pretrained, save_pretrained
from shared_core.random import make_generator, randn
from shared_core.samplers import SAMPLERS, get_sampler
from shared_core.schedules import Schedule, karras_sigmas
from shared_core.text import TextEncoder
from shared_core.train.distributed import derive_seed
from shared_core.train.loop import build_schedule
from threed.box import BoxModel, fit_to_box
from threed.modality import PointsConfig, PointsModel, nearest_points, rotate_z, text_null_condition

__all__ = [
    "DEFAULT_BASE",
    "DEFAULT_BOX",
    "DEFAULT_UPSAMPLER",
    "MAX_POINTS",
    "PROJECTIONS",
    "PointsPipeline",
    "default_box",
    "project_to_planes",
    "project_to_quadrics",
    "save_points_checkpoint",
    "turn_items",
    "turn_randomly",
]

_CKPT = Path(__file__).resolve().parent.parent / "checkpoints" / "threed"
DEFAULT_BASE = _CKPT / "points_base.safetensors"
DEFAULT_UPSAMPLER = _CKPT / "points_upsampler.safetensors"
DEFAULT_BOX = _CKPT / "points_box.safetensors"
MAX_POINTS = 8192


def save_points_checkpoint(
    model: PointsModel | BoxModel, cfg: PointsConfig, path: str | os.PathLike[str]
) -> Path:
    return save_pretrained(model, cfg, path, kind=f"points-{cfg.model.stage}")


def _sigmas(schedule: Schedule, steps: int, spacing: str, sigma_max: float | None = None) -> Tensor:
    if spacing == "karras":
        if sigma_max is None:
            return schedule.sigmas(steps, karras=True)
        top = min(sigma_max, schedule.sigma_max)
        if top <= schedule.sigma_min:
            raise ExtradimError(
                f"sigma_max {sigma_max} is below the schedule's sigma_min {schedule.sigma_min:.4g}"
            )
        return karras_sigmas(steps, schedule.sigma_min, top)
    if not schedule.discrete:
        return schedule.sigmas(steps)
    return schedule.sigmas(steps, spacing=spacing)  # type: ignore[call-arg]


def _neighbourhoods(xyz: Tensor, surface: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """For each point of ``xyz (B, N, 3)`` its ``k`` nearest points of ``surface (B, M, C)``: their
    centroid ``(B, N, 3)``, their offsets from it ``(B, N, k, 3)`` and their PCA frame ``(B, N, 3, 3)``
    (columns by ascending variance: the normal first, then the two tangents)."""
    nb = nearest_points(xyz, surface[..., :3], k)  # (B, N, k, 3)
    centre = nb.mean(dim=2)
    spread = nb - centre[..., None, :]
    frame = torch.linalg.eigh(spread.transpose(-1, -2) @ spread).eigenvectors
    return centre, spread, frame


def project_to_planes(points: Tensor, surface: Tensor, k: int) -> Tensor:
    """Move each point of ``points (B, N, C)`` onto the plane through its ``k`` nearest points of
    ``surface (B, M, C)`` (their centroid, normal = least-variance PCA axis): one moving-least-squares
    projection step. Only xyz (the first 3 channels) change."""
    xyz = points[..., :3]
    centre, _, frame = _neighbourhoods(xyz, surface, k)
    normal = frame[..., 0]  # (B, N, 3)
    offset = ((xyz - centre) * normal).sum(dim=-1, keepdim=True)
    return torch.cat([xyz - offset * normal, points[..., 3:]], dim=-1)


def _quadratic_terms(u: Tensor, v: Tensor) -> Tensor:
    return torch.stack([u * u, u * v, v * v, u, v, torch.ones_like(u)], dim=-1)


def project_to_quadrics(points: Tensor, surface: Tensor, k: int, ridge: float = 1e-6) -> Tensor:
    """Move each point of ``points (B, N, C)`` onto the quadric height field fitted to its ``k``
    (>= 6) nearest points of ``surface (B, M, C)``: in their PCA frame (normal n, tangents t1, t2,
    origin at their centroid) ``h = a u^2 + b uv + c v^2 + d u + e v + f`` by least squares (a tiny
    ``ridge`` keeps degenerate neighbourhoods solvable); the point keeps its tangent coordinates
    (u, v) and takes the height h(u, v), kept within the neighbours' height range widened by its
    own size on both sides (a badly conditioned fit can be wild). Unlike ``project_to_planes`` it
    follows curvature: points of a sphere land on the sphere, not on the chord plane inside it.
    Only xyz change."""
    if k < 6:
        raise ValueError(f"a quadric fit needs k >= 6 neighbours, got {k}")
    xyz = points[..., :3]
    centre, spread, frame = _neighbourhoods(xyz, surface, k)
    local = spread @ frame  # (B, N, k, 3): height along the normal, then the two tangents
    a = _quadratic_terms(local[..., 1], local[..., 2])  # (B, N, k, 6)
    gram = a.transpose(-1, -2) @ a + ridge * torch.eye(6, dtype=a.dtype, device=a.device)
    coef = torch.linalg.solve(gram, a.transpose(-1, -2) @ local[..., :1])[..., 0]  # (B, N, 6)
    p = ((xyz - centre)[..., None, :] @ frame)[..., 0, :]  # the point in the frame
    height = (_quadratic_terms(p[..., 1], p[..., 2]) * coef).sum(dim=-1)
    # A badly conditioned patch (thin parts, two clusters) can give a wild quadratic (points flung
    # ~3 away were seen): keep the height within the neighbours' height range widened by itself.
    lo, hi = local[..., 0].amin(dim=-1), local[..., 0].amax(dim=-1)
    height = torch.minimum(torch.maximum(height, 2 * lo - hi), 2 * hi - lo)
    moved = centre + (frame @ torch.stack([height, p[..., 1], p[..., 2]], dim=-1)[..., None])[..., 0]
    return torch.cat([moved, points[..., 3:]], dim=-1)


# ``sample.project_fit`` -> the projection ``upsample`` applies with ``sample.project_k`` neighbours.
PROJECTIONS: dict[str, Callable[[Tensor, Tensor, int], Tensor]] = {
    "plane": project_to_planes,
    "quadric": project_to_quadrics,
}


def turn_randomly(clouds: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """Turn cloud ``b`` of ``clouds (B, N, C)`` about Z by a yaw uniform in [0, 2 pi) drawn from
    ``generators[b]``, then re-centre its XY bounding box at 0 (the world's normalisation; a base
    trained with ``data.canonical_yaw`` generates in the item's own azimuth frame, where an
    asymmetric shape's box centre depends on the yaw it was turned from)."""
    yaw = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    out = rotate_z(clouds, (2 * math.pi * yaw).to(clouds.dtype))
    xy = out[..., :2]
    centre = (xy.amax(dim=-2, keepdim=True) + xy.amin(dim=-2, keepdim=True)) / 2
    return torch.cat([xy - centre, out[..., 2:]], dim=-1)


def turn_items(clouds: Tensor, ids: Sequence[int], seed: int) -> Tensor:
    """``turn_randomly`` with cloud ``b``'s yaw drawn from ``(seed, 4, ids[b])``: the turn the
    pipeline gives item ``ids[b]`` of a run with ``seed``."""
    return turn_randomly(clouds, [make_generator(derive_seed(seed, 4, i)) for i in ids])


def _coarse_starts(coarse: Tensor, k: int, m: int, ids: Sequence[int], seed: int) -> Tensor:
    """``(B k, m, C)``: for chunk ``c`` of cloud ``b``, ``m`` points of ``coarse[b]`` in a random
    order (drawn from ``(seed, 5, ids[b], c)``; with replacement when the cloud has fewer than ``m``)."""
    n = coarse.shape[1]
    rows = []
    for b, i in enumerate(ids):
        for c in range(k):
            g = make_generator(derive_seed(seed, 5, i, c))
            pick = torch.randperm(n, generator=g)[:m] if n >= m else torch.randint(n, (m,), generator=g)
            rows.append(coarse[b, pick.to(coarse.device)])
    return torch.stack(rows)


class _WithBox:
    """A denoiser that also passes each row's box (``box=``) to the network, for a box-conditioned
    base. It sits inside guidance, which may stack the batch k times: the boxes are tiled to match
    (guidance's null condition keeps the box; only the text is dropped)."""

    def __init__(self, denoiser: Any, boxes: Tensor) -> None:
        self.denoiser, self.boxes = denoiser, boxes

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor:
        return self.denoiser(x, sigma, box=self.boxes.repeat(x.shape[0] // len(self.boxes), 1), **cond)


def default_box(base: str | os.PathLike[str] | None, base_cfg: PointsConfig) -> Path | Literal[False]:
    """The box stage a base gets when none is named: the shipped one when the base is the shipped
    one (``None`` or its path) or is conditioned on a box; otherwise none (``False``)."""
    shipped = base is None or Path(base).resolve() == DEFAULT_BASE.resolve()
    return DEFAULT_BOX if (shipped or base_cfg.model.box_condition) and DEFAULT_BOX.exists() else False


def _box_model(cfg: PointsConfig) -> BoxModel:
    if cfg.model.stage != "box":
        raise CheckpointError(f"not a box-stage checkpoint (its stage is {cfg.model.stage!r})")
    return BoxModel(cfg)


def points_denoiser(model: PointsModel, schedule: Schedule, prediction: str) -> Any:
    """A fresh denoiser (the contract of ``shared_core.denoiser``) of a points stage; a model trained
    with self-conditioning is wrapped in ``SelfConditioning``, which holds state: one per sampling run."""
    den = NetworkDenoiser(model, schedule, prediction)
    return SelfConditioning(den) if model.self_condition else den


def _draw(
    den: Any,
    schedule: Schedule,
    sigmas: Tensor,
    sampler: str,
    shape: tuple[int, ...],
    seed: int,
    noise_keys: Sequence[tuple[int, ...]],
    step_keys: Sequence[tuple[int, ...]],
    extra_args: dict[str, Tensor],
    start: Tensor | None = None,
    callback: Callable[[Any], None] | None = None,
) -> Tensor:
    """One stage's sampling run, the set-up every points stage shares: row ``r`` starts from noise
    ``shape`` drawn from ``(seed, *noise_keys[r])`` (scaled to the prior at ``sigmas[0]``, or added
    at level ``sigmas[0]`` to ``start[r]``), and a stochastic sampler draws its row's noise from
    ``(seed, *step_keys[r])``, so a row never depends on its batch."""
    noise = torch.stack([randn(shape, make_generator(derive_seed(seed, *key))) for key in noise_keys])
    if start is None:
        x = noise * float(schedule.prior_std(sigmas[0]))
    else:
        x = start + noise * float(sigmas[0])
    g = [make_generator(derive_seed(seed, *key)) for key in step_keys]
    return get_sampler(sampler)(den, x, sigmas, extra_args=extra_args, callback=callback, generator=g)


@torch.no_grad()
def upsample(
    model: PointsModel,
    cfg: PointsConfig,
    coarse: Tensor,
    n: int,
    ids: Sequence[int],
    seed: int = 0,
    callback: Callable[[int], None] | None = None,
) -> Tensor:
    """``n`` extra points ``(B, n, 6)`` for each coarse cloud ``(B, M, 6)`` from an upsampler stage.

    Row ``b`` draws its noise from ``(seed, ids[b])``, so a cloud does not depend on its batch.
    With ``cfg.sample.start == "coarse"`` sampling starts from the coarse points plus noise of the
    grid's top level instead of from pure noise (``PointsSampleConfig.start``).
    With ``cfg.sample.project_k`` the sampled points are then moved onto the surface fitted to their
    nearest coarse points (``project_to_planes`` or ``project_to_quadrics``, per ``project_fit``).
    """
    schedule = build_schedule(cfg.diffusion)
    sigmas = _sigmas(schedule, cfg.sample.steps, cfg.sample.spacing, cfg.sample.sigma_max)
    den = points_denoiser(model, schedule, cfg.diffusion.prediction)
    # The extra points come in chunks of the trained set size m, each conditioned on the same
    # coarse cloud and denoised as its own batch row: given the shape (which the coarse cloud
    # carries) surface samples are independent, so chunks need not see each other, and
    # attention costs k m^2 instead of (k m)^2 (training on m = 512 is 3x cheaper than 1536).
    m = cfg.data.num_points
    k = -(-n // m)
    rows = [(i, c) for i in ids for c in range(k)]
    fine = _draw(
        den, schedule, sigmas, cfg.sample.sampler, (m, 6), seed,
        noise_keys=[(2, i, c) for i, c in rows], step_keys=[(3, i, c) for i, c in rows],
        extra_args={"coarse": coarse.repeat_interleave(k, dim=0)},
        start=_coarse_starts(coarse, k, m, ids, seed) if cfg.sample.start == "coarse" else None,
        callback=(lambda _info: callback(len(ids))) if callback else None,
    )  # fmt: skip
    fine = fine.reshape(len(ids), k * m, 6)[:, :n]
    if not cfg.sample.project_k:
        return fine
    return PROJECTIONS[cfg.sample.project_fit](fine, coarse, cfg.sample.project_k)


class PointsPipeline:
    """The box, base and upsampler models with the text encoder and their sampling defaults.

    With a box stage (``threed.box``) each base cloud, still in its item's own azimuth frame, is
    fitted to a box drawn from the text before it is turned and upsampled."""

    def __init__(
        self,
        base: PointsModel,
        base_cfg: PointsConfig,
        upsampler: PointsModel | None,
        up_cfg: PointsConfig | None,
        text_encoder: TextEncoder,
        *,
        checkpoints: tuple[Path | None, Path | None] = (None, None),
        box: BoxModel | None = None,
        box_cfg: PointsConfig | None = None,
        box_checkpoint: Path | None = None,
    ) -> None:
        if base.stage != "base" or (upsampler is not None and upsampler.stage != "upsampler"):
            raise ExtradimError("PointsPipeline needs a base-stage and an upsampler-stage checkpoint")
        self.base, self.base_cfg = base.eval(), base_cfg
        self.upsampler, self.up_cfg = (upsampler.eval() if upsampler else None), up_cfg
        self.text = text_encoder
        self.checkpoints = checkpoints
        self.checkpoint_sha256 = [file_sha256(p) if p else "" for p in checkpoints]
        self.coarse_points = base_cfg.data.num_points
        if (box is None) != (box_cfg is None):
            raise ExtradimError("a box stage needs both its model and its config")
        if box is not None and box_cfg is not None:
            if box.stage != "box" or box_cfg.model.stage != "box":
                raise ExtradimError("the box checkpoint is not a box-stage checkpoint")
            if box_cfg.data.canonical_yaw != base_cfg.data.canonical_yaw:
                raise ExtradimError("the box and base stages disagree on data.canonical_yaw")
            if (box_cfg.data.text_encoder, box_cfg.data.max_text_length) != (
                base_cfg.data.text_encoder,
                base_cfg.data.max_text_length,
            ):
                raise ExtradimError("the box and base stages use different text encoders or lengths")
            if base.box_condition and box_cfg.data.box_quantile != base_cfg.data.box_quantile:
                raise ExtradimError(
                    f"the base was trained on boxes of quantile {base_cfg.data.box_quantile}, "
                    f"the box stage draws quantile {box_cfg.data.box_quantile}"
                )
        elif base.box_condition:
            raise ExtradimError("this base is conditioned on a box: it needs a box stage (not --no-box)")
        self.box, self.box_cfg = (box.eval() if box is not None else None), box_cfg
        self.box_checkpoint = box_checkpoint
        self.box_sha256 = file_sha256(box_checkpoint) if box_checkpoint else ""
        self.guide: PointsModel | None = None
        self.autoguidance = 1.0

    def stage_sha256(self) -> dict[str, str | None]:
        """The sha256 of the checkpoint each stage was loaded from, hashed at load (None where a
        stage is absent or was built in memory): ``{"box", "base", "upsampler"}``."""
        base, up = self.checkpoint_sha256
        return {"box": self.box_sha256 or None, "base": base or None, "upsampler": up or None}

    @classmethod
    def load(
        cls,
        base: str | os.PathLike[str] | None = None,
        upsampler: str | os.PathLike[str] | None = None,
        *,
        text_encoder: str | None = None,
        guide: str | os.PathLike[str] | None = None,
        autoguidance: float = 1.0,
        box: str | os.PathLike[str] | Literal[False] | None = None,
    ) -> PointsPipeline:
        """Load the stages (defaults: the shipped files). Bad files raise a one-line ``CheckpointError``.

        ``box``: a box-stage checkpoint; ``None`` (default) takes the shipped one when the base is
        the shipped one (by default or by path) or is conditioned on a box, and none otherwise;
        ``False``: no box stage (refused for a box-conditioned base).

        ``guide``: a weaker base checkpoint (e.g. an earlier one) for autoguidance of the base at
        scale ``autoguidance`` (1: off; measured in session 10 and not a default, model card).
        """
        b_model, b_cfg, b_path = load_pretrained(base or DEFAULT_BASE, PointsConfig, PointsModel)
        u_model, u_cfg, u_path = load_pretrained(upsampler or DEFAULT_UPSAMPLER, PointsConfig, PointsModel)
        enc = TextEncoder.load(text_encoder or b_cfg.data.text_encoder, max_length=b_cfg.data.max_text_length)
        if enc.dim != b_cfg.model.text_dim:
            raise ExtradimError(f"text encoder width {enc.dim} != the model's {b_cfg.model.text_dim}")
        if box is None:
            box = default_box(base, b_cfg)
        x_model, x_cfg, x_path = (
            (None, None, None) if box is False else load_pretrained(box, PointsConfig, _box_model)
        )
        pipe = cls(
            b_model, b_cfg, u_model, u_cfg, enc, checkpoints=(b_path, u_path),
            box=x_model, box_cfg=x_cfg, box_checkpoint=x_path,
        )  # fmt: skip
        if guide is not None:
            g_model, g_cfg, _ = load_pretrained(guide, PointsConfig, PointsModel)
            if g_cfg.model.stage != "base" or g_cfg.diffusion != b_cfg.diffusion:
                raise ExtradimError("the autoguidance model must be a base with the same diffusion settings")
            if autoguidance < 0:
                raise ExtradimError(f"autoguidance must be >= 0, got {autoguidance}")
            if g_cfg.model.box_condition and pipe.box is None:
                raise ExtradimError("the autoguidance model is conditioned on a box: it needs a box stage")
            pipe.guide, pipe.autoguidance = g_model.eval(), float(autoguidance)
        return pipe

    def settings(
        self,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        guidance_rescale: float | None = None,
    ) -> dict[str, Any]:
        s = self.base_cfg.sample
        out = {
            "sampler": sampler or s.sampler,
            "steps": s.steps if steps is None else steps,
            "guidance": s.guidance if guidance is None else guidance,
            "guidance_rescale": s.guidance_rescale if guidance_rescale is None else guidance_rescale,
            "spacing": s.spacing,
            "sigma_max": s.sigma_max,
            "upsampler_sigma_max": self.up_cfg.sample.sigma_max if self.up_cfg else None,
            "upsampler_project_k": self.up_cfg.sample.project_k if self.up_cfg else 0,
            "upsampler_project_fit": self.up_cfg.sample.project_fit if self.up_cfg else None,
            "upsampler_steps": self.up_cfg.sample.steps if self.up_cfg else 0,
            "upsampler_start": self.up_cfg.sample.start if self.up_cfg else None,
            "box_quantile": self.box_cfg.data.box_quantile if self.box_cfg else None,
            "box_steps": self.box_cfg.sample.steps if self.box_cfg else 0,
        }
        if out["sampler"] not in SAMPLERS:
            raise ExtradimError(f"unknown sampler {out['sampler']!r}; valid: {', '.join(sorted(SAMPLERS))}")
        if not 1 <= out["steps"] <= 1000:
            raise ExtradimError(f"steps must be in 1..1000, got {out['steps']}")
        if not 0 <= out["guidance"] <= 50:
            raise ExtradimError(f"guidance must be in 0..50, got {out['guidance']}")
        if not 0 <= out["guidance_rescale"] <= 1:
            raise ExtradimError(f"guidance rescale must be in 0..1, got {out['guidance_rescale']}")
        if out["guidance"] == 1:  # no guidance, nothing to rescale: record what takes effect
            out["guidance_rescale"] = 0.0
        return out

    def check_num_points(self, num_points: int) -> int:
        low = self.coarse_points
        high = MAX_POINTS if self.upsampler is not None else low
        if not low <= num_points <= high:
            raise ExtradimError(f"num-points must be in {low}..{high}, got {num_points}")
        return num_points

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        seed: int = 0,
        num_points: int = 2048,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        guidance_rescale: float | None = None,
        batch_size: int = 32,
        callback: Callable[[int], None] | None = None,
        first_index: int = 0,
        canonical: bool = False,
    ) -> Tensor:
        """Clouds ``(len(prompts), num_points, 6)``. ``callback(n)`` after each step of n clouds.

        ``canonical``: a base trained in each item's own azimuth frame (``data.canonical_yaw``)
        leaves its clouds in that frame (yaw 0: a table's long side along X) instead of turning
        them by a random yaw; others ignore it."""
        st = self.settings(steps, guidance, sampler, guidance_rescale)
        self.check_num_points(num_points)
        L = self.base_cfg.data.max_text_length
        emb = self.text.encode(prompts, pad_to=L)
        out = []
        for start in range(0, len(prompts), batch_size):
            idx = range(start, min(start + batch_size, len(prompts)))
            ids = [first_index + i for i in idx]
            cond = {
                "context": emb.tokens[idx.start : idx.stop],
                "context_mask": emb.mask[idx.start : idx.stop],
                "pooled": emb.pooled[idx.start : idx.stop],
            }
            coarse = self._base(cond, ids, seed, st, callback, turn=not canonical)
            if num_points > self.coarse_points:
                fine = self._upsample(coarse, num_points - self.coarse_points, ids, seed, callback)
                coarse = torch.cat([coarse, fine], dim=1)
            out.append(coarse)
        return torch.cat(out).clamp(-1.5, 1.5)

    def _base(
        self,
        cond: dict[str, Tensor],
        ids: list[int],
        seed: int,
        st: dict[str, Any],
        callback: Any,
        turn: bool = True,
    ) -> Tensor:
        cfg = self.base_cfg
        schedule = build_schedule(cfg.diffusion)
        sigmas = _sigmas(schedule, st["steps"], st["spacing"], st["sigma_max"])
        L, D = cond["context"].shape[1:]
        den: Any = points_denoiser(self.base, schedule, cfg.diffusion.prediction)
        boxes = None
        if self.box is not None and self.box_cfg is not None:
            boxes = self.boxes(cond["pooled"], ids, seed)
            if self.base.box_condition:
                den = _WithBox(den, boxes)
        if self.guide is not None and self.autoguidance != 1.0:
            bad = points_denoiser(self.guide, schedule, cfg.diffusion.prediction)
            if self.guide.box_condition and boxes is not None:
                bad = _WithBox(bad, boxes)
            den = AutoGuidanceDenoiser(den, bad, self.autoguidance)
        guided = CFGDenoiser.from_scale(
            den, st["guidance"], lambda b: text_null_condition(b, L, D), rescale=st["guidance_rescale"]
        )
        x = _draw(
            guided, schedule, sigmas, st["sampler"], (cfg.data.num_points, 6), seed,
            noise_keys=[(i,) for i in ids], step_keys=[(1, i) for i in ids], extra_args=cond,
            callback=(lambda _info: callback(len(ids))) if callback else None,
        )  # fmt: skip
        if boxes is not None and self.box_cfg is not None:
            x = fit_to_box(x, boxes, self.box_cfg.data.box_quantile)
        if cfg.data.canonical_yaw and turn:
            x = turn_items(x, ids, seed)
        return x

    @torch.no_grad()
    def boxes(self, pooled: Tensor, ids: Sequence[int], seed: int) -> Tensor:
        """``(B, 6)``: a box (``threed.box``) per pooled text vector ``(B, D)`` from the box stage;
        row ``b``'s noise comes from ``(seed, 6, ids[b])`` and ``(seed, 7, ids[b])``."""
        if self.box is None or self.box_cfg is None:
            raise ExtradimError("this pipeline has no box stage")
        cfg = self.box_cfg
        schedule = build_schedule(cfg.diffusion)
        sigmas = _sigmas(schedule, cfg.sample.steps, cfg.sample.spacing, cfg.sample.sigma_max)
        den = NetworkDenoiser(self.box, schedule, cfg.diffusion.prediction)
        dim = pooled.shape[-1]
        guided = CFGDenoiser.from_scale(den, cfg.sample.guidance, lambda b: {"pooled": torch.zeros(b, dim)})
        return _draw(
            guided, schedule, sigmas, cfg.sample.sampler, (6,), seed,
            noise_keys=[(6, i) for i in ids], step_keys=[(7, i) for i in ids], extra_args={"pooled": pooled},
        )  # fmt: skip

    def _upsample(self, coarse: Tensor, n: int, ids: list[int], seed: int, callback: Any) -> Tensor:
        assert self.upsampler is not None and self.up_cfg is not None
        return upsample(self.upsampler, self.up_cfg, coarse, n, ids, seed, callback)
