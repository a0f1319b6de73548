"""Speed of text-to-point-cloud generation (a command, not a test).

Measures, on this machine with ``--threads`` intra-op threads:

- one full cloud (base + upsampler at their default steps), median wall time over ``--repeats``
  runs, with text encoding (a fresh prompt each run, so the encoder's cache never answers) and
  without (prompt embeddings cached);
- batched throughput: ``--batch`` prompts in one ``generate`` call, clouds per second;
- mesh extraction (``threed.mesh.points_to_mesh``) on the generated clouds, median seconds;
- peak RSS of a fresh process that loads the pipeline and generates one cloud.

    python benchmarks/bench_points.py                      # the shipped checkpoints
    python benchmarks/bench_points.py --base B --upsampler U --repeats 2 --batch 2 --out /tmp/x.json

Writes JSON (default ``benchmarks/results/points_speed.json``) and a markdown table beside it
(``.md``), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from shared_core.io import atomic_path, write_json
from threed.world import COLOURS, SHAPES

RESULTS = Path(__file__).resolve().parent / "results" / "points_speed.json"


def _prompt(i: int) -> str:
    """A distinct in-domain caption per index (70 canonical, then paraphrases), so each is encoded fresh."""
    templates = ("a {c} {s}", "the {c} {s}", "one {c} {s}", "a single {c} {s}", "a {s} in {c}")
    c, s = list(COLOURS)[i % 7], SHAPES[(i // 7) % 10]
    return templates[(i // 70) % len(templates)].format(c=c, s=s)


def _peak_rss_mb(args: argparse.Namespace) -> float:
    """Peak resident memory (MB) of a fresh process loading the pipeline and generating one cloud."""
    code = (
        "import resource, sys, torch\n"
        f"torch.set_num_threads({args.threads})\n"
        "from threed.pipeline import PointsPipeline\n"
        f"pipe = PointsPipeline.load({args.base!r}, {args.upsampler!r})\n"
        f"pipe.generate(['a red torus'], seed=0, num_points={args.num_points})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def run(args: argparse.Namespace) -> dict[str, Any]:
    from threed.mesh import points_to_mesh
    from threed.pipeline import PointsPipeline

    torch.set_num_threads(args.threads)
    pipe = PointsPipeline.load(args.base, args.upsampler)
    st = pipe.settings()
    pipe.generate([_prompt(999)], seed=0, num_points=args.num_points)  # warm-up (allocations, encoder)

    with_text, without_text, clouds = [], [], []
    for r in range(args.repeats):
        prompt = _prompt(r)
        t = time.perf_counter()
        clouds.append(pipe.generate([prompt], seed=r, num_points=args.num_points)[0])
        with_text.append(time.perf_counter() - t)
        t = time.perf_counter()  # the same prompt again: its embedding now comes from the cache
        pipe.generate([prompt], seed=r, num_points=args.num_points)
        without_text.append(time.perf_counter() - t)
    t = time.perf_counter()
    pipe.text.encode(
        [_prompt(500 + r) for r in range(args.repeats)], pad_to=pipe.base_cfg.data.max_text_length
    )
    encode_s = (time.perf_counter() - t) / args.repeats

    prompts = [_prompt(100 + i) for i in range(args.batch)]
    t = time.perf_counter()
    batch = pipe.generate(prompts, seed=0, num_points=args.num_points, batch_size=args.batch)
    batch_s = time.perf_counter() - t
    clouds += list(batch)

    mesh_s = []
    for cloud in clouds[: args.meshes]:
        t = time.perf_counter()
        try:
            points_to_mesh(cloud)
        except ValueError:  # an untrained checkpoint's cloud may enclose nothing: time it anyway
            pass
        mesh_s.append(time.perf_counter() - t)

    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "threads": args.threads,
        },
        "torch": torch.__version__,
        "checkpoints": [str(p) for p in pipe.checkpoints],
        "checkpoint_sha256": list(pipe.checkpoint_sha256),
        "box_checkpoint": str(pipe.box_checkpoint) if pipe.box_checkpoint else None,
        "box_sha256": pipe.box_sha256 or None,
        "num_points": args.num_points,
        "settings": st,
        "repeats": args.repeats,
        "one_cloud_s": {
            "with_text_encoding_median": statistics.median(with_text),
            "without_text_encoding_median": statistics.median(without_text),
            "text_encoding_per_prompt": encode_s,
            "runs_with_text": with_text,
            "runs_without_text": without_text,
        },
        "batched": {"batch": args.batch, "seconds": batch_s, "clouds_per_s": args.batch / batch_s},
        "mesh_s": {"median": statistics.median(mesh_s), "clouds": len(mesh_s)},
        "peak_rss_mb": _peak_rss_mb(args) if args.rss else None,
    }


def markdown(r: dict[str, Any]) -> str:
    one, b = r["one_cloud_s"], r["batched"]
    rss = f"{r['peak_rss_mb']:.0f} MB" if r["peak_rss_mb"] is not None else "not measured"
    s = r["settings"]
    rows = [
        ("one cloud, with text encoding (median)", f"{one['with_text_encoding_median']:.3f} s"),
        ("one cloud, cached text (median)", f"{one['without_text_encoding_median']:.3f} s"),
        ("text encoding per prompt", f"{one['text_encoding_per_prompt'] * 1000:.1f} ms"),
        (f"batched throughput (batch {b['batch']})", f"{b['clouds_per_s']:.2f} clouds/s"),
        (f"mesh extraction (median of {r['mesh_s']['clouds']})", f"{r['mesh_s']['median']:.3f} s"),
        ("peak RSS, fresh process, one cloud", rss),
    ]
    head = (
        f"Points: {r['num_points']} points, {s['sampler']} x{s['steps']} (guidance {s['guidance']}) + "
        f"upsampler x{s['upsampler_steps']}, {r['machine']['threads']} thread(s), torch {r['torch']}\n\n"
    )
    return head + "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {v} |\n" for a, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=None, help="base checkpoint (default: the shipped one)")
    p.add_argument("--upsampler", default=None, help="upsampler checkpoint (default: the shipped one)")
    p.add_argument("--num-points", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5, help="runs of the one-cloud timings (median reported)")
    p.add_argument("--batch", type=int, default=16, help="prompts of the batched-throughput run")
    p.add_argument("--meshes", type=int, default=5, help="generated clouds meshed")
    p.add_argument("--threads", type=int, default=int(os.environ.get("EXTRADIM_NUM_THREADS", "1")))
    p.add_argument("--no-rss", dest="rss", action="store_false", help="skip the fresh-process peak RSS")
    p.add_argument("--out", default=str(RESULTS), help="JSON path (a .md table is written beside it)")
    args = p.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    table = markdown(result)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(table)
    print(table)
    print(json.dumps({"wrote": [str(out), str(out.with_suffix(".md"))]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
