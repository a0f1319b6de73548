"""Upsampling by surface reconstruction: how far is the diffusion upsampler from a classical surface?

    python benchmarks/points_mesh_upsample_probe.py [--coarse real|generated] [--per-class 20] [--threads 2]

Per class, ``per-class`` 512-point coarse clouds, either *real* (world seed 777, as
``points_upsampler_probe.py --nna-per-class``) or *generated* by the shipped base from the
canonical eval prompts (``threed.evaluate.eval_prompts``, the noise of ``extradim eval points
--seed 0``, as ``points_nna_probe.py``), completed to 2048 points four ways and scored by 1-NNA-CD
against ``per-class`` real 2048-point clouds (world seed 4242):

- ``plane8`` / ``quadric12``: the shipped diffusion upsampler's 1536 points (drawn once), projected
  onto the planes of their 8 / quadrics of their 12 nearest coarse points (``threed.pipeline``);
- ``mesh1536``: the coarse points plus 1536 uniform samples of ``threed.mesh.points_to_mesh`` of
  the coarse cloud (the mesh the CLI exports, made from 512 points);
- ``mesh2048``: 2048 samples of that mesh alone.

The mesh variants need no network beyond the base: they measure what a surface that interpolates
the coarse points gives, i.e. how much of the full clouds' 1-NNA is the upsampler's and how much
the coarse cloud's. ~10 min per mode at 20 per class on 2 threads.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import trimesh
from _results import eval_base_clouds, finish, parse_probe_args, probe_parser

from threed.mesh import points_to_mesh
from threed.metrics import one_nn_accuracy, pairwise_chamfer
from threed.pipeline import PROJECTIONS, PointsPipeline, upsample
from threed.world import SHAPES, ShapeWorld

COARSE, TOTAL = 512, 2048


def mesh_samples(coarse: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(n, 3) uniform surface samples of the mesh reconstructed from one coarse cloud (N, 6)."""
    mesh = points_to_mesh(coarse)
    pts, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return torch.from_numpy(np.asarray(pts, dtype=np.float32))


def main() -> None:
    ap = probe_parser(__doc__, per_class=20)
    ap.add_argument("--coarse", choices=("real", "generated"), default="real")
    args = parse_probe_args(ap)
    pipe = PointsPipeline.load(None, None)
    assert pipe.up_cfg is not None and pipe.upsampler is not None
    raw_cfg = dataclasses.replace(pipe.up_cfg, sample=dataclasses.replace(pipe.up_cfg.sample, project_k=0))
    st = pipe.settings()
    n = args.per_class
    t = time.perf_counter()
    rows: dict[str, dict[str, float]] = {}
    for k, shape in enumerate(SHAPES):
        ids = list(range(k * n, (k + 1) * n))
        with torch.no_grad():
            if args.coarse == "generated":
                coarse = eval_base_clouds(pipe, k, shape, n, st)
            else:
                coarse = ShapeWorld(COARSE, seed=777, classes=[shape]).sample(n, 0).points
            fine = upsample(pipe.upsampler, raw_cfg, coarse, TOTAL - COARSE, ids, seed=0)
        xyz = coarse[..., :3]
        sets = {
            "plane8": torch.cat([xyz, PROJECTIONS["plane"](fine, coarse, 8)[..., :3]], 1),
            "quadric12": torch.cat([xyz, PROJECTIONS["quadric"](fine, coarse, 12)[..., :3]], 1),
            "mesh1536": torch.stack(
                [torch.cat([xyz[i], mesh_samples(coarse[i], TOTAL - COARSE, i)]) for i in range(n)]
            ),
            "mesh2048": torch.stack([mesh_samples(coarse[i], TOTAL, i) for i in range(n)]),
        }
        ref = ShapeWorld(TOTAL, seed=4242, classes=[shape]).sample(n, 0).points[..., :3]
        d_rr = pairwise_chamfer(ref)
        rows[shape] = {}
        for name, full in sets.items():
            full = full.clamp(-1.5, 1.5)
            rows[shape][name] = one_nn_accuracy(pairwise_chamfer(full, ref), d_rr, pairwise_chamfer(full))
        print(f"{shape:9s} " + "  ".join(f"{m} {v:.3f}" for m, v in rows[shape].items()), flush=True)
    keys = list(next(iter(rows.values())))
    mean = {m: sum(r[m] for r in rows.values()) / len(rows) for m in keys}
    print("mean      " + "  ".join(f"{m} {v:.3f}" for m, v in mean.items()))
    result = {
        "coarse": args.coarse,
        "base": str(pipe.checkpoints[0]),
        "upsampler": str(pipe.checkpoints[1]),
        "per_class": n,
        "one_nna_cd": {"mean": mean, "classes": rows},
    }
    finish(args.out, result, t)


if __name__ == "__main__":
    main()
