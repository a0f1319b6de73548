"""Which mesh level rule classifies distilled fields best? (a command, not a test).

Distils the eval's objects (``extradim eval dream``'s prompts: every shape, its seed-dependent
colour, default ``DreamConfig``) for the given seeds, caches each field under ``--cache`` (reused on
a rerun), and meshes every field with ``extract_mesh`` at several IoU slacks of the level rule
(``threed.dream.surface_threshold``), reporting the nearest-class accuracy of each. The shipped slack
(0.01) was picked on seeds 0-1 and checked on seeds 2-3:

    python benchmarks/dream_mesh_rule.py --seeds 0 1 --cache /tmp/fields01             # the eval's fields
    python benchmarks/dream_mesh_rule.py --seeds 2 3 --cache /tmp/fields23 --threads 1 # held out

Measured (2026-11-27, shipped prior): seeds 0-1 slack 0 / 0.01 / 0.02 / 0.05: 15 / 16 / 16 / 15 of
20; seeds 2-3 (1 thread): 14 / 15 / 15 / 15 of 20. About 50 s per field at 2 threads.

``--set KEY=VALUE ...`` distils with other ``DreamConfig`` settings (use a fresh ``--cache``), so the
same command compares distillation recipes on a subset, e.g. ``--classes table cube mug dumbbell
--set lambda_tv=0``; ``--prior P`` distils with another views checkpoint (e.g. one trained with
``data.background=random``).

Writes JSON (default ``<cache>/mesh_rule.json``) and prints one line per field and per slack.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from shared_core.io import write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--classes", nargs="+", default=None, help="default: all shapes")
    ap.add_argument("--slacks", type=float, nargs="+", default=[0.0, 0.01, 0.02, 0.05])
    ap.add_argument("--steps", type=int, default=None, help="dream steps (default: DreamConfig's)")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="DreamConfig overrides (YAML values), e.g. guidance=7 lambda_entropy=0.1",
    )
    ap.add_argument("--prior", default=None, help="views checkpoint or diffusers folder (default: shipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", required=True, help="folder of cached fields")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from safetensors.torch import load_file, save_file

    from threed.dream import DreamConfig, dream, extract_mesh
    from threed.dream_cli import load_prior
    from threed.dream_eval import eval_prompt, mesh_cloud, reference_clouds
    from threed.evaluate import nearest_class
    from threed.nerf import GridField
    from threed.world import SHAPES

    overrides = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in args.set)}
    if args.steps is not None:
        overrides["steps"] = args.steps
    cfg = DreamConfig(**overrides)
    refs = {s: r[:, :, :3] for s, r in reference_clouds().items()}
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    prior = None
    rows = []
    for shape in args.classes or SHAPES:
        for seed in args.seeds:
            path = cache / f"{shape}_{seed}.safetensors"
            if not path.is_file():
                prior = prior or load_prior(args.prior)
                t0 = time.perf_counter()
                result = dream(prior, eval_prompt(shape, seed)[1], cfg, seed=seed, progress=False)
                state = {k: v.detach().contiguous() for k, v in result.field.state_dict().items()}
                save_file(state, str(path))
                print(f"distilled {shape} seed {seed} in {time.perf_counter() - t0:.0f} s", flush=True)
            field = GridField(cfg.nerf)
            field.load_state_dict(load_file(str(path)))
            got = {}
            for slack in args.slacks:
                mesh = extract_mesh(field, resolution=96, slack=slack)
                got[str(slack)] = nearest_class(mesh_cloud(mesh)[None, :, :3], refs)[0]
            rows.append({"shape": shape, "seed": seed, "mesh_class": got})
            print(shape, seed, got, flush=True)
    summary = {
        str(s): sum(r["mesh_class"][str(s)] == r["shape"] for r in rows) / len(rows) for s in args.slacks
    }
    for s, acc in summary.items():
        print(f"slack {s}: class accuracy {acc:.3f} over {len(rows)} fields")
    out = Path(args.out) if args.out else cache / "mesh_rule.json"
    record = {
        "prior": args.prior,
        "seeds": args.seeds,
        "threads": args.threads,
        "overrides": overrides,
        "summary": summary,
    }
    write_json(out, {**record, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
