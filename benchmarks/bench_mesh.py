"""Mesh reconstruction benchmark (a command, not a test): ``threed.mesh.points_to_mesh`` on clean
clouds of every shape-world class, against the exact solid (``ground_truth_mesh``).

Per class and cloud size: Chamfer distance between the reconstructed and the true surface
(exact point-to-surface squared distances from 5000 area samples of each, both ways, summed; no
sampling floor), the fraction of meshes watertight, with the expected number of bodies (1) and
the expected genus (1 for torus and mug, else 0), and the seconds per mesh.

    python benchmarks/bench_mesh.py --out benchmarks/results/mesh.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import trimesh

from shared_core.io import write_json
from threed.mesh import MeshConfig, points_to_mesh
from threed.world import SHAPES, ShapeWorld, ground_truth_mesh

GENUS = {"torus": 1, "mug": 1}


def surface_chamfer(a: trimesh.Trimesh, b: trimesh.Trimesh, samples: int = 5000, seed: int = 0) -> float:
    """Mean squared distance from area samples of each surface to the other surface, summed."""
    total = 0.0
    for src, dst in ((a, b), (b, a)):
        pts, _ = trimesh.sample.sample_surface(src, samples, seed=seed)
        total += float(np.mean(trimesh.proximity.closest_point(dst, pts)[1] ** 2))
    return total


def bench_class(shape: str, num_points: int, items: int, seed: int, cfg: MeshConfig) -> dict:
    batch = ShapeWorld(num_points=num_points, seed=seed, classes=[shape]).sample(items, 0)
    rows = []
    for points, params in zip(batch.points, batch.params):
        start = time.perf_counter()
        mesh = points_to_mesh(points, cfg)
        seconds = time.perf_counter() - start
        truth = ground_truth_mesh(shape, "white", params)
        rows.append(
            {
                "chamfer": surface_chamfer(mesh, truth),
                "watertight": mesh.is_watertight,
                "bodies": mesh.body_count,
                "genus": (2 - mesh.euler_number) // 2 if mesh.body_count == 1 else None,
                "seconds": seconds,
            }
        )
    return {
        "chamfer_mean": float(np.mean([r["chamfer"] for r in rows])),
        "chamfer_max": float(np.max([r["chamfer"] for r in rows])),
        "watertight": float(np.mean([r["watertight"] for r in rows])),
        "one_body": float(np.mean([r["bodies"] == 1 for r in rows])),
        "genus_right": float(np.mean([r["genus"] == GENUS.get(shape, 0) for r in rows])),
        "seconds_mean": float(np.mean([r["seconds"] for r in rows])),
        "seconds_max": float(np.max([r["seconds"] for r in rows])),
        "items": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--items", type=int, default=8, help="clouds per class and size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=MeshConfig.resolution)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/mesh.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = MeshConfig(resolution=args.resolution)

    results: dict[str, dict] = {}
    print(f"{'class':9s} {'points':>6s} {'chamfer':>9s} {'max':>9s} {'watertight':>10s} {'1 body':>7s} "
          f"{'genus':>6s} {'s/mesh':>7s} {'max s':>6s}")  # fmt: skip
    for num_points in args.points:
        for shape in SHAPES:
            r = bench_class(shape, num_points, args.items, args.seed, cfg)
            results[f"{shape}@{num_points}"] = r
            print(f"{shape:9s} {num_points:6d} {r['chamfer_mean']:9.2e} {r['chamfer_max']:9.2e} "
                  f"{r['watertight']:10.0%} {r['one_body']:7.0%} {r['genus_right']:6.0%} "
                  f"{r['seconds_mean']:7.2f} {r['seconds_max']:6.2f}", flush=True)  # fmt: skip
    write_json(args.out, {"config": vars(cfg), "args": vars(args), "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
