"""Which part of the pipeline does 1-NNA-CD at 2048 points see? A quick split of the full metric.

    python benchmarks/points_nna_probe.py [--base FILE_OR_RUN_CKPT] [--upsampler ...] [--per-class 20]
        [--fits plane:8,quadric:12] [--renormalise] [--sampler S] [--steps N] [--sigma-max X]
        [--guidance G] [--up-start noise|coarse] [--up-sigma-max X] [--up-steps N] [--threads 2] [--out J]

Per class, ``per-class`` clouds from the canonical eval prompts (``threed.evaluate.eval_prompts``,
the same noise as ``extradim eval points --seed 0``): the base's 512 points, then the upsampler's
1536 drawn *once* without projection and projected by each ``--fits`` entry (``fit:k``, or
``none``), so the projections are compared on the same samples. Each full cloud set is scored by
1-NNA-CD against ``per-class`` real 2048-point clouds (world seed 4242); ``--renormalise`` also
scores each set after the world's normalisation (bbox centre 0, max radius 1) is re-applied.
``--sampler``, ``--steps``, ``--sigma-max`` and ``--guidance`` override the base's sampling
settings (default: the checkpoint's); ``--up-*`` the upsampler's (``PointsSampleConfig.start``).
20 per class takes ~3.5 min on 2 threads; the spread of a class mean at 20 vs 20 is several
points, of the 10-class mean ~2.5.

For the upsampler alone on *real* coarse clouds see ``points_upsampler_probe.py --nna-per-class``.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from _results import eval_base_clouds, finish, parse_probe_args, probe_parser, with_sample

from threed.cli import add_box_options, box_option
from threed.metrics import one_nn_accuracy, pairwise_chamfer
from threed.pipeline import PROJECTIONS, PointsPipeline, upsample
from threed.world import SHAPES, ShapeWorld

COARSE, TOTAL = 512, 2048


def project(fine: torch.Tensor, coarse: torch.Tensor, fit: str) -> torch.Tensor:
    if fit == "none":
        return fine
    name, k = fit.split(":")
    return PROJECTIONS[name](fine, coarse, int(k))


def renormalise(clouds: torch.Tensor) -> torch.Tensor:
    """The world's normalisation applied to generated clouds: bounding-box centre 0, max radius 1."""
    x = clouds - (clouds.amax(dim=1, keepdim=True) + clouds.amin(dim=1, keepdim=True)) / 2
    return x / x.norm(dim=-1).amax(dim=1)[:, None, None]


def main() -> None:
    ap = probe_parser(__doc__, per_class=20)
    ap.add_argument("--base", default=None, help="base checkpoint (default: the shipped one)")
    ap.add_argument("--upsampler", default=None, help="upsampler checkpoint (default: the shipped one)")
    ap.add_argument("--fits", default="plane:8,quadric:12", help="comma-separated fit:k or none")
    ap.add_argument("--renormalise", action="store_true", help="also score each fit renormalised (+renorm)")
    ap.add_argument("--sampler", default=None, help="base sampler (default: the checkpoint's)")
    ap.add_argument("--steps", type=int, default=None, help="base steps (default: the checkpoint's)")
    ap.add_argument(
        "--sigma-max", type=float, default=None, help="base Karras top sigma (default: checkpoint)"
    )
    ap.add_argument("--guidance", type=float, default=None, help="base CFG scale (default: the checkpoint's)")
    ap.add_argument("--up-start", choices=["noise", "coarse"], default=None, help="upsampler start")
    ap.add_argument("--up-sigma-max", type=float, default=None, help="upsampler Karras top sigma")
    ap.add_argument("--up-steps", type=int, default=None, help="upsampler steps")
    ap.add_argument("--guide", default=None, help="a weaker base checkpoint for autoguidance")
    ap.add_argument("--autoguidance", type=float, default=1.0, help="autoguidance scale (1: off)")
    add_box_options(ap)
    args = parse_probe_args(ap)
    fits = args.fits.split(",")
    keys = [*fits, *(f"{f}+renorm" for f in fits)] if args.renormalise else fits
    pipe = PointsPipeline.load(
        args.base, args.upsampler, guide=args.guide, autoguidance=args.autoguidance, box=box_option(args)
    )
    assert pipe.up_cfg is not None and pipe.upsampler is not None
    pipe.base_cfg = with_sample(pipe.base_cfg, sigma_max=args.sigma_max)
    raw_cfg = with_sample(
        pipe.up_cfg, project_k=0, start=args.up_start, sigma_max=args.up_sigma_max, steps=args.up_steps
    )
    st = pipe.settings(steps=args.steps, guidance=args.guidance, sampler=args.sampler)
    n = args.per_class
    t = time.perf_counter()
    rows: dict[str, dict[str, float]] = {}
    for k, shape in enumerate(SHAPES):
        ids = list(range(k * n, (k + 1) * n))
        coarse = eval_base_clouds(pipe, k, shape, n, st)
        with torch.no_grad():
            fine = upsample(pipe.upsampler, raw_cfg, coarse, TOTAL - COARSE, ids, seed=0)
        ref = ShapeWorld(TOTAL, seed=4242, classes=[shape]).sample(n, 0).points[..., :3]
        d_rr = pairwise_chamfer(ref)
        rows[shape] = {}
        for fit in fits:
            full = torch.cat([coarse, project(fine, coarse, fit)], dim=1)[..., :3].clamp(-1.5, 1.5)
            rows[shape][fit] = one_nn_accuracy(pairwise_chamfer(full, ref), d_rr, pairwise_chamfer(full))
            if args.renormalise:
                full = renormalise(full)
                d_gr, d_gg = pairwise_chamfer(full, ref), pairwise_chamfer(full)
                rows[shape][f"{fit}+renorm"] = one_nn_accuracy(d_gr, d_rr, d_gg)
        print(f"{shape:9s} " + "  ".join(f"{f} {rows[shape][f]:.3f}" for f in keys), flush=True)
    mean = {f: sum(r[f] for r in rows.values()) / len(SHAPES) for f in keys}
    print("mean      " + "  ".join(f"{f} {v:.3f}" for f, v in mean.items()))
    result = {
        "box": str(pipe.box_checkpoint) if pipe.box_checkpoint else None,
        "base": str(pipe.checkpoints[0]),
        "upsampler": str(pipe.checkpoints[1]),
        "per_class": n,
        "settings": st,
        "upsampler_sample": dataclasses.asdict(raw_cfg.sample),
        "guide": args.guide,
        "autoguidance": args.autoguidance,
        "one_nna_cd": {"mean": mean, "classes": rows},
    }
    finish(args.out, result, t)


if __name__ == "__main__":
    main()
