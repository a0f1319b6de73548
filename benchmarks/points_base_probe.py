"""How good are a base model's coarse clouds? Class accuracy and PointFlow metrics at 512 points.

    python benchmarks/points_base_probe.py [--base FILE_OR_RUN_CHECKPOINT] [--upsampler FILE] [--per-class 10]

For each shape, ``per-class`` clouds from the evaluation prompts (``threed.evaluate.eval_prompts``,
seed 0, the checkpoint's sampling defaults) against ``per-class`` real clouds of the evaluation's
reference world:

- ``class``: nearest-class Chamfer among the ten shapes (10 real clouds per class), as
  ``extradim eval points`` does, but on the coarse cloud alone;
- ``1nna`` / ``cov`` / ``mmd``: 1-NNA-CD, COV-CD and MMD-CD of the coarse clouds vs real 512-point
  clouds (ideal 1-NNA 50%), with the real-vs-real values;
- with ``--upsampler``: the same 1-NNA on the full 2048-point clouds (``1nna_full``).

Much smaller than the full evaluation (10 vs 50 per class: the 1-NNA figures are noisy, +-10
points), it separates the base from the upsampler in a few minutes.
"""

from __future__ import annotations

import time

import torch
from _results import finish, parse_probe_args, probe_parser, with_sample

from shared_core.errors import ExtradimError
from threed.cli import add_box_options, box_option
from threed.evaluate import eval_prompts, nearest_class, reference_seed
from threed.metrics import compute_all_metrics
from threed.pipeline import DEFAULT_BASE, PROJECTIONS, PointsPipeline
from threed.world import SHAPES, ShapeWorld

COARSE, FULL = 512, 2048


def probe(pipe: PointsPipeline, per_class: int, full: bool, **settings: float) -> dict[str, dict[str, float]]:
    gens, refs = {}, {}
    for k, shape in enumerate(SHAPES):
        prompts = [p for _, p in eval_prompts(shape, per_class)]
        n = FULL if full else COARSE
        gens[shape] = pipe.generate(prompts, seed=0, num_points=n, first_index=k * per_class, **settings)[
            ..., :3
        ]
        world = ShapeWorld(FULL, seed=reference_seed(0), classes=[shape])
        refs[shape] = (world.sample(per_class, 0).points[..., :3], world.sample(per_class, 1).points[..., :3])
    protos = {s: refs[s][0][:10, :COARSE] for s in SHAPES}
    out: dict[str, dict[str, float]] = {}
    for shape in SHAPES:
        coarse = gens[shape][:, :COARSE]
        a, b = refs[shape][0][:, :COARSE], refs[shape][1][:, :COARSE]
        gen, real = compute_all_metrics(coarse, a, with_emd=False), compute_all_metrics(b, a, with_emd=False)
        row = {
            "class": sum(c == shape for c in nearest_class(coarse, protos)) / per_class,
            "1nna": gen["1-NNA-CD"],
            "cov": gen["COV-CD"],
            "mmd": gen["MMD-CD"],
            "real_1nna": real["1-NNA-CD"],
            "real_cov": real["COV-CD"],
            "real_mmd": real["MMD-CD"],
        }
        if full:
            row["1nna_full"] = compute_all_metrics(gens[shape], refs[shape][0], with_emd=False)["1-NNA-CD"]
        out[shape] = row
    keys = next(iter(out.values())).keys()
    out["mean"] = {key: sum(r[key] for r in out.values()) / len(SHAPES) for key in keys}
    return out


def main() -> None:
    ap = probe_parser(__doc__, per_class=10)
    ap.add_argument("--base", default=str(DEFAULT_BASE))
    ap.add_argument("--upsampler", default=None, help="also measure the full 2048-point clouds")
    ap.add_argument("--text-encoder", default=None, help="default: the checkpoint's")
    ap.add_argument(
        "--sigma-max",
        type=float,
        default=None,
        help="Karras top level for both stages (default: the checkpoints')",
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
    ap.add_argument("--steps", type=int, default=None, help="base steps (default: the checkpoint's)")
    ap.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the checkpoint's)")
    ap.add_argument("--guidance-rescale", type=float, default=None)
    add_box_options(ap)
    args = parse_probe_args(ap)
    try:
        pipe = PointsPipeline.load(
            args.base, args.upsampler, text_encoder=args.text_encoder, box=box_option(args)
        )
    except ExtradimError as exc:
        raise SystemExit(f"error: {exc}") from None
    path, cfg = pipe.checkpoints[0], with_sample(pipe.base_cfg, sigma_max=args.sigma_max)
    pipe.base_cfg = cfg
    up_cfg = None
    if args.upsampler and pipe.up_cfg is not None:
        up_cfg = with_sample(
            pipe.up_cfg, sigma_max=args.sigma_max, project_k=args.project_k, project_fit=args.project_fit
        )
        pipe.up_cfg = up_cfg
    else:  # the coarse clouds alone
        pipe.upsampler = pipe.up_cfg = None
    t = time.perf_counter()
    with torch.no_grad():
        st = {"steps": args.steps, "guidance": args.guidance, "guidance_rescale": args.guidance_rescale}
        full = pipe.upsampler is not None
        rows = probe(pipe, args.per_class, full=full, **{k: v for k, v in st.items() if v is not None})
    result = {"base": str(path), "upsampler": args.upsampler, "per_class": args.per_class,
              "sigma_max": cfg.sample.sigma_max, "steps": args.steps,
              "guidance": args.guidance, "guidance_rescale": args.guidance_rescale,
              "project_k": up_cfg.sample.project_k if up_cfg else None,
              "project_fit": up_cfg.sample.project_fit if up_cfg else None, "classes": rows}  # fmt: skip
    for shape, r in rows.items():
        print(f"{shape:9s} " + " ".join(f"{k} {v:.3f}" for k, v in r.items()))
    finish(args.out, result, t)


if __name__ == "__main__":
    main()
