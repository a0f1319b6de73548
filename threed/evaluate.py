"""Evaluation of a text-to-point-cloud pipeline on the shape world.

    extradim eval points [--base CKPT] [--upsampler CKPT] [--per-class 50] [--num-points 2048]
        [--out DIR] [--seed 0] [--classes sphere torus ...] [--no-emd] [--emd-points 512]

One generation pass: per class, ``per_class`` clouds from the canonical caption "a {colour}
{shape}" with the colour cycling through the 7 palette colours. Against them, per class, two
disjoint sets of real clouds of the same size from a world with its own seed (``reference_seed``):
set A is the reference, set B gives the real-vs-real value of every metric (the floor or ceiling a
perfect model would reach at this sample size). Every number sits next to its real-vs-real value:

- PointFlow protocol (Yang et al. 2019; ``threed.metrics``): MMD, COV and 1-NNA under Chamfer
  (full clouds) and EMD. Exact EMD costs ~17 ms per pair of 512-point clouds (~9 ms on two
  threads), so EMD runs on a random ``emd_points``-point subset of every cloud (``--no-emd`` skips it);
- P-FID: the Fréchet distance of PointNet features (``threed.features``, trained on real clouds)
  and KID, over all classes and per class, with the real-vs-real floor (B vs A);
- class accuracy: the class of the reference cloud nearest in Chamfer (1-NN: the minimum
  distance over the first ``class_refs`` clouds of set A of every evaluated class, on random
  ``class_points``-point subsets), plus the PointNet's prediction over all 10 shapes;
- colour accuracy: the palette colour nearest to the cloud's median point colour (white when
  its saturation is below 0.4, else the nearest hue);
- mesh watertightness of ``threed.mesh.points_to_mesh`` on the first ``mesh_per_class`` clouds of
  each class;
- timings per class (generation, metrics, meshes).

``DIR/eval.json`` holds the numbers and the quality bar (``QUALITY_BAR``); ``DIR/contact_sheet.png``
shows per class a real cloud, then a few generated ones (two views each).
"""

from __future__ import annotations

import argparse
import colorsys
import datetime as dt
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shared_core.errors import ExtradimError
from shared_core.io import atomic_path, check_out_dir, write_json
from shared_core.metrics import frechet_distance, kernel_inception_distance
from threed.cli import add_box_options, box_option
from threed.metrics import mmd_cov, one_nn_accuracy, pairwise_chamfer, pairwise_emd
from threed.world import COLOURS, SHAPES, ShapeWorld, canonical_caption

__all__ = [
    "QUALITY_BAR",
    "colour_of",
    "distribution_metrics",
    "eval_prompts",
    "evaluate_points",
    "nearest_class",
    "quality_flags",
    "register",
    "write_contact_sheet",
]

# The bar of a model worth shipping. 1-NNA-CD: mean over classes (0.5 is ideal); COV-CD: the mean
# over classes may trail the real-vs-real mean by at most this much; the rest are fractions.
QUALITY_BAR: dict[str, float] = {
    "one_nna_cd_max": 0.60,
    "cov_cd_gap_max": 0.10,
    "class_accuracy_min": 0.95,
    "colour_accuracy_min": 0.95,
    "watertight_min": 0.95,
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
_WHITE_SATURATION = 0.4  # palette saturations: white 0, every other colour >= 0.8


def reference_seed(seed: int) -> int:
    """The reference world's seed: away from the training world's (0) for any eval seed."""
    return 1_000_003 + seed


def eval_prompts(shape: str, n: int) -> list[tuple[str, str]]:
    """``n`` (colour, prompt) pairs for ``shape``, the colour cycling through the palette."""
    return [(c, canonical_caption(c, shape)) for c in (COLOUR_NAMES[i % len(COLOUR_NAMES)] for i in range(n))]


def colour_of(cloud: Tensor) -> str:
    """The palette colour of a cloud ``(N, 6)`` (rgb in [-1, 1]): its median point colour is white
    when unsaturated, else the palette colour of the nearest hue (circular distance)."""
    rgb = ((cloud[:, 3:6].float().median(0).values.clamp(-1, 1) + 1) / 2).tolist()
    hue, sat, _ = colorsys.rgb_to_hsv(*rgb)
    if sat < _WHITE_SATURATION:
        return "white"
    best, best_d = "white", 2.0
    for name, c in COLOURS.items():
        h, s, _ = colorsys.rgb_to_hsv(*(v / 255 for v in c))
        d = min(abs(hue - h), 1 - abs(hue - h))
        if s >= _WHITE_SATURATION and d < best_d:
            best, best_d = name, d
    return best


def _subsample(clouds: Tensor, k: int, g: torch.Generator) -> Tensor:
    """A random ``k``-point subset of each cloud: (B, N, C) -> (B, min(k, N), C)."""
    if k >= clouds.shape[1]:
        return clouds
    idx = torch.stack([torch.randperm(clouds.shape[1], generator=g)[:k] for _ in range(len(clouds))])
    return torch.gather(clouds, 1, idx[:, :, None].expand(-1, -1, clouds.shape[2]))


def nearest_class(gen: Tensor, refs: dict[str, Tensor]) -> list[str]:
    """1-NN classes: for each cloud of ``gen`` (G, N, 3) the class whose reference clouds
    ``refs[class]`` (R, N', 3) hold the minimum Chamfer distance."""
    names = list(refs)
    best = torch.stack([pairwise_chamfer(gen, refs[n]).min(1).values for n in names], 1)  # (G, classes)
    return [names[i] for i in best.argmin(1).tolist()]


def _protocol(
    pairwise: Callable[..., Tensor], gen: Tensor, ref_a: Tensor, ref_b: Tensor, name: str
) -> tuple[dict[str, float], dict[str, float]]:
    """MMD, COV, 1-NNA of gen vs A and of B vs A, the A-A matrix computed once."""
    d_aa = pairwise(ref_a)
    out = []
    for other in (gen, ref_b):
        d_oa = pairwise(other, ref_a)
        mmd, cov = mmd_cov(d_oa)
        out.append(
            {
                f"MMD-{name}": mmd,
                f"COV-{name}": cov,
                f"1-NNA-{name}": one_nn_accuracy(d_oa, d_aa, pairwise(other)),
            }
        )
    return out[0], out[1]


def distribution_metrics(
    gen: Tensor, ref_a: Tensor, ref_b: Tensor, *, with_emd: bool = True, emd_points: int = 512, seed: int = 0
) -> dict[str, dict[str, float]]:
    """PointFlow's metrics of ``gen`` against ``ref_a`` and the same for ``ref_b`` (real vs real).

    Args:
        gen: (G, N, 3) generated clouds.
        ref_a: (R, N, 3) reference clouds.
        ref_b: (R, N, 3) a second, disjoint set of real clouds.
        with_emd: also EMD, on random ``emd_points``-point subsets of every cloud.
        seed: seed of the subsets.

    Returns:
        ``{"generated": {...}, "real_vs_real": {...}}`` with ``MMD-CD, COV-CD, 1-NNA-CD`` and, with
        EMD, ``MMD-EMD, COV-EMD, 1-NNA-EMD``.
    """
    gen, ref_a, ref_b = gen.float(), ref_a.float(), ref_b.float()
    generated, real = _protocol(pairwise_chamfer, gen, ref_a, ref_b, "CD")
    if with_emd:
        g = torch.Generator().manual_seed(seed)
        subsets = [_subsample(c, emd_points, g) for c in (gen, ref_a, ref_b)]
        ge, re = _protocol(pairwise_emd, *subsets, "EMD")
        generated, real = {**generated, **ge}, {**real, **re}
    return {"generated": generated, "real_vs_real": real}


def _pfid(f_gen: Tensor, f_a: Tensor, f_b: Tensor) -> dict[str, float]:
    fd, floor = frechet_distance(f_gen, f_a), frechet_distance(f_b, f_a)
    return {"generated_vs_real": fd, "real_vs_real_floor": floor, "ratio": fd / max(floor, 1e-12)}


def _mean(rows: Sequence[dict[str, float]], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def quality_flags(summary: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail of each ``QUALITY_BAR`` item given the report's summary."""
    gen, real = summary["generated"], summary["real_vs_real"]
    checks = {
        "one_nna_cd_max": gen["1-NNA-CD"] <= QUALITY_BAR["one_nna_cd_max"],
        "cov_cd_gap_max": real["COV-CD"] - gen["COV-CD"] <= QUALITY_BAR["cov_cd_gap_max"],
        "class_accuracy_min": summary["class_accuracy"] >= QUALITY_BAR["class_accuracy_min"],
        "colour_accuracy_min": summary["colour_accuracy"] >= QUALITY_BAR["colour_accuracy_min"],
        "watertight_min": summary["watertight"] >= QUALITY_BAR["watertight_min"],
    }
    checks = {k: bool(v) for k, v in checks.items()}
    return {"thresholds": dict(QUALITY_BAR), "checks": checks, "pass": all(checks.values())}


def write_contact_sheet(
    path: str | os.PathLike[str], rows: list[tuple[str, Tensor, Tensor]], *, size: int = 96, views: int = 2
) -> Path:
    """A PNG: per row a label, then the real cloud and the generated ones (``views`` views each).

    Args:
        rows: (label, real (N, 6), generated (K, N, 6)) per class.
    """
    from PIL import Image, ImageDraw

    from threed.render import render_views

    gap, band = 4, 14
    width = max(1 + len(g) for _, _, g in rows) * (views * size + gap) - gap
    parts = []
    for label, real, gen in rows:
        tiles = [render_views(c, views=views, size=size) for c in [real, *gen]]
        strip = np.full((size, width, 3), 16, np.uint8)
        for k, tile in enumerate(tiles):
            strip[:, k * (views * size + gap) : k * (views * size + gap) + views * size] = tile
        head = Image.new("RGB", (width, band), (40, 40, 40))
        ImageDraw.Draw(head).text((3, 1), f"{label}  (first: real, then generated)", fill=(230, 230, 230))
        parts += [np.asarray(head), strip, np.zeros((gap, width, 3), np.uint8)]
    out = Path(path)
    with atomic_path(out) as tmp:
        Image.fromarray(np.concatenate(parts)).save(tmp, format="PNG")
    return out


def evaluate_points(
    pipe: Any,
    point_net: Any,
    *,
    classes: Sequence[str] = SHAPES,
    per_class: int = 50,
    num_points: int = 2048,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    with_emd: bool = True,
    emd_points: int = 512,
    class_refs: int = 10,
    class_points: int = 512,
    mesh_per_class: int = 3,
    sheet_per_class: int = 3,
    out_dir: str | os.PathLike[str] | None = None,
    callback: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Every metric of the module docstring from one generation pass; writes ``eval.json`` and
    ``contact_sheet.png`` into ``out_dir`` when given.

    Args:
        pipe: a ``PointsPipeline``.
        point_net: a ``threed.features.PointNet`` (P-FID features and a second class opinion).
        classes: shapes evaluated (class accuracy is 1-NN among these).
        per_class: generated clouds per class (>= 2), and real clouds in each reference set.
        num_points: points per cloud (generated and real).
        seed: generation seed (cloud ``i`` over all classes gets noise ``(seed, i)``); the real
            sets come from ``reference_seed(seed)``.
        settings: ``steps``, ``sampler``, ``guidance``, ``batch_size`` for ``pipe.generate``.
        callback: ``callback(n)`` after each denoising step of n clouds (progress bars).
    """
    from threed.features import extract_features
    from threed.mesh import points_to_mesh

    if per_class < 2:
        raise ExtradimError(f"--per-class must be >= 2, got {per_class}")
    bad = [c for c in classes if c not in SHAPES]
    if bad or not classes or len(set(classes)) != len(classes):
        raise ExtradimError(
            f"--classes must be distinct shapes from: {', '.join(SHAPES)}; got {list(classes)}"
        )
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    resolved = pipe.settings(
        settings.get("steps"),
        settings.get("guidance"),
        settings.get("sampler"),
        settings.get("guidance_rescale"),
    )
    pipe.check_num_points(num_points)
    t_start = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    ref_world_seed = reference_seed(seed)

    per: dict[str, Any] = {}
    gens: dict[str, Tensor] = {}
    refs_a: dict[str, Tensor] = {}
    refs_b: dict[str, Tensor] = {}
    targets: dict[str, list[str]] = {}
    for k, shape in enumerate(classes):
        pairs = eval_prompts(shape, per_class)
        t = time.perf_counter()
        gens[shape] = pipe.generate(
            [p for _, p in pairs], seed=seed, num_points=num_points, callback=callback,
            first_index=k * per_class, **settings,
        )  # fmt: skip
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        world = ShapeWorld(num_points, seed=ref_world_seed, classes=[shape])
        refs_a[shape], refs_b[shape] = world.sample(per_class, 0).points, world.sample(per_class, 1).points
        targets[shape] = [c for c, _ in pairs]
        real_s = time.perf_counter() - t
        t = time.perf_counter()
        dist = distribution_metrics(
            gens[shape][..., :3], refs_a[shape][..., :3], refs_b[shape][..., :3],
            with_emd=with_emd, emd_points=emd_points, seed=seed + k,
        )  # fmt: skip
        metrics_s = time.perf_counter() - t
        t = time.perf_counter()
        watertight = []
        for cloud in gens[shape][:mesh_per_class]:
            try:
                watertight.append(bool(points_to_mesh(cloud).is_watertight))
            except ValueError:  # encloses no volume: no mesh at all
                watertight.append(False)
        mesh_s = time.perf_counter() - t
        colours = [colour_of(c) for c in gens[shape]]
        per[shape] = {
            **dist,
            "colour_accuracy": float(np.mean([c == want for c, want in zip(colours, targets[shape])])),
            "watertight": float(np.mean(watertight)) if watertight else None,
            "meshes": len(watertight),
            "timings": {
                "generate_s": round(gen_s, 3),
                "real_clouds_s": round(real_s, 3),
                "metrics_s": round(metrics_s, 3),
                "mesh_s": round(mesh_s, 3),
            },
        }

    # Class accuracy: 1-NN in Chamfer among the evaluated classes, and the PointNet over all 10.
    t = time.perf_counter()
    protos = {s: _subsample(refs_a[s][:class_refs, :, :3], class_points, g) for s in classes}
    for shape in classes:
        nearest = nearest_class(_subsample(gens[shape][..., :3], class_points, g), protos)
        with torch.no_grad():
            predicted = point_net(gens[shape][..., :3].float()).argmax(1).tolist()
        per[shape]["class_accuracy"] = float(np.mean([n == shape for n in nearest]))
        per[shape]["pointnet_accuracy"] = float(np.mean([SHAPES[i] == shape for i in predicted]))
    class_s = time.perf_counter() - t

    # P-FID and KID on PointNet features, over all classes and per class.
    t = time.perf_counter()
    feats = {
        name: {s: extract_features(point_net, sets[s]) for s in classes}
        for name, sets in (("gen", gens), ("a", refs_a), ("b", refs_b))
    }
    for shape in classes:
        per[shape]["pfid"] = _pfid(feats["gen"][shape], feats["a"][shape], feats["b"][shape])
    f_gen, f_a, f_b = (torch.cat(list(feats[n].values())) for n in ("gen", "a", "b"))
    pfid = {**_pfid(f_gen, f_a, f_b), "clouds_per_set": len(f_gen), "feature_dim": int(f_gen.shape[1])}
    kid = {
        "generated_vs_real": kernel_inception_distance(f_gen, f_a)[0],
        "real_vs_real_floor": kernel_inception_distance(f_b, f_a)[0],
    }
    features_s = time.perf_counter() - t

    keys = list(per[classes[0]]["generated"])
    meshes = [
        w
        for s in classes
        if per[s]["watertight"] is not None
        for w in [per[s]["watertight"]] * per[s]["meshes"]
    ]
    summary = {
        "generated": {key: _mean([per[s]["generated"] for s in classes], key) for key in keys},
        "real_vs_real": {key: _mean([per[s]["real_vs_real"] for s in classes], key) for key in keys},
        "class_accuracy": _mean([per[s] for s in classes], "class_accuracy"),
        "pointnet_accuracy": _mean([per[s] for s in classes], "pointnet_accuracy"),
        "colour_accuracy": _mean([per[s] for s in classes], "colour_accuracy"),
        "watertight": float(np.mean(meshes)) if meshes else 0.0,
    }
    report: dict[str, Any] = {
        "checkpoints": [str(p) if p else None for p in pipe.checkpoints],
        "checkpoint_sha256": list(pipe.checkpoint_sha256),
        "box_checkpoint": str(pipe.box_checkpoint) if pipe.box_checkpoint else None,
        "box_sha256": pipe.box_sha256 or None,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "reference_world_seed": ref_world_seed,
        "classes": list(classes),
        "per_class": per_class,
        "num_points": num_points,
        "settings": {**resolved, "batch_size": settings.get("batch_size", 32)},
        "conventions": {
            "averages": "summary values are means over classes of the per-class values",
            "real_vs_real": "a second real set B (disjoint items, same size) in place of the generated set",
            "chamfer": f"full {num_points}-point clouds; squared distances (PointFlow)",
            "emd": (
                f"exact matching on a random {min(emd_points, num_points)}-point subset of every cloud"
                if with_emd
                else "skipped (--no-emd)"
            ),
            "class_accuracy": (
                f"1-NN: the class of the minimum Chamfer distance to the first {class_refs} reference "
                f"clouds of each evaluated class, on random {min(class_points, num_points)}-point subsets"
            ),
            "pointnet_accuracy": "the PointNet's argmax over all 10 shapes",
            "colour_accuracy": "median point colour: white if saturation < 0.4, else the nearest palette hue",
            "watertight": f"points_to_mesh on the first {mesh_per_class} generated clouds of each class",
        },
        "summary": summary,
        "pfid": pfid,
        "kid": kid,
        "per_class_metrics": per,
    }
    report["quality_bar"] = quality_flags(summary)
    report["timings"] = {
        "generate_s": round(sum(per[s]["timings"]["generate_s"] for s in classes), 3),
        "metrics_s": round(sum(per[s]["timings"]["metrics_s"] for s in classes), 3),
        "mesh_s": round(sum(per[s]["timings"]["mesh_s"] for s in classes), 3),
        "class_accuracy_s": round(class_s, 3),
        "features_s": round(features_s, 3),
        "total_s": round(time.perf_counter() - t_start, 3),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = [
            (f"{s}: " + ", ".join(targets[s][:sheet_per_class]), refs_a[s][0], gens[s][:sheet_per_class])
            for s in classes
        ]
        write_contact_sheet(out / "contact_sheet.png", rows)
        write_json(out / "eval.json", report)
    return report


# ----------------------------------------------------------------------------------------------
# `extradim eval points`
# ----------------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    with torch.no_grad():
        return _run_eval(args)


def _run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from threed.features import DEFAULT_POINTNET, load_point_net
    from threed.pipeline import PointsPipeline

    # Every input is checked before any generation or write.
    classes = list(args.classes or SHAPES)
    if args.per_class < 2:
        raise ExtradimError(f"--per-class must be >= 2, got {args.per_class}")
    bad = [c for c in classes if c not in SHAPES]
    if bad or len(set(classes)) != len(classes):
        raise ExtradimError(f"--classes must be distinct shapes from: {', '.join(SHAPES)}; got {classes}")
    if args.emd_points < 2 or args.mesh_per_class < 0:
        raise ExtradimError("--emd-points must be >= 2 and --mesh-per-class >= 0")
    out = check_out_dir(args.out, ("eval.json", "contact_sheet.png"))
    pipe = PointsPipeline.load(args.base, args.upsampler, box=box_option(args))
    resolved = pipe.settings(args.steps, args.guidance, args.sampler, args.guidance_rescale)
    pipe.check_num_points(args.num_points)
    point_net = load_point_net(args.pointnet or DEFAULT_POINTNET)
    steps = resolved["steps"] + (resolved["upsampler_steps"] if args.num_points > pipe.coarse_points else 0)
    total = steps * args.per_class * len(classes)
    settings = {
        "steps": args.steps,
        "guidance": args.guidance,
        "guidance_rescale": args.guidance_rescale,
        "sampler": args.sampler,
        "batch_size": args.batch_size,
    }
    with tqdm(total=total, desc="eval points", unit="cloud-step") as bar:
        report = evaluate_points(
            pipe, point_net, classes=classes, per_class=args.per_class, num_points=args.num_points,
            seed=args.seed, settings=settings, with_emd=not args.no_emd, emd_points=args.emd_points,
            mesh_per_class=args.mesh_per_class, out_dir=out, callback=bar.update,
        )  # fmt: skip
    s = report["summary"]
    gen, real = s["generated"], s["real_vs_real"]
    print(
        f"1-NNA-CD {gen['1-NNA-CD']:.3f} (real {real['1-NNA-CD']:.3f})  COV-CD {gen['COV-CD']:.3f} "
        f"(real {real['COV-CD']:.3f})  MMD-CD {gen['MMD-CD']:.4g} (real {real['MMD-CD']:.4g})"
    )
    if "1-NNA-EMD" in gen:
        print(f"1-NNA-EMD {gen['1-NNA-EMD']:.3f} (real {real['1-NNA-EMD']:.3f})")
    p = report["pfid"]
    print(
        f"P-FID {p['generated_vs_real']:.4g} (real-vs-real floor {p['real_vs_real_floor']:.4g}, ratio "
        f"{p['ratio']:.2f}); class {s['class_accuracy']:.3f}, colour {s['colour_accuracy']:.3f}, "
        f"watertight {s['watertight']:.3f}"
    )
    verdict = "PASS" if report["quality_bar"]["pass"] else "FAIL"
    print(f"quality bar: {verdict}; wrote {out / 'eval.json'} and {out / 'contact_sheet.png'}")
    return 0


def register(sub: Any) -> None:
    """Add ``points`` to ``extradim eval`` (the ``extradim.evals`` entry point)."""
    p = sub.add_parser(
        "points", help="PointFlow metrics, P-FID, class/colour accuracy of a text-to-points model"
    )
    p.add_argument("--base", default=None, help="base checkpoint (default: the shipped one)")
    p.add_argument("--upsampler", default=None, help="upsampler checkpoint (default: the shipped one)")
    add_box_options(p)
    p.add_argument("--per-class", type=int, default=50, help="generated clouds per class (and per real set)")
    p.add_argument("--num-points", type=int, default=2048)
    p.add_argument("--out", default="outputs/eval_points", help="folder for eval.json and contact_sheet.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="base denoising steps (default: the checkpoint's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale s (default: the checkpoint's)")
    p.add_argument(
        "--guidance-rescale",
        type=float,
        default=None,
        help="guidance rescale phi (default: the checkpoint's)",
    )
    p.add_argument("--sampler", default=None, help="base sampler name (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--classes", nargs="+", default=None, metavar="SHAPE", help="shapes evaluated (default: all 10)"
    )
    p.add_argument("--no-emd", action="store_true", help="skip the EMD metrics (the slowest part)")
    p.add_argument("--emd-points", type=int, default=512, help="random points per cloud for EMD")
    p.add_argument("--mesh-per-class", type=int, default=3, help="generated clouds meshed per class")
    p.add_argument("--pointnet", default=None, help="PointNet weights (default: checkpoints/threed/pointnet)")
    p.set_defaults(func=run_eval)
