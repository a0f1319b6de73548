"""Is the upsampler's thick shell the network's or the sampler's? One-step and sampled errors of the
shipped upsampler against the Bayes-optimal denoiser that knows the true surface.

    python benchmarks/points_sampling_probe.py [--per-class 1] [--threads 2] [--out FILE]

Objects of the shape world (seed 777, unseen in training): 512 coarse points (the condition),
4096 points standing in for the true surface, 512 held-out real points. The *oracle* is the
posterior mean of x0 given x = x0 + sigma eps when x0 is uniform over the 4096 surface points (a
softmax over them): the best any denoiser can do knowing the object.

1. One step: mean distance to the surface of x (noisy), of the upsampler's x0-hat and of the
   oracle's, at several sigma.
2. Sampled: 512 points drawn with the upsampler's sampler through Karras grids topped at the
   schedule's sigma_max (20291 for the discrete cosine) or lower, 12 and 25 steps; and the oracle
   through the same sampler (it shows whether the grid and sampler code can reach the surface).
"""

from __future__ import annotations

import dataclasses
import time

import torch
from _results import parse_probe_args, probe_parser, save_result
from torch import Tensor

from shared_core.denoiser import NetworkDenoiser
from shared_core.pretrained import load_pretrained
from shared_core.random import make_generator, randn
from shared_core.samplers import get_sampler
from shared_core.schedules import karras_sigmas
from shared_core.train.loop import build_schedule
from threed.modality import PointsConfig, PointsModel
from threed.pipeline import DEFAULT_UPSAMPLER, upsample
from threed.world import SHAPES, ShapeWorld


def surface_distance(x: Tensor, surface: Tensor) -> float:
    return float(torch.cdist(x[..., :3], surface[..., :3]).min(-1).values.mean())


class Oracle(torch.nn.Module):
    """E[x0 | x] for x0 uniform over ``surface (B, S, 6)`` and x = x0 + sigma eps (VE)."""

    def __init__(self, surface: Tensor) -> None:
        super().__init__()
        self.surface = surface

    def forward(self, x: Tensor, sigma: Tensor, **_: Tensor) -> Tensor:
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1)[:, None, None].expand(len(x), 1, 1)
        d2 = torch.cdist(x, self.surface) ** 2  # all 6 channels
        return torch.softmax(-d2 / (2 * s**2), dim=-1) @ self.surface


def main() -> None:
    ap = probe_parser(__doc__, per_class=1)
    ap.add_argument("--upsampler", default=str(DEFAULT_UPSAMPLER))
    args = parse_probe_args(ap)
    model, cfg, _ = load_pretrained(args.upsampler, PointsConfig, PointsModel)
    model = model.eval()
    pts = (
        ShapeWorld(512 + 4096 + 512, seed=777, classes=list(SHAPES))
        .sample(args.per_class * len(SHAPES), 0)
        .points
    )
    coarse, surface, real = pts[:, :512], pts[:, 512:4608], pts[:, 4608:]
    schedule = build_schedule(cfg.diffusion)
    net = NetworkDenoiser(model, schedule, cfg.diffusion.prediction)
    oracle = Oracle(surface)
    result: dict = {
        "upsampler": args.upsampler,
        "clouds": len(pts),
        "real_floor": surface_distance(real, surface),
    }
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    one = []
    with torch.no_grad():
        for s in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0):
            x = real + s * torch.randn(real.shape, generator=g)
            sig = torch.full((len(x),), s)
            row = {"sigma": s, "noisy": surface_distance(x, surface),
                   "model": surface_distance(net(x, sig, coarse=coarse), surface),
                   "oracle": surface_distance(oracle(x, sig), surface)}  # fmt: skip
            one.append(row)
            print(
                f"one step sigma {s:4.2f}: "
                + ", ".join(f"{k} {row[k]:.4f}" for k in ("noisy", "model", "oracle"))
            )
    result["one_step"] = one
    sampled = []
    ids = list(range(len(pts)))
    with torch.no_grad():
        for top in (schedule.sigma_max, 80.0, 10.0):
            for steps in (12, 25):
                sigmas = karras_sigmas(steps, schedule.sigma_min, top)
                noise = torch.stack([randn((512, 6), make_generator(i)) for i in ids])
                x = noise * float(schedule.prior_std(sigmas[0]))
                gens = [make_generator(100 + i) for i in ids]
                out = get_sampler(cfg.sample.sampler)(
                    net, x, sigmas, extra_args={"coarse": coarse}, generator=gens
                )
                row = {
                    "sigma_max": round(float(top), 1),
                    "steps": steps,
                    "model": surface_distance(out, surface),
                }
                if steps == 12:
                    gens = [make_generator(100 + i) for i in ids]
                    row["oracle"] = surface_distance(
                        get_sampler(cfg.sample.sampler)(oracle, x, sigmas, generator=gens), surface
                    )
                sampled.append(row)
                print(
                    f"sampled {cfg.sample.sampler} sigma_max {top:8.1f} x{steps}: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k in ("model", "oracle"))
                )
        shipped = dataclasses.replace(
            cfg, sample=dataclasses.replace(cfg.sample, sigma_max=10.0, project_k=8)
        )
        proj = upsample(model, shipped, coarse, 512, ids, seed=0)
    result["sampled"] = sampled
    result["sigma10_project8"] = surface_distance(proj, surface)
    projected = result["sigma10_project8"]
    print(f"sigma_max 10 x{cfg.sample.steps} + projection onto 8 coarse neighbours: {projected:.4f}")
    print(f"real floor {result['real_floor']:.4f}; {time.perf_counter() - t0:.0f} s")
    save_result(args.out, result)


if __name__ == "__main__":
    main()
