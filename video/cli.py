"""`extradim video`: text to clip.

    extradim video "a red circle moving left" -o clip.mp4 [--seed 0] [--steps N] [--sampler NAME]
        [--guidance S] [--checkpoint PATH] [--batch-size 16] [--scale 4] [--fps 8]
    extradim video --batch-file prompts.txt -o clips.gif

With ``--batch-file`` (one prompt per line, blank lines skipped) prompt ``i`` (0-based, counting
non-blank lines) goes to ``<stem>_<i:03d><suffix>``, e.g. ``clips_000.gif``. Prompt ``i`` draws its
noise (initial and, for stochastic samplers such as the default ``dpmpp_2m_sde``, per step)
from ``(seed, i)``, so line 0 of a batch file gives the same clip as the single prompt with the
same seed (bit for bit with ``--batch-size 1``; larger batches change only float round-off). Each
output gets a JSON manifest beside it (``<output>.json``: prompt, seed, sampler, steps, guidance,
checkpoint path and sha256, version, time).

Every input error (empty prompt, bad suffix or folder, missing or corrupt checkpoint, bad sampler
settings) is reported before generation as one line, exit code 2, with nothing written. A prompt
longer than the text encoder's limit is truncated with a one-line warning.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared_core.errors import ExtradimError, clean_warnings
from shared_core.text import check_prompt
from video.export import check_output, write_clips

__all__ = ["output_paths", "read_prompts", "register", "run_video"]


def read_prompts(path: str | Path) -> list[str]:
    """Non-blank lines of a prompt file, stripped. Missing/unreadable/empty files are an ``ExtradimError``."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExtradimError(f"cannot read --batch-file {p}: {exc.__class__.__name__}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ExtradimError(f"--batch-file {p} has no prompts")
    return prompts


def output_paths(output: Path, count: int, batch: bool) -> list[Path]:
    """``[output]`` for one prompt, else ``<stem>_<i:03d><suffix>`` for i in 0..count-1."""
    if not batch:
        return [output]
    width = max(3, len(str(count - 1)))
    return [output.with_name(f"{output.stem}_{i:0{width}d}{output.suffix}") for i in range(count)]


def run_video(args: argparse.Namespace) -> int:
    """Validate everything, load the pipeline, generate in batches and write each clip + manifest."""
    import torch

    with torch.no_grad():
        return _run_video(args)


def _run_video(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from shared_core.io import write_manifest
    from video.pipeline import VideoPipeline

    # 1. Inputs, before any model is loaded.
    output = check_output(args.output)
    if args.batch_file is not None and args.prompt is not None:
        raise ExtradimError("give a prompt or --batch-file, not both")
    if args.batch_file is None and args.prompt is None:
        raise ExtradimError("no prompt: give one, e.g. 'a red circle moving left', or --batch-file FILE")
    prompts = read_prompts(args.batch_file) if args.batch_file is not None else [args.prompt]
    for i, p in enumerate(prompts):
        try:
            check_prompt(p)
        except ExtradimError as exc:
            raise ExtradimError(f"prompt {i}: {exc}" if args.batch_file else str(exc)) from None
    paths = output_paths(output, len(prompts), args.batch_file is not None)
    for p in paths:
        check_output(p)
    if args.batch_size < 1 or args.scale < 1 or args.fps <= 0:
        raise ExtradimError("--batch-size and --scale must be >= 1 and --fps > 0")

    # 2. Model and settings (a bad checkpoint or sampler setting fails here, still before writing).
    pipe = VideoPipeline.load(args.checkpoint)
    st = pipe.settings(args.steps, args.sampler, args.guidance)
    printed: set[str] = set()
    with clean_warnings(printed):  # encode once up front: warnings come before the progress bar
        pipe.text.encode(prompts, pad_to=pipe.cfg.data.max_text_length)

    # 3. Generate batch by batch, writing each batch's clips as soon as they exist.
    common = {
        "job": "video",
        "seed": args.seed,
        "sampler": st["sampler"],
        "steps": st["steps"],
        "guidance": st["guidance"],
        "spacing": st["spacing"],
        "checkpoint": str(pipe.checkpoint),
        "checkpoint_sha256": pipe.checkpoint_sha256,
        "text_encoder": pipe.text.name,
        "frames": pipe.frames,
        "size": pipe.size,
        "fps": args.fps,
        "scale": args.scale,
    }
    desc = f"{st['sampler']} x{st['steps']}" + (f", {len(prompts)} clips" if len(prompts) > 1 else "")
    with tqdm(total=st["steps"] * len(prompts), desc=desc, unit="clip-step") as bar:
        update: Callable[[int], Any] = bar.update
        for start in range(0, len(prompts), args.batch_size):
            chunk = prompts[start : start + args.batch_size]
            t0 = time.perf_counter()
            with clean_warnings(printed):
                clips = pipe.generate(
                    chunk, seed=args.seed, batch_size=args.batch_size, callback=update, first_index=start,
                    **{k: st[k] for k in ("steps", "sampler", "guidance")},
                )  # fmt: skip
            seconds = (time.perf_counter() - t0) / len(chunk)
            for j, clip in enumerate(clips):
                i = start + j
                write_clips(paths[i], clip[None], scale=args.scale, fps=args.fps)
                write_manifest(
                    paths[i],
                    **common,
                    prompt=prompts[i],
                    prompt_index=i,
                    seconds_per_clip=round(seconds, 3),
                    time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                )
    where = paths[0] if len(paths) == 1 else f"{paths[0]} ... {paths[-1].name}"
    print(f"wrote {where} (+ .json manifest{'s' if len(paths) > 1 else ''})")
    return 0


def register(sub: Any) -> None:
    """Add ``video`` to the ``extradim`` command (the ``extradim.commands`` entry point)."""
    p = sub.add_parser(
        "video",
        help="generate a clip from a text prompt (.mp4, .gif or .png frame strip)",
        description="Generate 16-frame clips of the Shapes world from text, e.g. 'a red circle moving left'.",
    )
    p.add_argument("prompt", nargs="?", default=None, help="the description (or use --batch-file)")
    p.add_argument(
        "-o", "--output", default="clip.mp4", help="output .mp4, .gif or .png (a .json manifest beside it)"
    )
    p.add_argument("--seed", type=int, default=0, help="prompt i uses noise (seed, i)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
    p.add_argument("--sampler", default=None, help="sampler name (default: the checkpoint's)")
    p.add_argument(
        "--guidance", type=float, default=None, help="CFG scale s (1: none; default: the checkpoint's)"
    )
    p.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint (default: the shipped one)")
    p.add_argument(
        "--batch-file",
        default=None,
        help="one prompt per line; prompt i is written to <stem>_<i:03d><suffix>",
    )
    p.add_argument("--batch-size", type=int, default=16, help="clips generated at once")
    p.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling of the frames")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second of .mp4 and .gif")
    p.set_defaults(func=run_video)
