"""How close to the surface does the upsampler put its points? The upsampler alone, on real coarse clouds.

    python benchmarks/points_upsampler_probe.py [--upsampler FILE_OR_RUN_CHECKPOINT] [--per-class 4]

For each shape: ``per-class`` objects of the shape world (seed 777, unseen in training), each
sampled with 512 + 4096 + 1536 points; the first 512 are the coarse cloud the upsampler is
conditioned on, the next 4096 stand in for the true surface, the last 1536 are the real floor. The
upsampler draws 1536 extra points (the default 2048-point cloud), clamped to +-1.5 as
``PointsPipeline.generate`` does. Reported per class and overall:

- ``acc``: mean distance from a generated point to the nearest surface point (lower is better);
- ``comp``: mean distance from a surface point to the nearest generated point (coverage);
- ``far``: fraction of generated points farther than 0.05 from the surface;
- the same three for 1536 fresh real surface samples of the same objects (``real_*``: the floor).

This isolates the upsampler from the base model: a perfect upsampler matches the real floor.

With ``--nna-per-class N`` (e.g. 20) also the distribution view, as ``extradim eval points`` sees
it: per class, N objects (seed 777) as 512 real coarse points + the upsampler's 1536 vs N real
2048-point clouds (seed 4242), 1-NNA-CD (``nna``), next to the same for the objects' own real 2048
points (``real_nna``, ideally 50%).
"""

from __future__ import annotations

import time

import torch
from _results import finish, parse_probe_args, probe_parser, with_sample

from shared_core.pretrained import load_pretrained
from threed.metrics import one_nn_accuracy, pairwise_chamfer
from threed.modality import PointsConfig, PointsModel
from threed.pipeline import DEFAULT_UPSAMPLER, PROJECTIONS, upsample
from threed.world import SHAPES, ShapeWorld

COARSE, EXTRA, SURFACE = 512, 1536, 4096


def nn_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N) distance from each point of ``a`` (B, N, 3) to its nearest neighbour in ``b`` (B, M, 3)."""
    return torch.cdist(a, b).min(dim=2).values


def probe(model: PointsModel, cfg: PointsConfig, per_class: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k, shape in enumerate(SHAPES):
        pts = ShapeWorld(COARSE + SURFACE + EXTRA, seed=777, classes=[shape]).sample(per_class, 0).points
        coarse, surface, real = pts[:, :COARSE], pts[:, COARSE : COARSE + SURFACE, :3], pts[:, -EXTRA:, :3]
        ids = list(range(k * per_class, (k + 1) * per_class))
        with torch.no_grad():
            fine = upsample(model, cfg, coarse, EXTRA, ids, seed=0)[..., :3].clamp(-1.5, 1.5)
        row = {}
        for name, x in (("", fine), ("real_", real)):
            d = nn_dist(x, surface)
            row[f"{name}acc"] = float(d.mean())
            row[f"{name}comp"] = float(nn_dist(surface, x).mean())
            row[f"{name}far"] = float((d > 0.05).float().mean())
        out[shape] = row
    keys = next(iter(out.values())).keys()
    out["mean"] = {key: sum(r[key] for r in out.values()) / len(SHAPES) for key in keys}
    return out


def nna_probe(model: PointsModel, cfg: PointsConfig, n: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k, shape in enumerate(SHAPES):
        objects = ShapeWorld(COARSE + EXTRA, seed=777, classes=[shape]).sample(n, 0).points
        ref = ShapeWorld(COARSE + EXTRA, seed=4242, classes=[shape]).sample(n, 0).points[..., :3]
        coarse = objects[:, :COARSE]
        with torch.no_grad():
            fine = upsample(model, cfg, coarse, EXTRA, list(range(k * n, (k + 1) * n)), seed=0)
        full = torch.cat([coarse, fine], dim=1)[..., :3].clamp(-1.5, 1.5)
        d_rr = pairwise_chamfer(ref)
        row = {}
        for name, x in (("", full), ("real_", objects[..., :3])):
            row[f"{name}nna"] = one_nn_accuracy(pairwise_chamfer(x, ref), d_rr, pairwise_chamfer(x))
        out[shape] = row
    out["mean"] = {key: sum(r[key] for r in out.values()) / len(SHAPES) for key in ("nna", "real_nna")}
    return out


def main() -> None:
    ap = probe_parser(__doc__, per_class=4)
    ap.add_argument("--upsampler", default=str(DEFAULT_UPSAMPLER))
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the checkpoint's)")
    ap.add_argument(
        "--sigma-max", type=float, default=None, help="Karras top level (default: the checkpoint's)"
    )
    ap.add_argument(
        "--project-k", type=int, default=None, help="upsampler's plane projection (default: the checkpoint's)"
    )
    ap.add_argument(
        "--project-fit",
        choices=sorted(PROJECTIONS),
        default=None,
        help="projection surface (default: the checkpoint's)",
    )
    ap.add_argument(
        "--start",
        choices=["noise", "coarse"],
        default=None,
        help="start from pure noise or from the coarse points plus noise (default: the checkpoint's)",
    )
    ap.add_argument(
        "--nna-per-class", type=int, default=0, help="also 1-NNA-CD at 2048 points on N objects per class"
    )
    args = parse_probe_args(ap)
    model, cfg, path = load_pretrained(args.upsampler, PointsConfig, PointsModel)
    if cfg.model.stage != "upsampler":
        raise SystemExit(f"{args.upsampler} is a {cfg.model.stage} checkpoint, not an upsampler")
    cfg = with_sample(
        cfg,
        steps=args.steps,
        project_k=args.project_k,
        project_fit=args.project_fit,
        sigma_max=args.sigma_max,
        start=args.start,
    )
    model = model.eval()
    t = time.perf_counter()
    result = {
        "upsampler": str(path),
        "steps": cfg.sample.steps,
        "sampler": cfg.sample.sampler,
        "sigma_max": cfg.sample.sigma_max,
        "project_k": cfg.sample.project_k,
        "project_fit": cfg.sample.project_fit,
        "start": cfg.sample.start,
        "per_class": args.per_class,
        "classes": probe(model, cfg, args.per_class),
    }
    if args.nna_per_class:
        result["nna_per_class"] = args.nna_per_class
        result["nna"] = nna_probe(model, cfg, args.nna_per_class)
    for shape, r in result["classes"].items():
        print(
            f"{shape:9s} acc {r['acc']:.4f} comp {r['comp']:.4f} far {r['far']:.3f} | "
            f"real {r['real_acc']:.4f} {r['real_comp']:.4f} {r['real_far']:.3f}"
        )
    for shape, r in result.get("nna", {}).items():
        print(f"{shape:9s} 1-NNA-CD {r['nna']:.3f} | real {r['real_nna']:.3f}")
    finish(args.out, result, t)


if __name__ == "__main__":
    main()
