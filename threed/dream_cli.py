"""`extradim dream`: text to a NeRF by score distillation, exported as a mesh and a turntable.

    extradim dream "a red torus" -o out/ [--steps 600] [--max-minutes 5] [--seed 0]
        [--guidance 20] [--prior CKPT_OR_DIFFUSERS_DIR] [--preview-every 50]
        [--mesh-resolution 96] [--turntable-frames 36] [--turntable-size 96]

Writes into ``out/``: ``mesh.glb``, ``mesh.obj``, ``mesh.ply`` (marching cubes on the smoothed density
at the level whose silhouettes match the renders, vertex colours from the albedo, largest component),
``turntable.gif`` (and ``turntable.mp4`` when ffmpeg is available), ``views.png`` (four views),
``preview.png`` (refreshed every ``--preview-every`` steps while optimising), ``metrics.json``
(steps, per-step cost split, loss curve summary, mesh checks, peak RSS) and ``manifest.json``
(prompt, seed, settings, prior and its sha256, version).

Everything is written into a fresh hidden ``.<out>.XXXX.partial/`` folder beside ``out/`` and renamed
onto ``out`` at the end (one step), so an interrupted or failed run leaves no half-written output
folder, and two runs never share a working folder. Bad input (empty prompt, an ``out`` that is
a file or a non-empty folder, an unwritable parent, budgets <= 0, a missing or corrupt prior) is
one line and exit code 2 before any work.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from shared_core.errors import ExtradimError, clean_warnings, first_line
from shared_core.text import check_prompt

__all__ = ["check_out_folder", "register", "run_dream"]

OUTPUT_FILES = (
    "mesh.glb",
    "mesh.obj",
    "mesh.ply",
    "turntable.gif",
    "views.png",
    "metrics.json",
    "manifest.json",
)


def check_out_folder(out: str | Path) -> tuple[Path, Path]:
    """``(out, parent)``: ``out`` must be absent or an empty folder in a writable parent."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ExtradimError(f"output {p} is a file; give a folder")
    if p.is_dir() and any(p.iterdir()):
        raise ExtradimError(f"output folder {p} is not empty; give a new or empty folder")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise ExtradimError(f"folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ExtradimError(f"folder {parent} is not writable")
    return p, parent


def load_prior(path: str | None) -> Any:
    """The shipped shape-world prior, a ``views`` checkpoint, or a diffusers Stable Diffusion folder."""
    if path is not None and (Path(path) / "model_index.json").is_file():
        from threed.sd_prior import StableDiffusionPrior

        return StableDiffusionPrior.load(path)
    from threed.prior import ShapeWorldPrior

    return ShapeWorldPrior.load(path)


def _save_png(img: Any, path: Path) -> None:
    import numpy as np
    from PIL import Image

    arr = (img.detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)


def render_strip(
    field: Any, background: Any, views: int, size: int, distance: float, fov: float
) -> list[Any]:
    """``views`` Lambertian renders (light from the camera) around the object at 20 degrees."""
    import torch

    from threed.dream import render_view
    from threed.views import Camera

    out = []
    with torch.no_grad():
        for k in range(views):
            cam = Camera(30.0 + 360.0 * k / views, 20.0, distance, fov)
            light = torch.from_numpy(cam.position() / cam.distance).float()
            out.append(render_view(field, background, cam, size, shading="lambertian", light=light)[0])
    return out


def run_dream(args: argparse.Namespace) -> int:
    import imageio.v3 as iio
    import numpy as np
    import torch

    from shared_core.io import file_sha256, write_json
    from threed.dream import DreamConfig, dream, extract_mesh, points_init_cloud, points_init_sha256
    from threed.world import parse_caption

    # 1. Inputs, before any model is loaded.
    if args.prompt is None:
        raise ExtradimError("no prompt: give one, e.g. 'a red torus'")
    prompt = check_prompt(args.prompt)
    if args.steps is not None and args.steps < 1:
        raise ExtradimError(f"--steps must be >= 1, got {args.steps}")
    if args.max_minutes <= 0:
        raise ExtradimError(f"--max-minutes must be > 0, got {args.max_minutes}")
    if args.preview_every < 1:
        raise ExtradimError(f"--preview-every must be >= 1, got {args.preview_every}")
    if not 16 <= args.mesh_resolution <= 256:
        raise ExtradimError(f"--mesh-resolution must be in 16..256, got {args.mesh_resolution}")
    if args.turntable_frames < 4 or not 16 <= args.turntable_size <= 512:
        raise ExtradimError("--turntable-frames must be >= 4 and --turntable-size in 16..512")
    out, parent = check_out_folder(args.output)
    try:
        cfg = DreamConfig(
            steps=args.steps or DreamConfig.steps, max_minutes=args.max_minutes,
            guidance=args.guidance if args.guidance is not None else DreamConfig.guidance,
            init=args.init or DreamConfig.init,
        )  # fmt: skip
    except ValueError as exc:
        raise ExtradimError(str(exc)) from None

    # 2. The prior (a bad checkpoint fails here, before anything is written).
    printed: set[str] = set()
    with clean_warnings(printed):
        prior = load_prior(args.prior)
    parsed = parse_caption(prompt)
    if parsed is None and prior.name.startswith("views:"):
        print(
            "extradim: warning: prompt is out of the prior's training domain; optimising anyway",
            file=sys.stderr,
        )
    if args.init is None and cfg.init == "points" and parsed is None:
        # the points model knows only the shape world: another object starts from the blob
        cfg = dataclasses.replace(cfg, init="blob")
        print("extradim: note: no shape-world shape in the prompt; starting from the blob", file=sys.stderr)

    # The start cloud (--init points) comes from the shipped points models: a bad file fails here too.
    init_cloud = points_init_cloud(prompt, args.seed) if cfg.init == "points" else None

    # 3. Optimise, with a live preview in the partial folder.
    partial = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.resolve().name}.", suffix=".partial"))
    try:
        print(f"live preview: {partial / 'preview.png'}", file=sys.stderr)
        d, f = prior.distance, prior.fov

        def preview(step: int, field: Any, bg: Any) -> None:
            _save_png(torch.cat(render_strip(field, bg, 4, 64, d, f), 2), partial / "preview.png")

        with clean_warnings(printed):
            result = dream(
                prior, prompt, cfg, seed=args.seed, on_preview=preview, preview_every=args.preview_every,
                init_cloud=init_cloud,
            )  # fmt: skip
        if result.steps == 0:
            raise ExtradimError(f"--max-minutes {args.max_minutes} ran out before the first step")

        # 4. Export: mesh in three formats, turntable, views, metrics, manifest.
        try:
            mesh = extract_mesh(result.field, resolution=args.mesh_resolution, distance=d, fov=f)
        except ValueError as exc:  # an empty field: nothing was learned to mesh
            raise ExtradimError(f"no object to export after {result.steps} steps ({exc})") from None
        for suffix in ("glb", "obj", "ply"):
            mesh.export(partial / f"mesh.{suffix}", file_type=suffix)
        frames = render_strip(
            result.field, result.background, args.turntable_frames, args.turntable_size, d, f
        )
        arr = [(fr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for fr in frames]
        iio.imwrite(partial / "turntable.gif", np.stack(arr), duration=80, loop=0)
        try:
            iio.imwrite(partial / "turntable.mp4", np.stack(arr), fps=12, codec="libx264", macro_block_size=1)
        except Exception as exc:  # no ffmpeg: the GIF stands alone
            (partial / "turntable.mp4").unlink(missing_ok=True)
            reason = first_line(exc)
            print(f"extradim: warning: no turntable.mp4 ({reason})", file=sys.stderr)
        k = len(frames)
        _save_png(torch.cat([frames[i * k // 4] for i in range(4)], 2), partial / "views.png")
        n = result.steps
        hist = result.history
        components = int(mesh.metadata.get("components", 1))
        metrics = {
            "steps": n,
            "seconds": round(result.timings["total_s"], 2),
            "per_step_ms": {k.removesuffix("_s"): round(1000 * v / n, 1) for k, v in result.timings.items()},
            "sds_first_last": [round(hist[0]["sds"], 6), round(hist[-1]["sds"], 6)],
            "opacity_entropy_last": round(hist[-1]["entropy"], 4),
            "occupied_fraction_last": round(hist[-1]["occupied"], 4),
            "mesh": {
                "watertight": bool(mesh.is_watertight),
                "vertices": len(mesh.vertices),
                "faces": len(mesh.faces),
                "components_found": components,  # the largest is kept
                "threshold": mesh.metadata["threshold"],
                "extent": [round(float(e), 3) for e in mesh.extents],
            },
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        write_json(partial / "metrics.json", metrics)
        prior_path = getattr(prior, "path", None)
        write_json(partial / "manifest.json", {
            "job": "dream", "prompt": prompt, "seed": args.seed,
            "parsed": {"colour": parsed[0], "shape": parsed[1]} if parsed else None,
            "prior": prior.name, "prior_path": str(prior_path) if prior_path else None,
            "prior_sha256": file_sha256(prior_path) if prior_path and Path(prior_path).is_file() else None,
            "config": result.summary()["config"], "version": _version(),
            "init_points_sha256": points_init_sha256() if cfg.init == "points" else None,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        })  # fmt: skip
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        os.rename(partial, out)  # onto an absent or empty folder: one step on POSIX
    except OSError as exc:
        raise ExtradimError(
            f"could not move the results into {out} ({exc.strerror}); they are in {partial}"
        ) from None
    print(
        f"wrote {out}/: mesh.glb/.obj/.ply, turntable, views.png, metrics.json "
        f"({n} steps, {metrics['seconds']} s)"
    )
    return 0


def _version() -> str:
    from shared_core import __version__

    return __version__


def register(sub: Any) -> None:
    """Add ``dream`` to the ``extradim`` command (the ``extradim.commands`` entry point)."""
    p = sub.add_parser(
        "dream",
        help="text to 3-D by score distillation: a NeRF, its mesh and a turntable",
        description="Optimise a NeRF for a prompt with score distillation from a 2-D prior (DreamFusion).",
    )
    p.add_argument("prompt", nargs="?", default=None, help="the description, e.g. 'a red torus'")
    p.add_argument("-o", "--output", default="dream", help="output folder (new or empty)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default 600)")
    p.add_argument(
        "--max-minutes", type=float, default=5.0, help="wall-clock budget; stops early when reached"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None, help="CFG scale of the prior (default 20)")
    p.add_argument(
        "--init",
        choices=("blob", "points"),
        default=None,
        help="start the field from DreamFusion's blob or from the text-to-points model's cloud "
        "for the same prompt and seed (default: points; blob when the prompt names no shape of "
        "the shape world)",
    )
    p.add_argument(
        "--prior",
        default=None,
        help="views checkpoint or a diffusers Stable Diffusion folder (default: shipped)",
    )
    p.add_argument("--preview-every", type=int, default=50, help="steps between live preview.png updates")
    p.add_argument("--mesh-resolution", type=int, default=96, help="marching-cubes grid per side")
    p.add_argument("--turntable-frames", type=int, default=36)
    p.add_argument(
        "--turntable-size", type=int, default=96, help="turntable and views.png frame size (pixels)"
    )
    p.set_defaults(func=run_dream)
