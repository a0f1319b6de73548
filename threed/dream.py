"""DreamFusion-style text-to-3D on CPU: a NeRF optimised by score distillation from a 2-D prior.

    result = dream(ShapeWorldPrior.load(), "a red torus", DreamConfig(), seed=0)
    mesh = extract_mesh(result.field)

Each step renders ``views_per_step`` random cameras (azimuth uniform, elevation in a range, the
prior's distance and field of view) with a random light and a random shading mode (albedo only
for the first ``albedo_steps``; afterwards albedo, Lambertian or textureless, as DreamFusion), and
pushes the renders along the prior's SDS direction (``shared_core.distill``) at a noise level
whose range is annealed from ``t_range`` to ``t_final``. Regularisers: the opacity entropy (fully
opaque or empty rays; its weight ramps linearly from ``entropy_start`` of the budget to the end),
DreamFusion's orientation loss (no normals facing away from the camera in
visible samples) and total variation of the density grid (smooth surfaces on a dense grid).
With ``supersample`` > 1 each render traces that many rays per pixel side and box-filters them
to the prior's size, as the prior's training renders were made (measured: no gain in class
accuracy, README; default 1).

Anything with the ``ImagePrior`` interface can be the prior: the shipped shape-world prior
(``threed.prior.ShapeWorldPrior``) or a Stable Diffusion pipeline (``threed.sd_prior``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from torch import Tensor, nn
from tqdm.auto import tqdm

from shared_core.distill import sds_loss, sds_sigmas
from shared_core.random import make_generator, rand, randn
from shared_core.schedules import Schedule
from shared_core.train.distributed import derive_seed
from threed.nerf import Background, GridField, NeRFConfig, OccupancyGrid, aabb_intersect, render_rays
from threed.views import Camera, camera_rays

__all__ = [
    "MESH_VIEWS",
    "DreamConfig",
    "DreamResult",
    "ImagePrior",
    "density_volume",
    "dream",
    "extract_mesh",
    "field_from_cloud",
    "points_init_cloud",
    "render_view",
    "surface_threshold",
]


class ImagePrior(Protocol):
    """What score distillation needs from a text-to-image model."""

    size: int  # render resolution the prior takes
    distance: float  # camera distance and field of view of the views it was trained on
    fov: float
    schedule: Schedule
    name: str

    def encode(self, prompt: str) -> Any: ...

    def latents(self, images: Tensor) -> Tensor:
        """Renders ``(B, 3, size, size)`` in [-1, 1] -> what the denoiser takes (differentiably):
        the images themselves for a pixel prior, VAE latents for a latent one."""
        ...

    def denoiser(self, cond: Any, cameras: Tensor, guidance: float) -> Callable[[Tensor, Tensor], Tensor]:
        """``(x (B, 3, H, W) in [-1, 1], sigma (B,)) -> x0``, guided, at cameras ``(B, 2)`` [az, el]."""
        ...


@dataclass(frozen=True)
class DreamConfig:
    steps: int = 600
    max_minutes: float = 5.0
    views_per_step: int = 2
    supersample: int = 1  # rays per pixel side of the SDS renders, box-filtered to the prior's size
    lr: float = 0.05  # Adam on the density and albedo grids
    background_lr: float = 1e-3
    # chance that a view is composited over a random solid colour instead of the learned background
    # (Magic3D / threestudio's augmentation: a translucent part then shows; suits a prior trained on
    # random backgrounds, ``data.background: random``)
    random_background: float = 0.0
    guidance: float = 20.0  # CFG scale of the prior (DreamFusion: 100 with Imagen; ours: see README)
    t_range: tuple[float, float] = (0.02, 0.98)  # initial range of diffusion times (fractions)
    t_final: tuple[float, float] = (0.02, 0.5)  # reached linearly at the last step
    weighting: str = "vp_variance"
    grad_clip: float | None = 1.0  # elementwise clamp of the SDS direction
    elevation: tuple[float, float] = (-10.0, 60.0)
    albedo_steps: int = 100  # albedo-only shading first (DreamFusion's warm-up)
    shading_probs: tuple[float, float, float] = (0.3, 0.5, 0.2)  # albedo, lambertian, textureless
    ambient: float = 0.3
    lambda_entropy: float = 1e-3  # opacity entropy (mean over rays; SDS sums over pixels)
    entropy_start: float = 0.0  # fraction of the budget after which the entropy weight ramps linearly to full
    lambda_orient: float = 1e-2
    lambda_tv: float = 1e-2
    occupancy_every: int = 16
    # Where the field starts. "blob": DreamFusion's density blob at the centre; "points" (default
    # since session 15: class accuracy 95 vs 80%, README): the
    # shape the shipped text-to-points pipeline draws for (prompt, seed), in the prior's frame
    # (a 3-D prior's output as the start, as GaussianDreamer / Points-to-3D / threestudio's
    # ``shape_init``): a shell around its points gets density, their colours the albedo
    # (``field_from_cloud``); SDS refines from there.
    init: str = "points"
    nerf: NeRFConfig = field(default_factory=NeRFConfig)

    def __post_init__(self) -> None:
        for name in ("t_range", "t_final", "elevation", "shading_probs"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if isinstance(self.nerf, dict):
            object.__setattr__(self, "nerf", NeRFConfig(**self.nerf))
        if self.steps < 1 or self.max_minutes <= 0 or self.views_per_step < 1 or self.supersample < 1:
            raise ValueError("need steps >= 1, max_minutes > 0, views_per_step >= 1 and supersample >= 1")
        if not 0 <= self.random_background <= 1:
            raise ValueError(f"random_background must be a probability, got {self.random_background}")
        if self.guidance < 1 or self.lr <= 0:
            raise ValueError("need guidance >= 1 and lr > 0")
        if not 0 <= self.entropy_start < 1 or self.lambda_entropy < 0:
            raise ValueError("need 0 <= entropy_start < 1 and lambda_entropy >= 0")
        if (
            abs(sum(self.shading_probs) - 1) > 1e-6
            or min(self.shading_probs) < 0
            or len(self.shading_probs) != 3
        ):
            raise ValueError("shading_probs must be three non-negative numbers summing to 1")
        for name in ("t_range", "t_final"):
            lo, hi = getattr(self, name)
            if not 0 <= lo < hi <= 1:
                raise ValueError(f"{name} must satisfy 0 <= lo < hi <= 1, got {(lo, hi)}")
        if not -90 <= self.elevation[0] <= self.elevation[1] <= 90:
            raise ValueError(f"elevation must be a range within [-90, 90], got {self.elevation}")
        if self.init not in ("blob", "points"):
            raise ValueError(f"unknown init {self.init!r}; valid: blob, points")
        if self.weighting not in ("vp_variance", "uniform", "snr_inverse"):
            raise ValueError(
                f"unknown weighting {self.weighting!r}; valid: vp_variance, uniform, snr_inverse"
            )


@dataclass
class DreamResult:
    field: GridField
    background: Background
    history: list[dict[str, float]]  # one row per step: loss terms, t
    timings: dict[str, float]  # seconds spent rendering, in the prior, in backward + step; total
    steps: int  # steps done (fewer than asked when max_minutes ran out)
    config: DreamConfig

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "timings": {k: round(v, 2) for k, v in self.timings.items()},
                "config": asdict(self.config)}  # fmt: skip


_SHADINGS = ("albedo", "lambertian", "textureless")


def render_view(
    field: GridField,
    background: nn.Module | Tensor | None,
    camera: Camera,
    size: int,
    *,
    occupancy: OccupancyGrid | None = None,
    shading: str = "albedo",
    light: Tensor | None = None,
    ambient: float = 0.3,
    stratified: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Any]:
    """One view ``(3, size, size)`` in [0, 1] and the ``RenderOutput``."""
    o, d = camera_rays(camera, size)
    out = render_rays(field, o, d, background=background, occupancy=occupancy, shading=shading,  # type: ignore[arg-type]
                      light=light, ambient=ambient, stratified=stratified, generator=generator)  # fmt: skip
    return out.rgb.t().reshape(3, size, size), out


def _tv(grid: Tensor) -> Tensor:
    g = grid[0, 0]
    return ((g[1:] - g[:-1]).pow(2).mean() + (g[:, 1:] - g[:, :-1]).pow(2).mean()
            + (g[:, :, 1:] - g[:, :, :-1]).pow(2).mean())  # fmt: skip


def field_from_cloud(cloud: Tensor, cfg: NeRFConfig, density: float = 14.0, shell: float = 0.06) -> GridField:
    """A field whose density is ``density`` (pre-activation, above ``density_shift``) within
    ``shell`` of a point of ``cloud (N, 6)`` and 0 elsewhere (a thick shell along the sampled
    surface: thin parts such as table legs keep their points, where a reconstructed solid may fill
    the gaps between them); albedo the colour of the nearest point. The field keeps ``cfg`` (so it
    saves and loads as any other); its grid cancels the blob at the grid's vertices instead."""
    r, b = cfg.grid_size, cfg.bound
    axis = torch.linspace(-b, b, r)  # grid vertices (align_corners=True)
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")  # the grid's (D, H, W) = (z, y, x)
    xyz = torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)
    found = [torch.cdist(p, cloud[:, :3].float()).min(dim=1) for p in xyz.split(8192)]  # 64 MB a chunk
    dist, nearest = torch.cat([f.values for f in found]), torch.cat([f.indices for f in found])
    near = (dist < shell).float().reshape(1, 1, r, r, r)
    albedo = ((cloud[nearest, 3:].float() + 1) / 2).clamp(0.02, 0.98)  # rgb in [-1, 1] -> [0, 1]
    field = GridField(cfg)
    with torch.no_grad():
        field.density_grid.copy_(density * near - field.blob(xyz).reshape(1, 1, r, r, r))
        field.albedo_grid.copy_(torch.logit(albedo).t().reshape(1, 3, r, r, r))
    return field


@functools.lru_cache(maxsize=1)
def _points_pipeline() -> Any:
    from threed.pipeline import PointsPipeline

    return PointsPipeline.load()


def points_init_sha256() -> dict[str, str | None]:
    """The sha256 of the points checkpoints ``points_init_cloud`` draws from (box, base, upsampler)."""
    return _points_pipeline().stage_sha256()


def points_init_cloud(prompt: str, seed: int) -> Tensor:
    """``(2048, 6)``: the shipped text-to-points pipeline's cloud for (prompt, seed) in the item's
    own azimuth frame, which is the prior's (its cameras' azimuth is relative to the object's yaw)."""
    return _points_pipeline().generate([prompt], seed=seed, canonical=True)[0]


def dream(
    prior: ImagePrior,
    prompt: str,
    cfg: DreamConfig | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    on_preview: Callable[[int, GridField, Background], None] | None = None,
    preview_every: int = 50,
    init_cloud: Tensor | None = None,
) -> DreamResult:
    """Optimise a NeRF for ``prompt``; noise, cameras, lights and shading come from ``seed`` (CPU).

    With ``cfg.init == "points"`` the field starts from ``init_cloud`` (default: the shipped
    points pipeline's cloud for (prompt, seed), ``points_init_cloud``), see ``field_from_cloud``."""
    cfg = cfg or DreamConfig()
    with torch.random.fork_rng(devices=[]):  # the background MLP's init, without touching the caller's RNG
        torch.manual_seed(seed)
        bg = Background()
    if cfg.init == "points":
        cloud = points_init_cloud(prompt, seed) if init_cloud is None else init_cloud
        nerf = field_from_cloud(cloud, cfg.nerf)
    else:
        nerf = GridField(cfg.nerf)
    occ = OccupancyGrid(cfg.nerf)
    opt = torch.optim.Adam(
        [{"params": nerf.parameters(), "lr": cfg.lr}, {"params": bg.parameters(), "lr": cfg.background_lr}],
        betas=(0.9, 0.99), eps=1e-15,
    )  # fmt: skip
    cond = prior.encode(prompt)
    g = make_generator(derive_seed(seed, 7))
    timings = {"render_s": 0.0, "prior_s": 0.0, "backward_s": 0.0}
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    B = cfg.views_per_step
    done = 0
    bar = tqdm(total=cfg.steps, desc="dream", unit="step", disable=not progress)
    for step in range(cfg.steps):
        if time.perf_counter() - start > 60 * cfg.max_minutes:
            break
        if step % cfg.occupancy_every == 0:
            occ.update(nerf, g)
        # progress through the budget: steps, or wall time when max_minutes binds first. Time counts
        # only from step 1 on: at step 0 its sliver would leak the wall clock into the first update
        # (via the entropy ramp), and a run the step budget bounds must repeat exactly for its seed.
        elapsed = time.perf_counter() - start if step else 0.0
        frac = min(1.0, max(step / max(cfg.steps - 1, 1), elapsed / (60 * cfg.max_minutes)))
        t_lo = cfg.t_range[0] + frac * (cfg.t_final[0] - cfg.t_range[0])
        t_hi = cfg.t_range[1] + frac * (cfg.t_final[1] - cfg.t_range[1])

        t0 = time.perf_counter()
        u = rand((B, 4), g, dtype=torch.float64).tolist()
        images, cams, orient, opac = [], [], [], []
        for b in range(B):
            az = 360.0 * u[b][0]
            el = cfg.elevation[0] + (cfg.elevation[1] - cfg.elevation[0]) * u[b][1]
            cam = Camera(az, el, prior.distance, prior.fov)
            if step < cfg.albedo_steps:
                mode = "albedo"
            else:
                cum = np.cumsum(cfg.shading_probs)
                mode = _SHADINGS[int(np.searchsorted(cum, u[b][2] * cum[-1], side="right").clip(0, 2))]
            light_dir = cam.position() / cam.distance + 0.6 * randn((3,), g).double().numpy()
            light = torch.from_numpy(light_dir / np.linalg.norm(light_dir)).float()
            size = prior.size * cfg.supersample
            # drawn only when used, so runs without the augmentation keep their noise stream
            back = rand((3,), g) if u[b][3] < cfg.random_background else bg
            img, out = render_view(nerf, back, cam, size, occupancy=occ, shading=mode, light=light,
                                   ambient=cfg.ambient, stratified=True, generator=g)  # fmt: skip
            images.append(F.avg_pool2d(img[None], cfg.supersample)[0] if cfg.supersample > 1 else img)
            cams.append([az, el])
            opac.append(out.opacity)
            if out.normals is not None:
                _, dirs = camera_rays(cam, size)
                facing = (out.normals * dirs[:, None]).sum(-1).clamp_min(0)  # > 0: faces away
                orient.append((out.weights.detach() * facing.pow(2)).sum(-1).mean())
        x = torch.stack(images) * 2 - 1
        timings["render_s"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        sigma = sds_sigmas(prior.schedule, B, g, (t_lo, t_hi))
        den = prior.denoiser(cond, torch.tensor(cams, dtype=torch.float32), cfg.guidance)
        z = prior.latents(x)
        noise = randn(tuple(z.shape), g)
        sds = sds_loss(den, z, sigma, noise, weighting=cfg.weighting, grad_clip=cfg.grad_clip)  # type: ignore[arg-type]
        timings["prior_s"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        o = torch.cat(opac).clamp(1e-5, 1 - 1e-5)
        entropy = -(o * o.log() + (1 - o) * (1 - o).log()).mean()
        orient_loss = torch.stack(orient).mean() if orient else torch.zeros(())
        tv = _tv(nerf.density_grid)
        ramp = min(1.0, max(0.0, (frac - cfg.entropy_start) / max(1.0 - cfg.entropy_start, 1e-6)))
        reg = cfg.lambda_entropy * ramp * entropy + cfg.lambda_orient * orient_loss + cfg.lambda_tv * tv
        loss = sds.loss + reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        timings["backward_s"] += time.perf_counter() - t0
        done = step + 1
        row = {"step": done, "sds": float(sds.grad.pow(2).mean()), "entropy": float(entropy.detach()),
               "orient": float(orient_loss.detach()), "tv": float(tv.detach()), "t_hi": t_hi,
               "occupied": occ.fraction}  # fmt: skip
        history.append(row)
        bar.update(1)
        bar.set_postfix(sds=f"{row['sds']:.4f}", occ=f"{occ.fraction:.2f}")
        if on_preview is not None and (done % preview_every == 0 or done == cfg.steps):
            on_preview(done, nerf, bg)
    bar.close()
    timings["total_s"] = time.perf_counter() - start
    return DreamResult(nerf, bg, history, timings, done, cfg)


# ----------------------------------------------------------------------------------------------
# Mesh export
# ----------------------------------------------------------------------------------------------


# Silhouette views for the mesh level: eight azimuths at four elevations, from just below the
# equator to near overhead, so every side and the top constrain the outline.
MESH_VIEWS = tuple((float(az), el) for el in (-5.0, 20.0, 45.0, 75.0) for az in range(0, 360, 45))


@torch.no_grad()
def density_volume(field: GridField, resolution: int = 96, smooth: float = 0.05) -> Tensor:
    """The field's density on a ``resolution^3`` lattice over the scene box, indexed ``[x, y, z]``,
    Gaussian-smoothed with a standard deviation of ``smooth`` scene units (scipy; 0 = raw).

    Smoothing is what turns the optimised field's speckled shell (voxel-scale noise around a
    translucent surface) into one body before marching cubes; 0.05 units is two voxels of a 96^3
    lattice over the default box, about 1.3 voxels of the 64^3 field grid."""
    from scipy.ndimage import gaussian_filter

    c = field.cfg
    lin = torch.linspace(-c.bound, c.bound, resolution)
    pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
    dens = torch.cat([field.density(p) for p in pts.split(65536)]).reshape((resolution,) * 3)
    if smooth > 0:
        sigma = smooth / (2 * c.bound / (resolution - 1))
        dens = torch.from_numpy(gaussian_filter(dens.numpy(), sigma, mode="constant", cval=0.0))
    return dens


@torch.no_grad()
def surface_threshold(
    field: GridField,
    volume: Tensor | None = None,
    distance: float = 3.2,
    fov: float = 45.0,
    size: int = 64,
    slack: float = 0.0,
) -> float:
    """The level of ``volume`` (default ``density_volume(field)``) whose silhouettes match the
    rendered ones best; with ``slack``, the lowest level whose silhouette IoU is within ``slack`` of
    the best (a fuller surface among near-ties: faint thin parts stay attached to the body).

    From the 32 ``MESH_VIEWS`` the rendered silhouette is the set of rays whose opacity exceeds
    Otsu's threshold of all the views' opacities (a fixed 0.5 fails on translucent fields, whose
    opacity can stay below it everywhere); a level ``tau``'s silhouette is the set of rays along
    which the volume rises above ``tau``. The level is the one of 47 candidates (log-spaced from
    1/1000 of the volume's peak up to, not including, the peak) with the best silhouette IoU over
    all views, so the mesh's outline is the outline the renders show, whatever the field's density
    scale (a fixed threshold, as DreamFusion's, does not transfer between fields). Raises
    ``ValueError`` when no ray reaches an opacity of 0.05 (an empty field)."""
    import torch.nn.functional as F
    from skimage.filters import threshold_otsu

    c = field.cfg
    vol = density_volume(field) if volume is None else volume
    S = 2 * c.samples_per_ray
    opacities, peaks = [], []
    for az, el in MESH_VIEWS:
        o, d = camera_rays(Camera(az, el, distance, fov), size)
        opacities.append(render_rays(field, o, d, samples=S).opacity)
        t_near, t_far, hit = aabb_intersect(o, d, c.bound)
        t = t_near[:, None] + (t_far - t_near).clamp_min(0)[:, None] * (torch.arange(S) + 0.5) / S
        pts = (o[:, None] + d[:, None] * t[..., None]) / c.bound  # (R, S, 3) in [-1, 1]
        # grid_sample's (x, y, z) index (W, H, D); the volume is [x, y, z], so flip to (z, y, x)
        along = F.grid_sample(vol[None, None], pts.flip(-1).reshape(1, -1, 1, 1, 3), align_corners=True)
        peaks.append(along.reshape(-1, S).amax(-1) * hit)
    opacity, peak = torch.cat(opacities), torch.cat(peaks)
    if float(opacity.max()) < 0.05:
        raise ValueError("the field is empty: no view sees a ray of opacity 0.05")
    mask = opacity > float(threshold_otsu(opacity.numpy()))
    top = float(peak.max())
    if top <= 0:
        raise ValueError("the field is empty: nothing to mesh")
    levels = torch.logspace(math.log10(top * 1e-3), math.log10(top), 48)[:-1]
    inside = peak[None] > levels[:, None]  # (levels, rays)
    iou = (inside & mask).sum(-1) / (inside | mask).sum(-1).clamp_min(1)
    ok = (iou >= iou.max() - slack).nonzero()
    return float(levels[int(ok.min())])


@torch.no_grad()
def extract_mesh(
    field: GridField,
    resolution: int = 96,
    threshold: float | None = None,
    smooth: float = 0.05,
    distance: float = 3.2,
    fov: float = 45.0,
    slack: float = 0.01,
) -> trimesh.Trimesh:
    """Marching cubes on the smoothed density (``density_volume``) at ``surface_threshold`` (seen
    from cameras at ``distance`` with ``fov``, the prior's; the lowest level within ``slack`` of
    the best silhouette IoU, which keeps a faint mug handle attached) or at ``threshold``, halved until some
    voxel exceeds it; vertex colours from the albedo; the largest component kept. The lattice is
    padded with empty space, so the surface is closed (watertight) unless the object touches the box.
    Raises ``ValueError`` on an empty field."""
    from skimage.measure import marching_cubes

    c = field.cfg
    vol = density_volume(field, resolution, smooth)
    level = (
        surface_threshold(field, vol, distance, fov, slack=slack) if threshold is None else float(threshold)
    )
    dens = vol.numpy()
    peak = float(dens.max())
    if peak <= 0:
        raise ValueError("the field is empty: nothing to mesh")
    while level >= peak:
        level /= 2
    padded = np.pad(dens, 1, constant_values=0.0)
    verts, faces, _, _ = marching_cubes(padded, level=level)
    step = 2 * c.bound / (resolution - 1)
    verts = (verts - 1) * step - c.bound
    mesh = trimesh.Trimesh(verts, faces[:, ::-1], process=True)  # outward normals (density falls outward)
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        mesh = max(parts, key=lambda m: m.area)
    mesh.metadata["components"] = len(parts)  # found; the largest (by area) is kept
    mesh.metadata["threshold"] = level
    rgb = field.albedo(torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32))).numpy()
    colours = np.concatenate([rgb * 255, np.full((len(rgb), 1), 255.0)], 1).round().astype(np.uint8)
    mesh.visual.vertex_colors = colours
    return mesh
