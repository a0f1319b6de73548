"""The training engine's learning check: train the class-conditional DiT of ``toy2d`` on CPU, sample
with the EMA weights and classifier-free guidance, and score the samples with the hand-coded shape
checker. Writes a JSON report (accuracy, chance, timings) and prints it.

    .venv/bin/python benchmarks/train_toy2d.py                      # configs/core/toy2d.yaml
    .venv/bin/python benchmarks/train_toy2d.py train.steps=500      # overrides as in `extradim train`

The same run through the CLI: ``extradim train toy2d --config configs/core/toy2d.yaml`` (the result
lands in ``runs/toy2d/toy2d/eval.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from shared_core.io import write_json
from shared_core.train.modality import build_trainer, get_modality

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/core/toy2d.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "runs/toy2d_learning_check")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted check in --out")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()

    modality = get_modality("toy2d")
    cfg = modality.load_config(args.config, args.overrides)
    trainer = build_trainer(modality, cfg, args.out)
    t0 = time.perf_counter()
    summary = trainer.fit(resume=args.resume)
    t1 = time.perf_counter()
    result = modality.evaluate(trainer.ema.module, cfg, out_dir=args.out)
    t2 = time.perf_counter()
    report = {
        **result,
        "final_loss": summary["loss"],
        "steps": summary["step"],
        "train_time_s": round(t1 - t0, 1),
        "eval_time_s": round(t2 - t1, 1),
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "config": str(args.config),
        "overrides": args.overrides,
    }
    write_json(args.out / "learning_check.json", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
