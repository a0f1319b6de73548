"""Sampling settings of the points pipeline, compared on class accuracy, size and MMD-CD.

    python benchmarks/points_guidance.py --classes mug dumbbell cube table --per-class 12 \
        --settings 1:0 2:0 2:0.7 3:0.7 [--base CKPT]

Each setting is ``guidance:rescale[:sampler:steps]`` (CFG scale s, guidance-rescale phi, and
optionally the base sampler and its step count; default the checkpoint's). Class accuracy is the
eval's nearest-class Chamfer check against reference clouds of **all ten** shapes (the eval's
protocol), so a subset of prompted classes does not make the check easier. ``radius ratio`` is the
mean distance of generated points from the centre over that of real clouds (CFG inflates clouds).
Writes ``benchmarks/results/points_guidance.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from threed.cli import add_box_options, box_option  # noqa: E402
from threed.evaluate import _subsample, eval_prompts, nearest_class, reference_seed  # noqa: E402
from threed.metrics import mmd_cov, pairwise_chamfer  # noqa: E402
from threed.pipeline import PointsPipeline  # noqa: E402
from threed.world import SHAPES, ShapeWorld  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", nargs="+", default=list(SHAPES))
    ap.add_argument("--per-class", type=int, default=12)
    ap.add_argument("--settings", nargs="+", default=["1:0", "2:0.7"])
    ap.add_argument("--base", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-points", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/points_guidance.json")
    add_box_options(ap)
    args = ap.parse_args()

    pipe = PointsPipeline.load(args.base, box=box_option(args))
    ref_seed = reference_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    protos = {
        s: _subsample(
            ShapeWorld(args.num_points, seed=ref_seed, classes=[s]).sample(10, 0).points[..., :3], 512, g
        )
        for s in SHAPES
    }
    reals = {
        s: ShapeWorld(args.num_points, seed=ref_seed, classes=[s]).sample(args.per_class, 1).points
        for s in args.classes
    }
    results = []
    for setting in args.settings:
        parts = setting.split(":")
        guidance, rescale = float(parts[0]), float(parts[1])
        sampler, steps = (parts[2], int(parts[3])) if len(parts) == 4 else (None, None)
        row: dict = {
            "guidance": guidance,
            "rescale": rescale,
            "sampler": sampler,
            "steps": steps,
            "per_class": {},
        }
        t0 = time.perf_counter()
        for k, shape in enumerate(args.classes):
            prompts = [p for _, p in eval_prompts(shape, args.per_class)]
            gen = pipe.generate(
                prompts, seed=args.seed, num_points=args.num_points, guidance=guidance,
                guidance_rescale=rescale, first_index=k * args.per_class, sampler=sampler, steps=steps,
            )  # fmt: skip
            xyz = gen[..., :3]
            nearest = nearest_class(_subsample(xyz, 512, g), protos)
            real = reals[shape][..., :3]
            mmd, cov = mmd_cov(pairwise_chamfer(_subsample(xyz, 1024, g), _subsample(real, 1024, g)))
            row["per_class"][shape] = {
                "class_accuracy": float(np.mean([n == shape for n in nearest])),
                "confused_with": {n: nearest.count(n) for n in set(nearest) if n != shape},
                "radius_ratio": float(xyz.norm(dim=-1).mean() / real.norm(dim=-1).mean()),
                "mmd_cd": mmd,
                "cov_cd": cov,
            }
        pc = row["per_class"].values()
        row["class_accuracy"] = float(np.mean([v["class_accuracy"] for v in pc]))
        row["radius_ratio"] = float(np.mean([v["radius_ratio"] for v in pc]))
        row["mmd_cd"] = float(np.mean([v["mmd_cd"] for v in pc]))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_class"}), flush=True)
        print(
            "   ",
            {s: (v["class_accuracy"], v["confused_with"]) for s, v in row["per_class"].items()},
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
