"""`extradim points`: text to coloured point cloud (and mesh).

    extradim points "a red torus" -o torus.ply [--mesh torus.glb] [--num-points 2048] [--seed 0]
        [--steps N] [--guidance S] [--sampler NAME] [--base CKPT] [--upsampler CKPT]

Writes the cloud (``.ply`` with 8-bit colours, or ``.npy`` (N, 6) float32: xyz, rgb in [-1, 1]), a
preview of four views beside it (``<output>.preview.png``; the doubled suffix cannot clash with
another output), optionally a watertight mesh (``--mesh``: ``.glb``, ``.obj`` or ``.ply``, from
``threed.mesh.points_to_mesh``), and a JSON manifest beside the cloud and beside the mesh
(``<file>.json``: prompt, parsed (colour, shape) or null, seed, sampler settings, num_points, both
checkpoints with sha256, version, timings).

Every input error (empty prompt, bad suffix or folder, clashing paths, missing or corrupt
checkpoint, bad sampler settings, num-points out of range) is reported before generation as one
line, exit code 2, with nothing written. A prompt the shape world cannot parse still generates,
with one line ``extradim: warning: prompt is out of the training domain (...)``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any, Literal

from shared_core.errors import ExtradimError, clean_warnings, first_line
from shared_core.io import check_writable
from shared_core.text import check_prompt

__all__ = ["check_outputs", "register", "run_points"]

CLOUD_SUFFIXES = (".ply", ".npy")


def add_box_options(parser: argparse.ArgumentParser) -> None:
    """``--box CKPT`` / ``--no-box`` for a command that loads a ``PointsPipeline``; see ``box_option``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--box", default=None, help="box-stage checkpoint (default: the shipped one with the shipped base)"
    )
    group.add_argument(
        "--no-box",
        action="store_true",
        help="no box stage: the base's clouds as drawn (refused for a box-conditioned base: the shipped one)",
    )


def box_option(args: argparse.Namespace) -> str | Literal[False] | None:
    """The ``box`` argument of ``PointsPipeline.load`` that ``add_box_options``' flags ask for."""
    return False if args.no_box else args.box


def preview_path(output: Path) -> Path:
    """``<output>.preview.png``, e.g. ``torus.ply.preview.png``."""
    return output.with_name(output.name + ".preview.png")


def _manifest(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def check_outputs(output: str | Path, mesh: str | Path | None) -> tuple[Path, Path, Path | None]:
    """Validate every path the command will write, before any work: (cloud, preview, mesh).

    Raises:
        ExtradimError: unknown suffix, missing or read-only folder, a folder in the way, or two
            outputs (files or manifests) on the same path.
    """
    from threed.mesh import MESH_SUFFIXES

    cloud = check_writable(output, CLOUD_SUFFIXES)
    preview = check_writable(preview_path(cloud), (".png",))
    mesh_path = check_writable(mesh, MESH_SUFFIXES) if mesh is not None else None
    files = [cloud, _manifest(cloud), preview] + ([mesh_path, _manifest(mesh_path)] if mesh_path else [])
    for f in files:
        check_writable(f)
    resolved = [f.resolve() for f in files]
    if len(set(resolved)) != len(resolved):
        raise ExtradimError(f"--mesh {mesh} and -o {output} would write the same file")
    return cloud, preview, mesh_path


def domain_warning(prompt: str) -> str | None:
    """The out-of-domain message for a prompt ``parse_caption`` cannot read, else None."""
    from threed.world import parse_caption

    if parse_caption(prompt) is not None:
        return None
    return (
        "prompt is out of the training domain (the model knows 'a {colour} {shape}' and paraphrases: "
        "7 colours x 10 shapes); generating anyway"
    )


def run_points(args: argparse.Namespace) -> int:
    """Validate everything, load the pipeline, generate one cloud, write it (+ preview, mesh, manifests)."""
    import torch

    with torch.no_grad():
        return _run_points(args)


def _run_points(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared_core.io import write_manifest
    from threed.io import save_points
    from threed.mesh import export_mesh, points_to_mesh
    from threed.pipeline import PointsPipeline
    from threed.render import save_preview
    from threed.world import parse_caption

    # 1. Inputs, before any model is loaded.
    if args.prompt is None:
        raise ExtradimError("no prompt: give one, e.g. 'a red torus'")
    prompt = check_prompt(args.prompt)
    cloud_path, preview, mesh_path = check_outputs(args.output, args.mesh)

    # 2. Model and settings: a bad checkpoint, sampler setting or point count fails here, still
    # before anything is written.
    t0 = time.perf_counter()
    pipe = PointsPipeline.load(args.base, args.upsampler, box=box_option(args))
    st = pipe.settings(args.steps, args.guidance, args.sampler, args.guidance_rescale)
    pipe.check_num_points(args.num_points)
    timings = {"load_s": time.perf_counter() - t0}

    printed: set[str] = set()
    if (msg := domain_warning(prompt)) is not None:
        print(f"extradim: warning: {msg}", file=sys.stderr)
    t = time.perf_counter()
    with clean_warnings(printed):  # encode once up front: warnings come before the progress bar
        pipe.text.encode([prompt], pad_to=pipe.base_cfg.data.max_text_length)
    timings["encode_s"] = time.perf_counter() - t

    # 3. Generate (the base's steps, then the upsampler's when more points than the coarse cloud).
    upsample = args.num_points > pipe.coarse_points
    total = st["steps"] + (st["upsampler_steps"] if upsample else 0)
    t = time.perf_counter()
    with (
        tqdm(total=total, desc=f"{st['sampler']} x{st['steps']}", unit="step") as bar,
        clean_warnings(printed),
    ):
        cloud = pipe.generate(
            [prompt], seed=args.seed, num_points=args.num_points, callback=bar.update,
            **{k: st[k] for k in ("steps", "guidance", "sampler", "guidance_rescale")},
        )[0]  # fmt: skip
    timings["generate_s"] = time.perf_counter() - t

    # 4. Write: the cloud, its preview and manifest, then the mesh and its manifest.
    parsed = parse_caption(prompt)
    common: dict[str, Any] = {
        "job": "points",
        "prompt": prompt,
        "parsed": {"colour": parsed[0], "shape": parsed[1]} if parsed else None,
        "seed": args.seed,
        **st,
        "num_points": args.num_points,
        "checkpoints": {
            "box": str(pipe.box_checkpoint) if pipe.box_checkpoint else None,
            "base": str(pipe.checkpoints[0]),
            "upsampler": str(pipe.checkpoints[1]),
        },
        "checkpoint_sha256": {
            "box": pipe.box_sha256 or None,
            "base": pipe.checkpoint_sha256[0],
            "upsampler": pipe.checkpoint_sha256[1],
        },
        "text_encoder": pipe.text.name,
    }
    if not upsample:  # the coarse cloud alone: the upsampler did not run
        common["upsampler_steps"] = 0
    t = time.perf_counter()
    save_points(cloud, cloud_path)
    save_preview(cloud, preview)
    timings["write_s"] = time.perf_counter() - t
    mesh = None
    mesh_error = None
    if mesh_path is not None:
        t = time.perf_counter()
        try:
            mesh = points_to_mesh(cloud)
        except ValueError as exc:  # e.g. a cloud that encloses no volume
            mesh_error = first_line(exc)
        timings["mesh_s"] = time.perf_counter() - t
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rounded = {k: round(v, 3) for k, v in timings.items()}
    outputs = {"cloud": cloud_path.name, "preview": preview.name, "mesh": str(mesh_path) if mesh else None}
    write_manifest(cloud_path, **common, outputs=outputs, timings=rounded, time=stamp)
    if mesh_error is not None:
        raise ExtradimError(f"could not mesh the generated cloud ({mesh_error}); wrote {cloud_path} only")
    if mesh is not None and mesh_path is not None:
        export_mesh(mesh, mesh_path)
        write_manifest(
            mesh_path, **common, source_cloud=str(cloud_path), watertight=bool(mesh.is_watertight),
            vertices=len(mesh.vertices), faces=len(mesh.faces), timings=rounded, time=stamp,
        )  # fmt: skip
    extra = f", {mesh_path}" if mesh_path else ""
    print(f"wrote {cloud_path}, {preview.name}{extra} (+ .json manifest{'s' if mesh_path else ''})")
    return 0


def register(sub: Any) -> None:
    """Add ``points`` to the ``extradim`` command (the ``extradim.commands`` entry point)."""
    p = sub.add_parser(
        "points",
        help="generate a coloured point cloud (.ply/.npy) and optionally a mesh from a text prompt",
        description="Generate a point cloud of the shape world from text, e.g. 'a red torus'.",
    )
    p.add_argument("prompt", nargs="?", default=None, help="the description, e.g. 'a red torus'")
    p.add_argument(
        "-o",
        "--output",
        default="points.ply",
        help="output .ply or .npy (+ .preview.png and .json beside it)",
    )
    p.add_argument("--mesh", default=None, help="also write a watertight mesh: .glb, .obj or .ply")
    p.add_argument("--num-points", type=int, default=2048, help="points in the cloud (coarse..8192)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="base denoising steps (default: the checkpoint's)")
    p.add_argument(
        "--guidance", type=float, default=None, help="CFG scale s (1: none; default: the checkpoint's)"
    )
    p.add_argument(
        "--guidance-rescale",
        type=float,
        default=None,
        help="guidance rescale phi in 0..1, with --guidance > 1 (default: the checkpoint's)",
    )
    p.add_argument("--sampler", default=None, help="base sampler name (default: the checkpoint's)")
    p.add_argument("--base", default=None, help="base checkpoint (default: checkpoints/threed/points_base)")
    p.add_argument(
        "--upsampler",
        default=None,
        help="upsampler checkpoint (default: checkpoints/threed/points_upsampler)",
    )
    add_box_options(p)
    p.set_defaults(func=run_points)
