"""What the probe scripts share: their common options (``--per-class``, ``--threads``, ``--out``)
and writing their JSON result where ``--out`` says."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from shared_core.io import write_json


def probe_parser(doc: str | None, per_class: int) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc`` with the options every probe takes."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--per-class", type=int, default=per_class)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    return ap


def parse_probe_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, and set torch's thread count when ``--threads`` asks."""
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def with_sample(cfg: Any, **overrides: Any) -> Any:
    """``cfg`` (a frozen config with a ``sample`` section) with the ``overrides`` that are not None
    set in its ``sample``: the probes' "default: the checkpoint's" options."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, **given)) if given else cfg


def base_clouds(
    pipe: Any, prompts: list[str], ids: list[int], seed: int, settings: dict[str, Any], turn: bool = True
) -> torch.Tensor:
    """``(len(prompts), N, 6)``: the coarse clouds ``pipe`` (a ``threed.pipeline.PointsPipeline``)
    draws for ``prompts`` as items ``ids`` of a run with ``seed``, before upsampling; ``turn=False``
    leaves them in the items' own azimuth frame."""
    emb = pipe.text.encode(prompts, pad_to=pipe.base_cfg.data.max_text_length)
    cond = {"context": emb.tokens, "context_mask": emb.mask, "pooled": emb.pooled}
    with torch.no_grad():
        return pipe._base(cond, ids, seed, settings, None, turn=turn)


def eval_base_clouds(pipe: Any, k: int, shape: str, n: int, settings: dict[str, Any]) -> torch.Tensor:
    """``(n, N, 6)``: the base's clouds for the ``n`` canonical eval prompts of ``shape`` (the ``k``-th
    class, ids ``k n .. k n + n - 1``, seed 0): the clouds ``extradim eval points --seed 0`` draws
    for it at ``per_class = n``, before upsampling. ``pipe`` is a ``threed.pipeline.PointsPipeline``."""
    from threed.evaluate import eval_prompts

    prompts = [p for _, p in eval_prompts(shape, n)]
    return base_clouds(pipe, prompts, list(range(k * n, (k + 1) * n)), 0, settings)


def neighbourhood_mean_radius(xyz: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, N)``: for each point of ``xyz (B, N, 3)``, the mean distance from the origin of its
    ``k`` nearest points (itself included) — the radius smoothed over a neighbourhood."""
    r = xyz.norm(dim=-1)
    idx = torch.cdist(xyz, xyz).topk(k, largest=False).indices
    return torch.gather(r[:, None, :].expand(-1, r.shape[1], -1), 2, idx).mean(-1)


def save_result(out: Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` to ``out`` (parents created, atomically) when ``out`` is given."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)


def finish(out: Path | None, result: dict[str, Any], started: float) -> None:
    """Record and print the seconds since ``started`` (``time.perf_counter``), then save."""
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{result['seconds']} s")
    save_result(out, result)
