"""Sampler benchmarks (a command, not a test).

1. Per-step overhead of our samplers vs diffusers' ``scheduler.step`` on the same tensors and the
   same (trivial) network, measured side by side in one run: ratio ours / diffusers.
2. Sample quality vs number of steps on the 2-D ring mixture, with the exact denoiser and with a
   small trained denoiser: sliced Wasserstein-2 to 20k true samples, per sampler and step count.

    python benchmarks/bench_samplers.py --out benchmarks/results/samplers.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from shared_core.denoiser import NetworkDenoiser
from shared_core.diffusion import diffusion_loss
from shared_core.random import make_generator, randn
from shared_core.samplers import get_sampler
from shared_core.schedules import DiscreteSchedule
from shared_core.toy import ring_mixture, sliced_wasserstein

# ----------------------------------------------------------------------------------------------
# 1. per-step overhead vs diffusers
# ----------------------------------------------------------------------------------------------


def tiny_net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.3 * x


def _run_diffusers(sched, z: torch.Tensor, steps: int, stochastic: bool) -> torch.Tensor:
    sched.set_timesteps(steps)
    x, g = z * sched.init_noise_sigma, make_generator(1)
    for t in sched.timesteps:
        out = tiny_net(sched.scale_model_input(x, t), t)
        x = sched.step(out, t, x, **({"generator": g} if stochastic else {})).prev_sample
    return x


def overhead(shape: tuple[int, ...], steps: int, repeats: int) -> list[dict]:
    import diffusers

    cfg = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    cases = [
        (
            "ddim",
            diffusers.DDIMScheduler(**cfg, clip_sample=False, timestep_spacing="trailing"),
            "trailing",
            {},
        ),
        (
            "ddpm",
            diffusers.DDPMScheduler(**cfg, clip_sample=False, timestep_spacing="trailing"),
            "trailing",
            {},
        ),
        (
            "dpmpp_2m",
            diffusers.DPMSolverMultistepScheduler(**cfg, timestep_spacing="trailing"),
            "trailing",
            {},
        ),
        ("euler", diffusers.EulerDiscreteScheduler(**cfg), "linspace", {}),
        ("heun", diffusers.HeunDiscreteScheduler(**cfg), "linspace", {}),
    ]
    rows = []
    for name, sched, spacing, kw in cases:
        ours_sched = DiscreteSchedule.from_alphas_cumprod(sched.alphas_cumprod)
        den = NetworkDenoiser(tiny_net, ours_sched)
        sigmas = ours_sched.sigmas(steps, spacing)
        z = randn(shape, make_generator(0))
        nfe = 2 * steps - 1 if name == "heun" else steps

        fns = {
            "diffusers": functools.partial(_run_diffusers, sched, z, steps, name == "ddpm"),
            "ours": functools.partial(get_sampler(name), den, z, sigmas, generator=make_generator(1), **kw),
        }
        times = {"ours": [], "diffusers": []}
        for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
            for key, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        ours_ms = sorted(times["ours"])[len(times["ours"]) // 2] / nfe * 1e3
        theirs_ms = sorted(times["diffusers"])[len(times["diffusers"]) // 2] / nfe * 1e3
        rows.append(
            {
                "sampler": name,
                "ours_ms_per_eval": ours_ms,
                "diffusers_ms_per_eval": theirs_ms,
                "ratio": ours_ms / theirs_ms,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------
# 2. quality vs steps on the 2-D mixture
# ----------------------------------------------------------------------------------------------


class MLPDenoiserNet(nn.Module):
    """A small eps-network for 2-D points: MLP on (x, sinusoidal t)."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.freqs = torch.exp(-math.log(1000.0) * torch.arange(16) / 16)
        self.net = nn.Sequential(
            nn.Linear(2 + 32, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, 2),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ang = t[:, None].float() * self.freqs[None]
        return self.net(torch.cat([x, ang.sin(), ang.cos()], dim=1))


def train_small(schedule: DiscreteSchedule, steps: int, seed: int = 0) -> NetworkDenoiser:
    torch.manual_seed(seed)
    mix, net = ring_mixture(), MLPDenoiserNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = make_generator(seed)
    for _ in range(steps):
        x0 = mix.sample(1024, g)
        loss = diffusion_loss(net, x0, schedule, prediction="eps", generator=g).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return NetworkDenoiser(net, schedule, "eps")


SAMPLER_KW = {"langevin": {"steps_per_level": 5}, "pc": {"snr": 0.05}}


def quality(
    denoiser, schedule: DiscreteSchedule, n: int, step_counts: list[int], samplers: list[str]
) -> dict:
    mix = ring_mixture()
    truth = mix.sample(n, make_generator(123))
    floor = sliced_wasserstein(mix.sample(n, make_generator(456)), truth)
    table: dict[str, dict[int, float]] = {}
    for name in samplers:
        table[name] = {}
        for steps in step_counts:
            if name == "langevin" and steps > 100:
                continue  # 5 Langevin steps per level: 1000 levels is 5000 evaluations
            sigmas = schedule.sigmas(steps, "leading" if name == "ode" else "trailing")
            x = randn((n, 2), make_generator(0)) * schedule.prior_std(sigmas[0]).float()
            with torch.no_grad():
                out = get_sampler(name)(
                    denoiser, x, sigmas, generator=make_generator(1), **SAMPLER_KW.get(name, {})
                )
            table[name][steps] = sliced_wasserstein(out.float(), truth)
            if name == "ode":
                break  # adaptive: the step count does not apply
    return {"floor": floor, "table": table}


def markdown(title: str, res: dict, step_counts: list[int]) -> str:
    lines = [
        f"**{title}** (sliced W2 to true samples; real-vs-real floor {res['floor']:.4f})",
        "",
        "| sampler | " + " | ".join(str(s) for s in step_counts) + " |",
        "|---|" + "---|" * len(step_counts),
    ]
    for name, row in res["table"].items():
        cells = [f"{row[s]:.4f}" if s in row else "–" for s in step_counts]
        if name == "ode":
            cells = [f"{next(iter(row.values())):.4f} (adaptive)"] + [""] * (len(step_counts) - 1)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks/results/samplers.json")
    ap.add_argument("--n", type=int, default=10000, help="samples per quality cell")
    ap.add_argument("--train-steps", type=int, default=10000)
    ap.add_argument("--n-headline", type=int, default=50000, help="samples for the DPM-20 vs DDPM-1000 ratio")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer cells, for a smoke run")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    step_counts = [5, 10, 20] if args.quick else [5, 10, 20, 50, 100, 1000]
    samplers = [
        "ddpm",
        "ddim",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "euler",
        "heun",
        "euler_ancestral",
        "euler_maruyama",
        "pc",
        "langevin",
        "ode",
    ]
    result: dict = {"threads": torch.get_num_threads()}

    rows = overhead((4, 4, 64, 64), steps=20, repeats=args.repeats)
    result["overhead"] = rows
    print("| sampler | ours ms/eval | diffusers ms/eval | ratio |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sampler']} | {r['ours_ms_per_eval']:.3f} | {r['diffusers_ms_per_eval']:.3f} "
            f"| {r['ratio']:.2f} |"
        )

    schedule = DiscreteSchedule.from_name("linear")
    exact = quality(ring_mixture().denoiser, schedule, args.n, step_counts, samplers)
    t0 = time.perf_counter()
    trained = train_small(schedule, 300 if args.quick else args.train_steps)
    train_s = time.perf_counter() - t0
    learned = quality(trained, schedule, args.n, step_counts, samplers)
    result.update(exact=exact, trained=learned, trained_seconds=train_s)
    for title, res in (
        ("exact denoiser", exact),
        (f"trained MLP denoiser ({train_s:.0f} s training)", learned),
    ):
        print()
        print(markdown(title, res, step_counts))
    # The goal's ratio, on more samples: at 10k both cells sit near the real-vs-real floor
    for key, den in (("exact", ring_mixture().denoiser), ("trained", trained)):
        if args.quick:
            break
        head = quality(den, schedule, args.n_headline, [20, 1000], ["ddpm", "dpmpp_2m"])
        ratio = head["table"]["dpmpp_2m"][20] / head["table"]["ddpm"][1000]
        result[key]["headline"] = {**head, "dpmpp_2m_20_over_ddpm_1000": ratio}
        print(
            f"\n{key}: n={args.n_headline}: DPM-Solver++(2M) 20 steps {head['table']['dpmpp_2m'][20]:.4f}, "
            f"DDPM 1000 steps {head['table']['ddpm'][1000]:.4f}, floor {head['floor']:.4f}: "
            f"ratio {ratio:.3f} (goal <= 1.15)"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
