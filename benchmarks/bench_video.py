"""Speed and memory of text-to-clip generation.

    python benchmarks/bench_video.py [--checkpoint PATH] [--repeats 3] [--threads N]
        [--out benchmarks/results/video_speed.json]

Measures, for the checkpoint's default sampling settings:

1. one clip's wall time (median of ``--repeats``), with the prompt's text encoding included (the
   encoder's cache cleared before each run) and excluded (embeddings cached);
2. peak resident memory of a fresh process that loads the pipeline and the text encoder and
   generates one clip (``resource.getrusage``; psutil is not a dependency);
3. batched throughput: clips/s at batch 16;
4. the DiT forward (CFG batch of 2) with joint vs factorised space-time attention at the
   checkpoint's model size for 8, 16 and 32 (latent) frames, random weights.

Writes JSON and prints a markdown table. Run it on an otherwise idle machine; figures are medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPT = "a red circle moving left"


def _median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


_RSS_SCRIPT = """
import resource, sys, torch
torch.set_num_threads({threads})
sys.path.insert(0, {root!r})
from video.pipeline import VideoPipeline
pipe = VideoPipeline.load({ckpt!r})
pipe.generate([{prompt!r}], seed=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


def peak_rss_mib(checkpoint: str | None, threads: int) -> float:
    """Peak RSS (MiB) of a fresh process: import, load pipeline + text encoder, generate one clip."""
    code = _RSS_SCRIPT.format(threads=threads, root=str(ROOT), ckpt=checkpoint, prompt=PROMPT)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(r.stdout.strip().splitlines()[-1]) / 1024


def attention_costs(cfg: Any, frames: list[int], repeats: int) -> list[dict[str, Any]]:
    """Median DiT forward seconds (batch 2: CFG's conditional + unconditional) per layout and frames."""
    from shared_core.nn.dit import DiT

    rows = []
    c = cfg.autoencoder.latent_channels
    side = cfg.data.size // 4
    L, D = cfg.data.max_text_length, cfg.model.text_dim
    for attention in ("joint", "factorised"):
        mcfg = dataclasses.replace(cfg.model, attention=attention)
        torch.manual_seed(0)
        dit = DiT(mcfg.dit_config(c)).eval()
        for f in frames:
            x = torch.randn(2, c, f, side, side)
            t = torch.full((2,), 500.0)
            ctx, mask, pooled = torch.randn(2, L, D), torch.ones(2, L, dtype=torch.bool), torch.randn(2, D)
            args = (x, t)
            kwargs = {"context": ctx, "context_mask": mask, "pooled": pooled}
            with torch.no_grad():
                sec = _median_time(partial(dit, *args, **kwargs), repeats)
            pt, ph, pw = mcfg.patch_size
            tokens = (f // pt) * (side // ph) * (side // pw)
            rows.append(
                {"attention": attention, "frames": f, "tokens": tokens, "forward_ms": round(sec * 1e3, 2)}
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", default=None, help="default: the shipped checkpoints/video/shapes.safetensors"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "video_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    from video.pipeline import VideoPipeline

    t = time.perf_counter()
    pipe = VideoPipeline.load(args.checkpoint)
    load_s = time.perf_counter() - t
    st = pipe.settings(None, None, None)

    def with_text() -> None:
        pipe.text._cache.clear()  # the prompt is encoded again each time
        pipe.generate([PROMPT], seed=0)

    one_with_text = _median_time(with_text, args.repeats)
    pipe.text.encode([PROMPT], pad_to=pipe.cfg.data.max_text_length)
    one_without_text = _median_time(lambda: pipe.generate([PROMPT], seed=0), args.repeats)
    prompts = [f"{PROMPT}" if i % 2 == 0 else "a blue square growing" for i in range(args.batch)]
    batch_s = _median_time(
        lambda: pipe.generate(prompts, seed=0, batch_size=args.batch), max(1, args.repeats // 2), warmup=0
    )
    rss = peak_rss_mib(str(pipe.checkpoint), args.threads)
    attn = attention_costs(pipe.cfg, args.frames, args.repeats)

    result = {
        "checkpoint": str(pipe.checkpoint),
        "checkpoint_sha256": pipe.checkpoint_sha256,
        "settings": st,
        "clip": [pipe.frames, pipe.size, pipe.size],
        "model": dataclasses.asdict(pipe.cfg.model),
        "threads": args.threads,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
        },
        "load_s": round(load_s, 3),
        "one_clip_s_with_text": round(one_with_text, 4),
        "one_clip_s_without_text": round(one_without_text, 4),
        "batch": args.batch,
        "batch_clips_per_s": round(args.batch / batch_s, 3),
        "peak_rss_mib": round(rss, 1),
        "attention": attn,
        "repeats": args.repeats,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    f, s = pipe.frames, pipe.size
    print(
        f"\n| {f}x{s}x{s} clip, {st['sampler']} x{st['steps']}, guidance {st['guidance']}, "
        f"{args.threads} threads | value |"
    )
    print("|---|---|")
    print(f"| pipeline + text encoder load | {load_s:.2f} s |")
    print(f"| one clip, text encoding included (median of {args.repeats}) | {one_with_text:.3f} s |")
    print(f"| one clip, text embeddings cached | {one_without_text:.3f} s |")
    print(f"| batch of {args.batch} | {args.batch / batch_s:.2f} clips/s |")
    print(f"| peak RSS, fresh process (load + one clip) | {rss:.0f} MiB |")
    print("\n| DiT forward (batch 2) | " + " | ".join(f"{n} frames" for n in args.frames) + " |")
    print("|---|" + "---|" * len(args.frames))
    for layout in ("joint", "factorised"):
        cells = [f"{r['forward_ms']:.1f} ms ({r['tokens']} tok)" for r in attn if r["attention"] == layout]
        print(f"| {layout} | " + " | ".join(cells) + " |")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
