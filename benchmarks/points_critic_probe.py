"""Can a real-vs-generated critic pick better coarse clouds? Importance resampling of K base draws.

    python benchmarks/points_critic_probe.py [--base FILE_OR_RUN_CKPT] [--train-per-class 100]
        [--candidates 4] [--per-class 20] [--threads 2] [--out J]

Discriminator rejection sampling (Azadi et al. 2019; discriminator guidance, Kim et al. 2023, is
its gradient form): a classifier ``D`` of real against generated clouds estimates the density
ratio ``p / q = D / (1 - D)``, and drawing one of K generated samples with weights proportional
to it moves the draw from ``q`` towards ``p``.

1. The base draws ``train-per-class`` coarse clouds per class in its own azimuth frame (before the
   random turn) from world-seed-777 captions with pipeline seed 777 (never the evaluation's noise);
   a world of seed 778 gives twice as many real 512-point clouds, turned back to their frame.
2. The critic: an MLP on hand-made, translation-free features (per-axis, XY-radius and radius
   quantiles, per-axis extremes, an 8-bin vertical profile of count and XY radius, quantiles of the
   8th-neighbour distance), trained on 80% and scored on 20% (balanced accuracy, per class, and
   per feature group: what separates generated from real), then refitted on all.
3. For the ``per-class`` canonical eval prompts of each class the base draws K candidates
   (candidate 0 is the evaluation's own draw, j > 0 pipeline seed j), one is drawn with
   probabilities softmax(critic logits), then turned and upsampled as the pipeline does; 1-NNA-CD
   at 2048 points against world-seed-4242 clouds as in ``points_nna_probe.py`` (quadric:12), for
   candidate 0 alone and for the resampled draw.

Also printed, from the same training draws: the bumps of generated spheres split into the part
shared by all clouds (a fixed function of direction) and the part each cloud draws on its own.
~15 min on 2 threads at the defaults (7 min of it drawing the critic's training clouds).
"""

from __future__ import annotations

import math
import time

import torch
from _results import base_clouds, finish, parse_probe_args, probe_parser
from torch import Tensor, nn

from shared_core.random import make_generator
from shared_core.train.distributed import derive_seed
from threed.evaluate import eval_prompts
from threed.metrics import one_nn_accuracy, pairwise_chamfer
from threed.modality import rotate_z
from threed.pipeline import PointsPipeline, turn_items, upsample
from threed.world import SHAPES, ShapeWorld

COARSE, TOTAL = 512, 2048
LEVELS = torch.linspace(0.02, 0.98, 13)


def feature_groups(clouds: Tensor) -> dict[str, Tensor]:
    """``clouds (B, N, >= 3)`` -> named ``(B, F)`` feature groups of the bounding-box-centred xyz."""
    x = clouds[..., :3].float()
    x = x - (x.amax(1, keepdim=True) + x.amin(1, keepdim=True)) / 2
    rxy, r = x[..., :2].norm(dim=-1), x.norm(dim=-1)
    z_bin = ((x[..., 2] + 1) / 2 * 8).clamp(0, 7.999).long()
    onehot = nn.functional.one_hot(z_bin, 8).float()
    count, per_bin = onehot.sum(1), onehot * rxy[..., None]
    knn = torch.cdist(x, x).topk(9, largest=False).values[..., -1]
    return {
        "x": torch.quantile(x[..., 0], LEVELS, dim=1).T,
        "y": torch.quantile(x[..., 1], LEVELS, dim=1).T,
        "z": torch.quantile(x[..., 2], LEVELS, dim=1).T,
        "r_xy": torch.quantile(rxy, LEVELS, dim=1).T,
        "r": torch.quantile(r, LEVELS, dim=1).T,
        "extremes": torch.cat([x.amax(1), x.amin(1)], 1),
        "z_profile": torch.cat([count / x.shape[1], per_bin.sum(1) / count.clamp(min=1), per_bin.amax(1)], 1),
        "knn8": torch.quantile(knn, LEVELS[::3], dim=1).T,
    }


class Critic:
    """Standardised features -> MLP -> logit of "real" (balanced classes: logit ~ log p / q)."""

    def __init__(self, feats: Tensor, real: Tensor, seed: int = 0, epochs: int = 600) -> None:
        self.mu, self.sd = feats.mean(0), feats.std(0) + 1e-6
        f = (feats - self.mu) / self.sd
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Linear(f.shape[1], 64),
                nn.SiLU(),
                nn.Dropout(0.2),
                nn.Linear(64, 64),
                nn.SiLU(),
                nn.Linear(64, 1),
            )
            opt = torch.optim.AdamW(self.net.parameters(), 3e-3, weight_decay=1e-2)
            weight = torch.where(real == 1, (real == 0).sum() / (real == 1).sum(), torch.tensor(1.0))
            with torch.enable_grad():
                for _ in range(epochs):
                    loss = nn.functional.binary_cross_entropy_with_logits(
                        self.net(f)[:, 0], real, weight=weight
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        self.net.eval()

    @torch.no_grad()
    def __call__(self, feats: Tensor) -> Tensor:
        return self.net((feats - self.mu) / self.sd)[:, 0]


def balanced_accuracy(logits: Tensor, real: Tensor) -> float:
    hit = (logits > 0) == (real == 1)
    return 0.5 * float(hit[real == 1].float().mean() + hit[real == 0].float().mean())


def held_out(feats: Tensor, real: Tensor, labels: Tensor) -> dict[str, float]:
    """Balanced accuracy on a random 20% after training on the rest: all classes and per class."""
    perm = torch.randperm(len(feats), generator=torch.Generator().manual_seed(0))
    test, train = perm[: len(feats) // 5], perm[len(feats) // 5 :]
    critic = Critic(feats[train], real[train])
    logits, r, lab = critic(feats[test]), real[test], labels[test]
    out = {"all": round(balanced_accuracy(logits, r), 3)}
    for k, shape in enumerate(SHAPES):
        out[shape] = round(balanced_accuracy(logits[lab == k], r[lab == k]), 3)
    return out


def sphere_bumps(spheres: Tensor) -> dict[str, float]:
    """Per-cloud deviation of the mean radius in 48 equal-area direction bins from the cloud's mean
    radius: its sd, the sd of its mean over clouds (shared by all) and of what is left (each own)."""
    x = (
        spheres[..., :3]
        - (spheres[..., :3].amax(1, keepdim=True) + spheres[..., :3].amin(1, keepdim=True)) / 2
    )
    r = x.norm(dim=-1)
    u = x / r[..., None]
    band = ((u[..., 2] + 1) / 2 * 6).clamp(0, 5.999).long()
    sector = ((torch.atan2(u[..., 1], u[..., 0]) + math.pi) / (2 * math.pi) * 8).clamp(0, 7.999).long()
    onehot = nn.functional.one_hot(band * 8 + sector, 48).float()
    dev = (onehot * r[..., None]).sum(1) / onehot.sum(1).clamp(min=1) - r.mean(1, keepdim=True)
    shared = dev.mean(0)
    return {
        "bump_sd": round(float(dev.std(1).mean()), 4),
        "shared_sd": round(float(shared.std()), 4),
        "own_sd": round(float((dev - shared).std(1).mean()), 4),
    }


def main() -> None:
    ap = probe_parser(__doc__, per_class=20)
    ap.add_argument("--base", default=None, help="base checkpoint (default: the shipped one)")
    ap.add_argument("--train-per-class", type=int, default=100, help="generated training clouds per class")
    ap.add_argument("--candidates", type=int, default=4, help="base draws per prompt (K)")
    args = parse_probe_args(ap)
    t = time.perf_counter()
    pipe = PointsPipeline.load(args.base)
    assert pipe.upsampler is not None and pipe.up_cfg is not None
    st = pipe.settings()

    m = args.train_per_class
    gen = []
    for k, shape in enumerate(SHAPES):
        captions = [d[3] for d in ShapeWorld(COARSE, seed=777, classes=[shape]).describe(range(m))]
        ids = list(range(10**6 + k * m, 10**6 + (k + 1) * m))
        gen.append(base_clouds(pipe, captions, ids, 777, st, turn=False))
    real_batch = ShapeWorld(COARSE, seed=778).sample_ids(range(2 * m * len(SHAPES)))
    yaw = torch.tensor([p.yaw for p in real_batch.params])
    real_clouds = rotate_z(real_batch.points, -yaw)
    print(f"critic data drawn: {time.perf_counter() - t:.0f} s", flush=True)

    groups_gen, groups_real = feature_groups(torch.cat(gen)), feature_groups(real_clouds)
    is_real = torch.cat([torch.zeros(m * len(SHAPES)), torch.ones(len(real_clouds))])
    labels = torch.cat([torch.arange(len(SHAPES)).repeat_interleave(m), real_batch.labels])

    def stacked(keys: list[str]) -> Tensor:  # generated rows, then real ones
        return torch.cat([torch.cat([g[k] for k in keys], 1) for g in (groups_gen, groups_real)])

    accuracy: dict[str, dict[str, float]] = {}
    for name in [*groups_gen, "all"]:
        accuracy[name] = held_out(stacked(list(groups_gen) if name == "all" else [name]), is_real, labels)
        print(f"critic on {name:9s} held-out balanced accuracy {accuracy[name]['all']:.3f}", flush=True)
    critic = Critic(stacked(list(groups_gen)), is_real)
    bumps = sphere_bumps(gen[SHAPES.index("sphere")])
    print(f"sphere bumps {bumps}", flush=True)

    n, K = args.per_class, args.candidates
    rows: dict[str, dict[str, float]] = {}
    for k, shape in enumerate(SHAPES):
        ids = list(range(k * n, (k + 1) * n))
        prompts = [p for _, p in eval_prompts(shape, n)]
        # (n, K, 512, 6): candidate j drawn with pipeline seed j
        cands = torch.stack([base_clouds(pipe, prompts, ids, j, st, turn=False) for j in range(K)], 1)
        logits = critic(torch.cat(list(feature_groups(cands.flatten(0, 1)).values()), 1)).view(n, K)
        pick = torch.stack([
            torch.multinomial(logits[i].softmax(0), 1, generator=make_generator(derive_seed(0, 12, i)))[0]
            for i in range(n)
        ])  # fmt: skip
        ref = ShapeWorld(TOTAL, seed=4242, classes=[shape]).sample(n, 0).points[..., :3]
        d_rr = pairwise_chamfer(ref)
        rows[shape] = {"picked_mean_logit": round(float(logits[torch.arange(n), pick].mean()), 2),
                       "mean_logit": round(float(logits.mean()), 2)}  # fmt: skip
        for name, coarse in (("candidate_0", cands[:, 0]), ("resampled", cands[torch.arange(n), pick])):
            coarse = turn_items(coarse, ids, 0)  # each item's own yaw, as the pipeline turns it
            with torch.no_grad():
                fine = upsample(pipe.upsampler, pipe.up_cfg, coarse, TOTAL - COARSE, ids, seed=0)
            full = torch.cat([coarse, fine], 1)[..., :3].clamp(-1.5, 1.5)
            rows[shape][name] = one_nn_accuracy(pairwise_chamfer(full, ref), d_rr, pairwise_chamfer(full))
        print(f"{shape:9s} " + "  ".join(f"{a} {b}" for a, b in rows[shape].items()), flush=True)
    mean = {v: sum(r[v] for r in rows.values()) / len(SHAPES) for v in ("candidate_0", "resampled")}
    print("mean 1-NNA-CD " + "  ".join(f"{a} {b:.3f}" for a, b in mean.items()))
    result = {
        "base": str(pipe.checkpoints[0]),
        "train_per_class": m,
        "candidates": K,
        "per_class": n,
        "critic_held_out_balanced_accuracy": accuracy,
        "sphere_bumps": bumps,
        "one_nna_cd": {"mean": mean, "classes": rows},
    }
    finish(args.out, result, t)


if __name__ == "__main__":
    main()
