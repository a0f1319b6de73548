"""`extradim eval dream`: score text-to-3D over the shape world.

For each shape (the colour cycling through the palette) and seed, ``dream`` optimises a NeRF for
"a {colour} {shape}", and the result is scored:

- class accuracy of the exported mesh: 2048 points sampled on its surface (bounding-box centred,
  scaled to max radius 1, like the world's clouds) get the class of the nearest reference cloud
  by Chamfer distance (10 references per class, ``threed.evaluate.nearest_class``);
- Chamfer distance to the nearest reference of the prompted shape;
- colour accuracy: the median vertex colour's palette colour (``threed.evaluate.colour_of``);
- watertightness of the mesh;
- classifier R-precision: 8 views of the NeRF (Lambertian, light from the camera) are read by the
  view classifier (``threed.viewnet``), log-probabilities averaged over views, all 70 (colour,
  shape) captions ranked: a hit when the prompted caption ranks first. Ceiling: the same on
  ground-truth renders of the prompted objects;
- multi-view consistency: a result is flagged (possible multi-face / Janus) when fewer than 6 of
  its 8 views agree with the majority shape.

Writes ``eval.json`` and ``contact_sheet.png`` (four views of every result beside ground truth).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shared_core.errors import ExtradimError
from shared_core.io import check_out_dir, write_json
from threed.world import COLOURS, SHAPES, ShapeWorld, canonical_caption

__all__ = [
    "QUALITY_BAR",
    "eval_prompt",
    "evaluate_dream",
    "mesh_cloud",
    "r_precision",
    "reference_clouds",
    "register",
    "summarise",
    "view_consistency",
]

QUALITY_BAR = {"class_accuracy": 0.8, "colour_accuracy": 0.9, "watertight": 0.95, "r_precision_ratio": 0.7}
COLOUR_NAMES = list(COLOURS)
_VIEWS = [(az, el) for el in (15.0, 45.0) for az in (0.0, 90.0, 180.0, 270.0)]


def eval_prompt(shape: str, seed: int) -> tuple[str, str]:
    """``(colour, prompt)`` of the eval's object for ``shape`` and ``seed`` (the colour turns with both)."""
    colour = COLOUR_NAMES[(SHAPES.index(shape) + seed) % len(COLOUR_NAMES)]
    return colour, canonical_caption(colour, shape)


def reference_clouds() -> dict[str, Tensor]:
    """Ten ground-truth clouds ``(10, 2048, 6)`` per shape, the nearest-class check's references."""
    return {s: ShapeWorld(2048, seed=2_000_003, classes=[s]).sample(10, 0).points for s in SHAPES}


def mesh_cloud(mesh: Any, n: int = 2048, seed: int = 0) -> Tensor:
    """``(n, 6)`` surface samples of a coloured mesh, normalised like the world's clouds (bounding-box
    centre at 0, max radius 1), rgb in [-1, 1] from a vertex of the sampled face."""
    import trimesh

    pts, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    centre = (pts.max(0) + pts.min(0)) / 2
    pts = pts - centre
    pts = pts / max(float(np.linalg.norm(pts, axis=1).max()), 1e-9)
    corner = mesh.faces[face, 0]
    rgb = mesh.visual.vertex_colors[corner, :3].astype(np.float64) / 127.5 - 1
    return torch.from_numpy(np.concatenate([pts, rgb], 1).astype(np.float32))


def view_logprobs(net: Any, images: Tensor) -> Tensor:
    """``(70,)`` mean over views of log p(shape) + log p(colour), caption index ``s * 7 + c``."""
    with torch.no_grad():
        ls, lc = net(images)
    lp = ls.log_softmax(-1)[:, :, None] + lc.log_softmax(-1)[:, None, :]  # (V, 10, 7)
    return lp.mean(0).reshape(-1)


def r_precision(net: Any, images: Tensor, shape: str, colour: str) -> bool:
    """Does the prompted (colour, shape) caption rank first among all 70 for these views?"""
    target = SHAPES.index(shape) * len(COLOUR_NAMES) + COLOUR_NAMES.index(colour)
    return int(view_logprobs(net, images).argmax()) == target


def view_consistency(net: Any, images: Tensor) -> tuple[int, str]:
    """(views agreeing with the majority shape, that shape)."""
    with torch.no_grad():
        pred = net(images)[0].argmax(1).tolist()
    shape, count = Counter(pred).most_common(1)[0]
    return count, SHAPES[shape]


def _nerf_views(result: Any, prior: Any, size: int = 32) -> Tensor:
    from threed.dream import render_view
    from threed.views import Camera

    out = []
    with torch.no_grad():
        for az, el in _VIEWS:
            cam = Camera(az, el, prior.distance, prior.fov)
            light = torch.from_numpy(cam.position() / cam.distance).float()
            out.append(
                render_view(result.field, result.background, cam, size, shading="lambertian", light=light)[0]
            )
    return torch.stack(out).clamp(0, 1)


def _truth_views(shape: str, colour: str, seed: int, prior: Any, size: int = 32) -> Tensor:
    from threed.views import Camera, render_mesh
    from threed.world import ground_truth_mesh

    world = ShapeWorld(1, seed=seed, classes=[shape], colours=[colour])
    _, _, params, _ = world.describe([0])[0]
    mesh = ground_truth_mesh(shape, colour, params)
    yaw = math.degrees(params.yaw)
    views = []
    for az, el in _VIEWS:
        cam = Camera(az + yaw, el, prior.distance, prior.fov)
        views.append(render_mesh(mesh, cam, size, light=cam.position() / cam.distance).image)
    return torch.stack(views)


def evaluate_dream(
    prior: Any,
    view_net: Any,
    *,
    classes: list[str],
    seeds: list[int],
    cfg: Any,
    out_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    from threed.dream import dream, extract_mesh
    from threed.evaluate import colour_of, nearest_class
    from threed.metrics import pairwise_chamfer

    ref_xyz = {s: r[:, :, :3] for s, r in reference_clouds().items()}
    rows, sheet = [], []
    for shape in classes:
        for seed in seeds:
            colour, prompt = eval_prompt(shape, seed)
            t0 = time.perf_counter()
            result = dream(prior, prompt, cfg, seed=seed, progress=progress)
            seconds = round(time.perf_counter() - t0, 1)
            row: dict[str, Any] = {"prompt": prompt, "shape": shape, "colour": colour, "seed": seed,
                                   "steps": result.steps, "seconds": seconds}  # fmt: skip
            views = _nerf_views(result, prior)
            truth = _truth_views(shape, colour, 3_000_017 + seed, prior)
            row["r_precision_hit"] = r_precision(view_net, views, shape, colour)
            row["r_precision_truth_hit"] = r_precision(view_net, truth, shape, colour)
            agree, majority = view_consistency(view_net, views)
            row["views_agreeing"], row["view_majority_shape"] = agree, majority
            row["multi_view_flag"] = agree < 6
            try:
                mesh = extract_mesh(result.field, resolution=96, distance=prior.distance, fov=prior.fov)
                cloud = mesh_cloud(mesh)
                row["mesh_class"] = nearest_class(cloud[None, :, :3], ref_xyz)[0]
                row["chamfer_to_prompted"] = float(pairwise_chamfer(cloud[None, :, :3], ref_xyz[shape]).min())
                row["mesh_colour"] = colour_of(cloud)
                row["watertight"] = bool(mesh.is_watertight)
            except ValueError as exc:  # an empty field: nothing to mesh
                row.update(mesh_class=None, chamfer_to_prompted=None, mesh_colour=None, watertight=False,
                           mesh_error=str(exc))  # fmt: skip
            rows.append(row)
            sheet.append(torch.cat([torch.cat(list(truth[:4]), 2), torch.cat(list(views[:4]), 2)], 2))
    report = summarise(rows, prior.name, cfg)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_sheet(sheet, out_dir / "contact_sheet.png")
        write_json(out_dir / "eval.json", report)
    return report


def summarise(rows: list[dict[str, Any]], prior_name: str, cfg: Any) -> dict[str, Any]:
    """The report of per-object ``rows`` (also used to merge the rows of several runs)."""
    n = len(rows)
    r_gen = sum(r["r_precision_hit"] for r in rows) / n
    r_true = sum(r["r_precision_truth_hit"] for r in rows) / n
    chamfers = [r["chamfer_to_prompted"] for r in rows if r["chamfer_to_prompted"] is not None]
    summary = {
        "class_accuracy": sum(r["mesh_class"] == r["shape"] for r in rows) / n,
        "colour_accuracy": sum(r["mesh_colour"] == r["colour"] for r in rows) / n,
        "watertight": sum(r["watertight"] for r in rows) / n,
        "r_precision": r_gen,
        "r_precision_ground_truth": r_true,
        "r_precision_ratio": r_gen / r_true if r_true > 0 else 0.0,
        "multi_view_flagged": sum(r["multi_view_flag"] for r in rows) / n,
        "chamfer_to_prompted_mean": float(np.mean(chamfers)) if chamfers else None,
        "seconds_per_object": float(np.mean([r["seconds"] for r in rows])),
    }
    checks = {k: summary[k] >= v for k, v in QUALITY_BAR.items()}
    from threed.dream import points_init_sha256  # lazy, as the other threed imports here

    report = {
        "summary": summary,
        "quality_bar": {"thresholds": QUALITY_BAR, "checks": checks, "pass": all(checks.values())},
        "results": rows,
        "prior": prior_name,
        # the points checkpoints each start came from (``--init points``), as in dream's manifest
        "init_points_sha256": points_init_sha256() if getattr(cfg, "init", None) == "points" else None,
        "config": cfg.__dict__ if not hasattr(cfg, "__dataclass_fields__") else _asdict(cfg),
        "conventions": {
            "class": "mesh surface samples (2048, normalised) -> nearest of 10 reference clouds per class "
            "(Chamfer)",
            "colour": "median vertex colour -> palette colour (white if unsaturated)",
            "r_precision": "8 NeRF views (azimuths 0/90/180/270, elevations 15/45) -> view classifier, "
            "mean log p(shape) + log p(colour), top-1 among 70 captions; ceiling on ground-truth renders",
            "multi_view_flag": "fewer than 6 of 8 views agree with the majority shape",
        },
    }
    return report


def _asdict(cfg: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(cfg)


def _write_sheet(rows: list[Tensor], path: Path) -> None:
    from PIL import Image

    from shared_core.io import atomic_path

    img = torch.cat(rows, 1).clamp(0, 1)
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).resize((arr.shape[1] * 2, arr.shape[0] * 2), Image.NEAREST).save(
            tmp, format="PNG"
        )


def run_eval(args: argparse.Namespace) -> int:
    from threed.dream import DreamConfig
    from threed.dream_cli import load_prior
    from threed.viewnet import DEFAULT_VIEWNET, load_view_net

    classes = list(args.classes or SHAPES)
    bad = [c for c in classes if c not in SHAPES]
    if bad or len(set(classes)) != len(classes):
        raise ExtradimError(f"--classes must be distinct shapes from: {', '.join(SHAPES)}; got {classes}")
    if args.seeds < 1:
        raise ExtradimError(f"--seeds must be >= 1, got {args.seeds}")
    try:
        cfg = DreamConfig(
            steps=args.steps or DreamConfig.steps, max_minutes=args.max_minutes,
            guidance=args.guidance if args.guidance is not None else DreamConfig.guidance,
            init=args.init or DreamConfig.init,
        )  # fmt: skip
    except ValueError as exc:
        raise ExtradimError(str(exc)) from None
    out = check_out_dir(args.out, ("eval.json", "contact_sheet.png"))
    prior = load_prior(args.prior)
    view_net = load_view_net(args.viewnet or DEFAULT_VIEWNET)
    report = evaluate_dream(
        prior, view_net, classes=classes, seeds=list(range(args.seeds)), cfg=cfg, out_dir=out
    )
    s = report["summary"]
    print(
        f"class {s['class_accuracy']:.3f}  colour {s['colour_accuracy']:.3f}  "
        f"watertight {s['watertight']:.3f}  "
        f"R-precision {s['r_precision']:.3f} (ground truth {s['r_precision_ground_truth']:.3f})  "
        f"multi-view flagged {s['multi_view_flagged']:.3f}  {s['seconds_per_object']:.0f} s/object"
    )
    verdict = "PASS" if report["quality_bar"]["pass"] else "FAIL"
    print(f"quality bar: {verdict}; wrote {out / 'eval.json'} and {out / 'contact_sheet.png'}")
    return 0


def register(sub: Any) -> None:
    """Add ``dream`` to ``extradim eval`` (the ``extradim.evals`` entry point)."""
    p = sub.add_parser("dream", help="score text-to-3D (class, colour, watertight, R-precision, multi-view)")
    p.add_argument("--out", default="outputs/eval_dream", help="folder for eval.json and contact_sheet.png")
    p.add_argument("--classes", nargs="+", default=None, metavar="SHAPE", help="shapes (default: all 10)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per shape")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps per object (default 600)")
    p.add_argument("--max-minutes", type=float, default=5.0, help="budget per object")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--init", choices=("blob", "points"), default=None, help="where each field starts")
    p.add_argument("--prior", default=None, help="views checkpoint or diffusers folder (default: shipped)")
    p.add_argument("--viewnet", default=None, help="view classifier (default: checkpoints/threed/viewnet)")
    p.set_defaults(func=run_eval)
