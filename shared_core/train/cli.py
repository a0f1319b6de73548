"""``extradim train <modality> --config FILE [--out DIR] [--resume] [key=value ...]``.

Runs the same way in one process and under torchrun (``torchrun --nproc_per_node=N -m
shared_core.cli train ...``): ranks are read from the environment, only rank 0 writes. After
training, the modality's evaluation (if it has one) runs on the EMA weights, sharded over the ranks,
and its result is written to ``<out>/eval.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shared_core.io import write_json
from shared_core.train.distributed import init_distributed, shutdown_distributed
from shared_core.train.modality import available_modalities, build_trainer, get_modality

__all__ = ["register_cli", "run_train"]


class _IntermixedParser(argparse.ArgumentParser):
    """Lets KEY=VALUE overrides stand before, between or after options.

    Plain argparse assigns a ``nargs="*"`` positional only the words before the first option, so
    ``train toy2d --config c.yaml train.steps=10`` would reject ``train.steps=10``; intermixed parsing
    (Python 3.7+) reads options first, then all positionals. The guard stops the recursion, because
    ``parse_known_intermixed_args`` itself calls ``parse_known_args``.
    """

    _in_intermixed = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        if self._in_intermixed:
            return super().parse_known_args(args, namespace)
        self._in_intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._in_intermixed = False


def register_cli(sub: Any) -> None:
    """Add the ``train`` subcommand to the ``extradim`` parser."""
    p = sub.add_parser(
        "train",
        help="train a model for a modality from a YAML config",
        description="Train a diffusion model. Overrides are dotted keys, "
        "e.g. train.steps=100 train.optim.lr=3e-4.",
    )
    p.add_argument(
        "modality", help=f"modality name (built-in and installed: {', '.join(available_modalities())})"
    )
    p.add_argument("--config", type=Path, default=None, help="YAML config (default: the modality's defaults)")
    p.add_argument(
        "--out", type=Path, default=None, help="run directory (default: runs/<modality>/<config name>)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --out (fresh start if none)",
    )
    p.add_argument("--no-eval", action="store_true", help="skip the modality's evaluation after training")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, parsed as YAML values"
    )
    p.set_defaults(func=run_train)
    # The parent parser made `p`; give it intermixed parsing without touching the parent's class.
    p.__class__ = _IntermixedParser


def run_train(args: argparse.Namespace) -> int:
    modality = get_modality(args.modality)
    cfg = modality.load_config(args.config, args.overrides)  # config errors surface before any work
    out = args.out or Path("runs") / modality.name / (args.config.stem if args.config else "default")
    info = init_distributed()
    try:
        trainer = build_trainer(modality, cfg, out, dist_info=info, resume=args.resume)
        summary: dict[str, Any] = {"run_dir": str(out), **trainer.fit(resume=args.resume)}
        if not args.no_eval:
            result = modality.evaluate(trainer.ema.module, cfg, out_dir=out, dist_info=info)
            if result is not None:
                summary["eval"] = result
                if info.is_main:
                    write_json(out / "eval.json", result)
        if info.is_main:
            print(json.dumps(summary))
    finally:
        shutdown_distributed()
    return 0
