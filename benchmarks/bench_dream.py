"""Speed of text-to-3D by score distillation (a command, not a test).

Runs ``extradim dream`` in a fresh process per prompt at default settings (or ``--steps``) with
``--threads`` intra-op threads and collects from each run's ``metrics.json``: wall time of the
optimisation, steps done, the per-step cost split (render, prior, backward) and peak RSS; plus the
whole command's wall time (prior loading, optimisation, mesh, turntable, writes).

    python benchmarks/bench_dream.py                               # 1 prompt, default settings
    python benchmarks/bench_dream.py --prompts "a red torus" "a blue cube" --steps 300 --out /tmp/d.json

Writes JSON (default ``benchmarks/results/dream_speed.json``) and prints one line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from shared_core.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "dream_speed.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", nargs="+", default=["a red torus"])
    ap.add_argument("--steps", type=int, default=None, help="default: the command's")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prior", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    env = {**os.environ, "EXTRADIM_NUM_THREADS": str(args.threads)}
    runs = []
    for i, prompt in enumerate(args.prompts):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "o"
            cmd = [sys.executable, "-m", "shared_core.cli", "dream", prompt, "-o", str(out), "--seed", str(i)]
            cmd += ["--steps", str(args.steps)] if args.steps else []
            cmd += ["--prior", args.prior] if args.prior else []
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stderr.strip().splitlines()[-1], file=sys.stderr)
                return 1
            m = json.loads((out / "metrics.json").read_text())
        row = {"prompt": prompt, "command_s": round(wall, 1), **m}
        runs.append(row)
        split = ", ".join(f"{k} {v} ms" for k, v in m["per_step_ms"].items())
        print(f"{prompt!r}: {m['steps']} steps in {m['seconds']} s ({split}); command {wall:.0f} s, "
              f"peak RSS {m['peak_rss_mb']} MB")  # fmt: skip
    write_json(args.out, {"threads": args.threads, "torch": torch.__version__, "machine": platform.processor()
                          or platform.machine(), "runs": runs})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
