"""Evaluation of a text-to-clip pipeline on the Shapes world.

    extradim eval video [--checkpoint PATH] [--num-clips 252] [--out DIR] [--seed 0]

One generation pass (``n // 2`` seen and ``n - n // 2`` held-out canonical prompts) feeds every
metric, each reported next to its reference on real clips of the same prompts:

- attribute-checker accuracy per attribute, seen and held-out (``video.checker``); on real clips
  it is the ceiling;
- Fréchet distance and KID on the features of a small classifier trained on real clips
  (``video.features``), with the real-vs-real floor: the same metric between two disjoint real
  sets of the same size (the Fréchet distance of finite samples is biased upwards, so only the
  ratio to the floor means something);
- temporal consistency: flicker of the background and high-frequency temporal energy;
- timings.

``DIR/eval.json`` holds the numbers and the pass/fail flags of the quality bar (``QUALITY_BAR``);
``DIR/contact_sheet.png`` shows a few generated clips as frame strips, each above a real clip of
its prompt. ``checker_report`` is the checker part alone (the training loop's periodic evaluation).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shared_core.errors import ExtradimError
from shared_core.io import atomic_path, check_out_dir, write_json
from video.checker import attribute_accuracy, check_clips
from video.world import Attributes, canonical_caption

__all__ = [
    "QUALITY_BAR",
    "EvalSet",
    "checker_metrics",
    "checker_report",
    "eval_prompts",
    "evaluate_pipeline",
    "generate_eval_set",
    "quality_flags",
    "register",
    "temporal_metrics",
    "write_contact_sheet",
]

# Minimum checker accuracies and the maximum Fréchet-to-floor ratio of a model worth shipping.
QUALITY_BAR: dict[str, float] = {
    "seen_colour": 0.95,
    "seen_motion": 0.90,
    "seen_shape": 0.85,
    "held_out_colour": 0.75,
    "held_out_shape": 0.75,
    "held_out_motion": 0.75,
    "frechet_over_floor": 2.0,
}


def eval_prompts(combos: tuple[Attributes, ...], n: int) -> list[Attributes]:
    """``n`` targets cycling through ``combos`` (every combination as evenly as ``n`` allows)."""
    return [combos[i % len(combos)] for i in range(n)]


@dataclass
class EvalSet:
    """Generated clips of the evaluation prompts.

    Attributes:
        targets: B attributes; prompt ``i`` is ``canonical_caption(targets[i])``.
        splits: B names, "seen" or "held_out".
        clips: (B, 3, F, H, W) in [-1, 1].
        seconds: wall time of the generation.
    """

    targets: list[Attributes]
    splits: list[str]
    clips: Tensor
    seconds: float

    @property
    def prompts(self) -> list[str]:
        return [canonical_caption(a) for a in self.targets]


def _split_targets(pipe: Any, n: int) -> tuple[list[Attributes], list[str]]:
    from video.modality import make_world

    world = make_world(pipe.cfg.data)
    targets: list[Attributes] = []
    splits: list[str] = []
    for split, combos, count in (
        ("seen", world.train_combos, n // 2),
        ("held_out", world.held_out, n - n // 2),
    ):
        if not combos or count == 0:
            continue
        targets += eval_prompts(combos, count)
        splits += [split] * count
    return targets, splits


def generate_eval_set(pipe: Any, n: int, *, seed: int = 0, callback: Any = None, **settings: Any) -> EvalSet:
    """Generate ``n // 2`` seen and ``n - n // 2`` held-out prompts in one pass.

    ``settings`` (steps, sampler, guidance, batch_size) go to ``pipe.generate``.
    """
    targets, splits = _split_targets(pipe, n)
    start = time.perf_counter()
    prompts = [canonical_caption(a) for a in targets]
    clips = pipe.generate(prompts, seed=seed, callback=callback, **settings)
    return EvalSet(targets, splits, clips, time.perf_counter() - start)


def checker_metrics(clips: Tensor, targets: list[Attributes], splits: list[str]) -> dict[str, Any]:
    """Checker accuracy per split: ``{split: {clips, colour, shape, motion, single_object, all}}``.

    Args:
        clips: (B, 3, F, H, W) in [-1, 1] or uint8.
        targets: B attributes; splits: B split names.
    """
    result = check_clips(clips)
    report: dict[str, Any] = {}
    for split in dict.fromkeys(splits):
        idx = [i for i, s in enumerate(splits) if s == split]
        sub = type(result)(
            *([getattr(result, k)[i] for i in idx] for k in ("colour", "shape", "motion")),
            *(
                getattr(result, k)[idx]
                for k in (
                    "num_objects",
                    "single_object",
                    "rgb",
                    "fill",
                    "top_fill",
                    "shift",
                    "log_area_ratio",
                )
            ),
        )
        report[split] = {"clips": len(idx), **attribute_accuracy(sub, [targets[i] for i in idx])}
    return report


def checker_report(pipe: Any, n: int, *, seed: int = 0, out_dir: Path | None = None) -> dict[str, Any]:
    """Per-attribute checker accuracy on ``n // 2`` seen and ``n - n // 2`` held-out prompts."""
    ev = generate_eval_set(pipe, n, seed=seed)
    return checker_metrics(ev.clips, ev.targets, ev.splits)


def temporal_metrics(clips: Tensor, threshold: float = 0.3, margin: int = 3) -> dict[str, float | None]:
    """Temporal consistency of clips (lower is steadier), intensities in [0, 1].

    - ``background_flicker``: mean |x_{t+1} - x_t| over background pixels, those more than
      ``margin`` pixels away from any object pixel (brightest channel above ``threshold``) in both
      frames. Real clips have an exactly constant black background, so anything above 0 is flicker
      the model added. None when no pixel qualifies (``background_fraction`` is 0);
    - ``background_fraction``: the share of frame pairs' pixels that counted as background;
    - ``temporal_hf``: mean |x_{t+1} - 2 x_t + x_{t-1}| over all pixels, the energy of the temporal
      second difference. Constant-velocity motion keeps it low; frame-to-frame jitter raises it.

    Args:
        clips: (B, 3, F, H, W) in [-1, 1] or uint8.
    """
    import torch.nn.functional as F

    x = clips.float() / 255 if clips.dtype == torch.uint8 else (clips.float().clamp(-1, 1) + 1) / 2
    b, _, f, h, w = x.shape
    d1 = x[:, :, 1:] - x[:, :, :-1]  # (B, 3, F-1, H, W)
    fg = (x.amax(1) > threshold).float().view(b * f, 1, h, w)
    near = F.max_pool2d(fg, 2 * margin + 1, 1, margin).view(b, f, h, w) > 0  # object + margin
    bg = (~near[:, 1:] & ~near[:, :-1])[:, None].expand_as(d1)  # (B, 3, F-1, H, W)
    flicker = float(d1.abs()[bg].mean()) if bool(bg.any()) else None
    hf = float((x[:, :, 2:] - 2 * x[:, :, 1:-1] + x[:, :, :-2]).abs().mean()) if f >= 3 else None
    return {"background_flicker": flicker, "background_fraction": float(bg.float().mean()), "temporal_hf": hf}


def quality_flags(report: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail of each ``QUALITY_BAR`` item given the report's checker and Fréchet sections."""
    gen = report["checker"]["generated"]
    checks: dict[str, bool] = {}
    for key, bar in QUALITY_BAR.items():
        if key == "frechet_over_floor":
            checks[key] = bool(report["frechet"]["ratio"] <= bar)
            continue
        split, attr = key.rsplit("_", 1)
        checks[key] = bool(split in gen and gen[split][attr] >= bar)
    return {"thresholds": dict(QUALITY_BAR), "checks": checks, "pass": all(checks.values())}


def write_contact_sheet(
    path: str | os.PathLike[str],
    generated: Tensor,
    real: Tensor,
    labels: list[str],
    *,
    scale: int = 2,
    frame_step: int = 2,
) -> Path:
    """A PNG: for each clip a text label, its generated frame strip, and a real clip of the prompt below.

    Args:
        generated: (K, 3, F, H, W) in [-1, 1].
        real: (K, 3, F, H, W) in [-1, 1].
        labels: K strings.
        scale: nearest-neighbour upscaling; frame_step: every ``frame_step``-th frame is shown.
    """
    from PIL import Image, ImageDraw

    from video.export import frame_strip, to_frames

    gap, band = 2, 14
    rows = []
    for k in range(len(labels)):
        pair = torch.cat([generated[k : k + 1], real[k : k + 1]])[:, :, ::frame_step]
        strip = frame_strip(to_frames(pair, scale), gap)  # (2 (H s + gap) - gap, F' (W s + gap) - gap, 3)
        label = Image.new("RGB", (strip.shape[1], band), (40, 40, 40))
        ImageDraw.Draw(label).text(
            (3, 1), f"{labels[k]}  (top: generated, bottom: real)", fill=(230, 230, 230)
        )
        rows += [np.asarray(label), strip, np.zeros((3 * gap, strip.shape[1], 3), np.uint8)]
    sheet = np.concatenate(rows)
    out = Path(path)
    with atomic_path(out) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return out


def evaluate_pipeline(
    pipe: Any,
    n: int = 252,
    *,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    feature_net: Any = None,
    features_path: str | os.PathLike[str] | None = None,
    settings: dict[str, Any] | None = None,
    contact_clips: int = 8,
    callback: Any = None,
) -> dict[str, Any]:
    """Every metric of the module docstring from one generation pass; writes ``eval.json`` and
    ``contact_sheet.png`` into ``out_dir`` when given.

    Args:
        pipe: a ``VideoPipeline``.
        n: generated clips (>= 4: at least two per split for the distribution metrics).
        seed: generation seed (prompt ``i`` gets noise ``(seed, i)``).
        feature_net: a ``FeatureNet``; default: ``load_feature_net(features_path)``.
        settings: ``steps``, ``sampler``, ``guidance``, ``batch_size`` for ``pipe.generate``.
    """
    from shared_core.metrics import frechet_distance, kernel_inception_distance
    from video.features import DEFAULT_FEATURES, extract_features, load_feature_net
    from video.modality import make_world

    if n < 4:
        raise ExtradimError(f"--num-clips must be >= 4, got {n}")
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    resolved = pipe.settings(settings.get("steps"), settings.get("sampler"), settings.get("guidance"))
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if feature_net is None:
        feature_net = load_feature_net(features_path or DEFAULT_FEATURES)
    timings["feature_net_load_s"] = time.perf_counter() - t0

    ev = generate_eval_set(pipe, n, seed=seed, callback=callback, **settings)
    timings["generate_s"] = ev.seconds
    timings["clips_per_s"] = n / max(ev.seconds, 1e-9)

    # Real clips of the same prompts: set A is the reference, set B (disjoint clip ids) gives the floor.
    t = time.perf_counter()
    world = make_world(pipe.cfg.data, split="all")
    real_a = world.render(ev.targets, index=1).clips
    real_b = world.render(ev.targets, index=2).clips
    timings["render_real_s"] = time.perf_counter() - t

    t = time.perf_counter()
    checker = {
        "generated": checker_metrics(ev.clips, ev.targets, ev.splits),
        "real": checker_metrics(real_a, ev.targets, ev.splits),
    }
    timings["checker_s"] = time.perf_counter() - t

    t = time.perf_counter()
    f_gen, f_a, f_b = (extract_features(feature_net, c) for c in (ev.clips, real_a, real_b))
    fd, floor = frechet_distance(f_gen, f_a), frechet_distance(f_b, f_a)
    # Sets of at most 1000 clips: KID over the whole sets once (its std is then 0).
    kid, kid_floor = kernel_inception_distance(f_gen, f_a)[0], kernel_inception_distance(f_b, f_a)[0]
    timings["features_s"] = time.perf_counter() - t

    report: dict[str, Any] = {
        "checkpoint": str(pipe.checkpoint) if pipe.checkpoint else None,
        "checkpoint_sha256": pipe.checkpoint_sha256 or None,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "num_clips": n,
        "seed": seed,
        "settings": {**resolved, "batch_size": settings.get("batch_size", 16)},
        "checker": checker,
        "frechet": {
            "generated_vs_real": fd,
            "real_vs_real_floor": floor,
            "ratio": fd / max(floor, 1e-12),
            "clips_per_set": n,
            "feature_dim": int(f_gen.shape[1]),
        },
        "kid": {"generated_vs_real": kid, "real_vs_real_floor": kid_floor},
        "temporal": {"generated": temporal_metrics(ev.clips), "real": temporal_metrics(real_a)},
    }
    report["quality_bar"] = quality_flags(report)
    timings["total_s"] = time.perf_counter() - t0
    report["timings"] = {k: round(v, 3) for k, v in timings.items()}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # A few clips of each split for the contact sheet.
        picks = []
        for split in ("seen", "held_out"):  # evenly spread over each split's prompts
            idx = [j for j, x in enumerate(ev.splits) if x == split]
            picks += idx[:: max(1, len(idx) // (contact_clips // 2))][: contact_clips // 2]
        labels = [f"[{ev.splits[i]}] {ev.prompts[i]}" for i in picks]
        write_contact_sheet(out / "contact_sheet.png", ev.clips[picks], real_a[picks], labels)
        write_json(out / "eval.json", report)
    return report


# ----------------------------------------------------------------------------------------------
# `extradim eval video`
# ----------------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    with torch.no_grad():
        return _run_eval(args)


def _run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from video.features import DEFAULT_FEATURES, load_feature_net
    from video.pipeline import VideoPipeline

    if args.num_clips < 4:
        raise ExtradimError(f"--num-clips must be >= 4, got {args.num_clips}")
    pipe = VideoPipeline.load(args.checkpoint)
    settings = {
        "steps": args.steps,
        "sampler": args.sampler,
        "guidance": args.guidance,
        "batch_size": args.batch_size,
    }
    resolved = pipe.settings(args.steps, args.sampler, args.guidance)  # bad values fail before any work
    feature_net = load_feature_net(args.features or DEFAULT_FEATURES)
    out = check_out_dir(args.out, ("eval.json", "contact_sheet.png"))
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=resolved["steps"] * args.num_clips, desc="eval video", unit="clip-step") as bar:
        report = evaluate_pipeline(
            pipe,
            args.num_clips,
            seed=args.seed,
            out_dir=out,
            feature_net=feature_net,
            settings=settings,
            callback=bar.update,
        )
    gen, real = report["checker"]["generated"], report["checker"]["real"]
    for split in gen:
        g, r = gen[split], real[split]
        print(
            f"{split:>8}: colour {g['colour']:.3f} (real {r['colour']:.3f})  shape {g['shape']:.3f} "
            f"(real {r['shape']:.3f})  motion {g['motion']:.3f} (real {r['motion']:.3f})"
        )
    fr = report["frechet"]
    print(
        f"Fréchet {fr['generated_vs_real']:.4g} (real-vs-real floor {fr['real_vs_real_floor']:.4g}, "
        f"ratio {fr['ratio']:.2f}); KID {report['kid']['generated_vs_real']:.4g} "
        f"(floor {report['kid']['real_vs_real_floor']:.4g})"
    )
    verdict = "PASS" if report["quality_bar"]["pass"] else "FAIL"
    print(f"quality bar: {verdict}; wrote {out / 'eval.json'} and {out / 'contact_sheet.png'}")
    return 0


def register(sub: Any) -> None:
    """Add ``video`` to ``extradim eval`` (the ``extradim.evals`` entry point)."""
    p = sub.add_parser("video", help="checker accuracy, Fréchet/KID and flicker of a text-to-clip model")
    p.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint (default: the shipped one)")
    p.add_argument(
        "--num-clips", type=int, default=252, help="clips generated: half seen, half held-out prompts"
    )
    p.add_argument("--out", default="outputs/eval_video", help="folder for eval.json and contact_sheet.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the checkpoint's)")
    p.add_argument("--sampler", default=None, help="sampler name (default: the checkpoint's)")
    p.add_argument(
        "--guidance", type=float, default=None, help="CFG scale s (1: none; default: the checkpoint's)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--features",
        default=None,
        help="feature-network weights (default: checkpoints/video/features.safetensors, "
        "trained and cached on first use)",
    )
    p.set_defaults(func=run_eval)
