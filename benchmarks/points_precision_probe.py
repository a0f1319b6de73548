"""How precise are the base's shapes? Two yaw-free measurements, more sensitive than 1-NNA.

    python benchmarks/points_precision_probe.py [--base FILE_OR_RUN_CKPT] [--sampler S] [--steps N]
        [--classes sphere,cone,...] [--per-class 50] [--spheres-only] [--threads 2] [--out J]

1. *Profile spread.* For each class the base draws the coarse clouds of the ``per-class``
   canonical eval prompts (``extradim eval points --seed 0``'s base draws, box fit included),
   against as many real 512-point clouds of the evaluation's reference world. Each cloud's
   vertical profile: the 90% quantile of the XY radius in 12 bins of z over [-1, 1]. Per class:
   the spread of each bin across clouds (sd), averaged over the bins that at least half of each
   set's clouds fill, for generated and real clouds, and the mean |generated - real| of the bins'
   means. A generated spread above the real one is shape error of each cloud's own (session 19's
   bumps); a bias is shape error the clouds share. (The clouds are turned as the pipeline turns
   them; the profile does not depend on the yaw.)
2. *The denoiser on real spheres.* 16 real canonical spheres, noised at sigma in 0.01 .. 0.3; the
   base's x0 estimate (their own box and captions given). Its bumps: the within-cloud sd of the
   16-nearest-neighbour mean radius (0 for the unit sphere), against those of the ideal denoiser
   for unit spheres (``ideal_sphere_denoiser``, the floor). Also from the same spheres bent by a
   smooth deformation of RMS 0.02 (``threed.modality.smooth_deformation``): the bumps in and out,
   i.e. how much of a low-frequency shape error the network undoes at each level.

~2 min on 2 threads for five classes.
"""

from __future__ import annotations

import itertools
import time

import torch
from _results import eval_base_clouds, finish, neighbourhood_mean_radius, parse_probe_args, probe_parser
from torch import Tensor

from shared_core.random import make_generator, randn
from shared_core.train.loop import build_schedule
from threed.box import box_of
from threed.evaluate import reference_seed
from threed.modality import rotate_z, smooth_deformation
from threed.pipeline import PointsPipeline, _WithBox, points_denoiser
from threed.world import SHAPES, ShapeWorld

EDGES = torch.linspace(-1, 1, 13)
SIGMAS = (0.01, 0.03, 0.1, 0.3)


def profiles(clouds: Tensor) -> Tensor:
    """``(B, 12)``: the 90% quantile of the XY radius in each z bin (NaN where a bin has < 3 points)."""
    z, r = clouds[..., 2], clouds[..., :2].norm(dim=-1)
    out = []
    for lo, hi in itertools.pairwise(EDGES):
        inside = (z >= lo) & (z < hi)
        q = torch.nanquantile(torch.where(inside, r, torch.nan), 0.9, dim=1)
        out.append(torch.where(inside.sum(1) >= 3, q, torch.nan))
    return torch.stack(out, 1)


def _nanstd(x: Tensor) -> Tensor:
    return (x - x.nanmean(0)).pow(2).nanmean(0).sqrt()


def spread(gen: Tensor, real: Tensor) -> dict[str, float]:
    pg, pr = profiles(gen[..., :3].double()), profiles(real[..., :3].double())
    filled = (pg.isfinite().double().mean(0) >= 0.5) & (pr.isfinite().double().mean(0) >= 0.5)
    pg, pr = pg[:, filled], pr[:, filled]  # the bins at least half of each set's clouds fill
    return {
        "bins": int(filled.sum()),
        "sd_generated": float(_nanstd(pg).mean()),
        "sd_real": float(_nanstd(pr).mean()),
        "bias": float((pg.nanmean(0) - pr.nanmean(0)).abs().mean()),
    }


def bumps(clouds: Tensor, k: int = 16) -> float:
    """Mean over clouds of the within-cloud sd of each point's k-nearest-neighbour mean radius."""
    return float(neighbourhood_mean_radius(clouds[..., :3], k).std(dim=1).mean())


def ideal_sphere_denoiser(y: Tensor, sigma: float) -> Tensor:
    """E[x0 | y] for x0 uniform on the unit sphere and y = x0 + sigma eps (xyz only): the mean of
    the von Mises-Fisher posterior, (coth k - 1/k) y/|y| with k = |y| / sigma^2."""
    norm = y.norm(dim=-1, keepdim=True)
    k = (norm / sigma**2).clamp_min(1e-6)
    return (1 / torch.tanh(k) - 1 / k) * y / norm


def denoiser_on_spheres(pipe: PointsPipeline, n: int = 16) -> list[dict[str, float]]:
    world = ShapeWorld(pipe.base_cfg.data.num_points, seed=5, classes=["sphere"])
    batch = world.sample(n, 0)
    x0 = torch.stack([rotate_z(batch.points[i], -batch.params[i].yaw) for i in range(n)])
    bend = torch.zeros_like(x0)
    for i in range(n):
        bend[i, :, :3] = smooth_deformation(x0[i, :, :3], 0.02, make_generator(100 + i))
    emb = pipe.text.encode(batch.captions, pad_to=pipe.base_cfg.data.max_text_length)
    cond = {"context": emb.tokens, "context_mask": emb.mask, "pooled": emb.pooled}
    cfg = pipe.base_cfg
    boxes = box_of(x0, cfg.data.box_quantile)

    def den(x: Tensor, s: float) -> Tensor:  # a fresh one per call: a self-conditioned one holds state
        d = points_denoiser(pipe.base, build_schedule(cfg.diffusion), cfg.diffusion.prediction)
        d = _WithBox(d, boxes) if pipe.base.box_condition else d
        with torch.no_grad():
            return d(x, torch.tensor(s), **cond)

    rows = []
    for s in SIGMAS:
        noise = s * randn(x0.shape, make_generator(7))
        clean, bent = den(x0 + noise, s), den(x0 + bend + noise, s)
        ideal = ideal_sphere_denoiser((x0 + noise)[..., :3].double(), s)
        rows.append({
            "sigma": s, "bumps_clean_in": bumps(x0), "bumps_clean_out": bumps(clean),
            "bumps_ideal_out": bumps(ideal), "mean_radius_out": float(clean[..., :3].norm(dim=-1).mean()),
            "mean_radius_ideal": float(ideal.norm(dim=-1).mean()),
            "bumps_bent_in": bumps(x0 + bend), "bumps_bent_out": bumps(bent),
        })  # fmt: skip
    return rows


def main() -> None:
    ap = probe_parser(__doc__, per_class=50)
    ap.add_argument("--base", default=None, help="base checkpoint (default: the shipped one)")
    ap.add_argument("--sampler", default=None, help="base sampler (default: the checkpoint's)")
    ap.add_argument("--steps", type=int, default=None, help="base steps (default: the checkpoint's)")
    ap.add_argument("--classes", default="sphere,cone,snowman,table,cube", help="comma-separated shapes")
    ap.add_argument("--spheres-only", action="store_true", help="only part 2 (seconds)")
    args = parse_probe_args(ap)
    classes = args.classes.split(",")
    bad = [c for c in classes if c not in SHAPES]
    if bad:
        ap.error(f"unknown classes {bad}; valid: {', '.join(SHAPES)}")
    pipe = PointsPipeline.load(args.base)
    st = pipe.settings(steps=args.steps, sampler=args.sampler)
    n = args.per_class
    t = time.perf_counter()
    per: dict[str, dict[str, float]] = {}
    for shape in [] if args.spheres_only else classes:
        k = SHAPES.index(shape)
        gen = eval_base_clouds(pipe, k, shape, n, st)
        real = (
            ShapeWorld(pipe.base_cfg.data.num_points, seed=reference_seed(0), classes=[shape])
            .sample(n, 0)
            .points
        )
        per[shape] = spread(gen, real)
        row = per[shape]
        print(f"{shape:9s} profile sd generated {row['sd_generated']:.4f} real {row['sd_real']:.4f}  "
              f"|bias| {row['bias']:.4f}", flush=True)  # fmt: skip
    sphere_rows = denoiser_on_spheres(pipe)
    for r in sphere_rows:
        print(f"sigma {r['sigma']:<5} real spheres: bumps out {r['bumps_clean_out']:.4f} (ideal "
              f"{r['bumps_ideal_out']:.4f}), mean r {r['mean_radius_out']:.3f} "
              f"(ideal {r['mean_radius_ideal']:.3f}); "
              f"bent by {r['bumps_bent_in']:.4f}: out {r['bumps_bent_out']:.4f}")  # fmt: skip
    result = {
        "base": str(pipe.checkpoints[0]),
        "per_class": n,
        "settings": st,
        "profile_spread": per,
        "denoiser_on_real_spheres": sphere_rows,
    }
    finish(args.out, result, t)


if __name__ == "__main__":
    main()
