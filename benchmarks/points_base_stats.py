"""Per-cloud size and shape statistics of the base's coarse clouds against real ones, per class.

    python benchmarks/points_base_stats.py [--base FILE_OR_RUN_CKPT] [--classes sphere,torus]
        [--steps N] [--sampler S] [--per-class 20] [--threads 2] [--out J]

For ``per-class`` clouds from the canonical eval prompts (the same noise as ``extradim eval points
--seed 0`` and ``points_nna_probe.py``) and as many real 512-point clouds (world seed 4242), the
mean and standard deviation over clouds of: the largest, 99th-percentile and mean distance of the
points from the origin, the three extents of the 1-99% box (sorted, largest first) and the distance
of the point centroid from the origin. Real clouds are normalised to bounding-box centre 0 and max
radius 1, so a generated cloud that is too large, too elongated or too fuzzy shows here directly
(1-NNA at these sizes punishes per-cloud size errors of a few percent; model card, session 8).
~3 s per class on 2 threads.
"""

from __future__ import annotations

import time

import torch
from _results import eval_base_clouds, finish, parse_probe_args, probe_parser

from threed.cli import add_box_options, box_option
from threed.pipeline import PointsPipeline
from threed.world import SHAPES, ShapeWorld

COARSE = 512


def cloud_stats(xyz: torch.Tensor) -> dict[str, torch.Tensor]:
    """``xyz (B, N, 3)`` -> per-cloud statistics, each ``(B,)``."""
    r = xyz.norm(dim=-1)
    q = torch.quantile(xyz, torch.tensor([0.01, 0.99]), dim=1)  # (2, B, 3)
    ext = (q[1] - q[0]).sort(dim=-1, descending=True).values
    return {
        "r_max": r.amax(1),
        "r_99": torch.quantile(r, 0.99, dim=1),
        "r_mean": r.mean(1),
        "extent_0": ext[:, 0],
        "extent_1": ext[:, 1],
        "extent_2": ext[:, 2],
        "centroid": xyz.mean(1).norm(dim=-1),
    }


def main() -> None:
    ap = probe_parser(__doc__, per_class=20)
    ap.add_argument("--base", default=None, help="base checkpoint (default: the shipped one)")
    ap.add_argument("--classes", default=",".join(SHAPES), help="comma-separated shapes")
    ap.add_argument("--steps", type=int, default=None, help="base steps (default: the checkpoint's)")
    ap.add_argument("--sampler", default=None, help="base sampler (default: the checkpoint's)")
    add_box_options(ap)
    args = parse_probe_args(ap)
    classes = args.classes.split(",")
    if unknown := sorted(set(classes) - set(SHAPES)):
        ap.error(f"unknown shapes {', '.join(unknown)}; valid: {', '.join(SHAPES)}")
    pipe = PointsPipeline.load(args.base, None, box=box_option(args))
    st = pipe.settings(steps=args.steps, sampler=args.sampler)
    n, t = args.per_class, time.perf_counter()
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for k, shape in enumerate(SHAPES):
        if shape not in classes:
            continue
        gen = eval_base_clouds(pipe, k, shape, n, st)[..., :3]
        real = ShapeWorld(COARSE, seed=4242, classes=[shape]).sample(n, 0).points[..., :3]
        sg, sr = cloud_stats(gen), cloud_stats(real)
        rows[shape] = {
            key: {
                "generated": round(sg[key].mean().item(), 4),
                "generated_sd": round(sg[key].std().item(), 4),
                "real": round(sr[key].mean().item(), 4),
                "real_sd": round(sr[key].std().item(), 4),
            }
            for key in sg
        }
        line = "  ".join(f"{key} {v['generated']:.3f}/{v['real']:.3f}" for key, v in rows[shape].items())
        print(f"{shape:9s} {line}  (generated/real)", flush=True)
    result = {
        "box": str(pipe.box_checkpoint) if pipe.box_checkpoint else None,
        "base": str(pipe.checkpoints[0]),
        "per_class": n,
        "settings": st,
        "classes": rows,
    }
    finish(args.out, result, t)


if __name__ == "__main__":
    main()
