"""Benchmark our DiT against diffusers' DiTTransformer2DModel on this machine (a command, not a test).

For each size it builds a diffusers model and ours from the *same* weights (the diffusers per-block
embedders are tied to block 0, as in the published checkpoints, so ours uses its shared embedder),
checks that they agree, then times one training step (forward + MSE loss + backward, no optimizer)
of each, interleaved so that machine noise hits both alike. It also measures

- the fp32 matmul peak of this machine (best square `A @ B`), and our achieved FLOP/s as a fraction
  of it (model FLOPs = GEMMs counted by `FlopCounterMode` + attention counted analytically);
- the peak resident memory of one full training step (forward, backward, AdamW step), in a fresh
  subprocess per model so that one run's memory cannot hide another's (VmHWM, see `memory_child`).

On a shared machine read the "CPU use" column (CPU seconds / wall seconds / threads): well below 1,
other processes took the cores, so absolute times and % of peak are pessimistic and noisy; the
speedup stays comparable because the two models' steps are interleaved.

Usage:
    python benchmarks/bench_dit.py --out runs/bench_dit.json [--sizes tiny S] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from shared_core.nn.convert_diffusers import from_diffusers_state_dict
from shared_core.nn.dit import DiT, DiTConfig

# name -> (depth, width, heads, default batch). ImageNet-256 latent setting: 32x32x4, patch 2,
# 1000 classes, learned sigma. Batch 8 at S/2 is 2048 tokens per GEMM, enough to fill 2 cores.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (4, 128, 4, 32),
    "mini": (6, 192, 6, 16),
    "S": (12, 384, 6, 8),
    "B": (12, 768, 12, 4),
}
LATENT = (4, 32, 32)
PATCH = 2


def build_diffusers(size: str, seed: int = 0) -> torch.nn.Module:
    """diffusers' DiTTransformer2DModel at one of `SIZES`, per-block embedders tied to block 0 (as in
    the DiT checkpoints on the Hub, so that ours can hold the same weights with one shared embedder)."""
    from diffusers import DiTTransformer2DModel

    depth, width, heads, _ = SIZES[size]
    torch.manual_seed(seed)
    ref = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=width // heads,
        in_channels=LATENT[0],
        out_channels=2 * LATENT[0],
        num_layers=depth,
        sample_size=LATENT[1],
        patch_size=PATCH,
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_zero",
    )
    with torch.no_grad():
        src = ref.transformer_blocks[0].norm1.emb.state_dict()
        for block in ref.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(src)
    return ref


def build_ours(size: str) -> DiT:
    """Our DiT with the architecture of `build_diffusers(size)` (random init; for memory runs)."""
    depth, width, heads, _ = SIZES[size]
    cfg = DiTConfig(
        in_channels=LATENT[0],
        patch_size=(PATCH, PATCH),
        hidden_size=width,
        depth=depth,
        num_heads=heads,
        learn_sigma=True,
        num_classes=1000,
        timestep_freq_shift=1.0,
        mlp_norm_eps=1e-5,
    )
    return DiT(cfg)


def build_pair(size: str) -> tuple[torch.nn.Module, DiT]:
    """diffusers' model and ours holding the same weights (converted)."""
    ref = build_diffusers(size)
    cfg, sd = from_diffusers_state_dict(ref.state_dict(), ref.config)
    ours = DiT(cfg)
    ours.load_state_dict(sd)
    return ref, ours


def make_inputs(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *LATENT, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, 1000, (batch,), generator=g)
    return x, t, y


def step_fn(model: torch.nn.Module, is_ref: bool, x, t, y) -> Callable[[], None]:
    """One forward + backward; diffusers takes keyword arguments and returns an output object."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(x, timestep=t, class_labels=y).sample if is_ref else model(x, t, y)
        out.square().mean().backward()

    return step


def matmul_peak(n: int = 2048, repeats: int = 7) -> float:
    """Best fp32 FLOP/s of an n x n matmul (the machine's practical peak)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def train_step_flops(ours: DiT, x, t, y) -> float:
    """FLOPs of one forward+backward: counted GEMMs, plus attention (CPU sdpa is not counted)."""
    with FlopCounterMode(display=False) as counter:
        ours(x, t, y).square().mean().backward()
    ours.zero_grad(set_to_none=True)
    counted = counter.get_total_flops()
    if any("attention" in str(op) for op in counter.get_flop_counts()["Global"]):
        return float(counted)
    cfg = ours.config
    n_tokens = (LATENT[1] // PATCH) * (LATENT[2] // PATCH)
    # QK^T and AV: 2 matmuls x 2 FLOPs x N^2 x D per layer and sample; backward = 2 x forward.
    attn = 3 * cfg.depth * 4 * n_tokens**2 * cfg.hidden_size * x.shape[0]
    return float(counted + attn)


def time_pair(ref_step, our_step, rounds: int) -> dict[str, list[float]]:
    """Alternate the two steps so that machine noise hits both alike; wall and CPU seconds per step."""
    ref_step(), our_step()  # warm-up (allocator, kernel selection)
    res: dict[str, list[float]] = {"diffusers": [], "ours": [], "diffusers_cpu": [], "ours_cpu": []}
    for _ in range(rounds):
        for name, fn in (("diffusers", ref_step), ("ours", our_step)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            res[name].append(time.perf_counter() - t0)
            res[f"{name}_cpu"].append(time.process_time() - c0)
    return res


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(which: str, size: str, batch: int) -> None:
    """Run in a fresh process: peak RSS of one full training step (prints JSON, bytes).

    Uses VmHWM, the per-address-space high-water mark, reset just before the step through
    /proc/self/clear_refs. (ru_maxrss would not do: Linux carries it across fork+exec, so a child
    reports the parent's peak.)
    """
    model = build_diffusers(size) if which == "diffusers" else build_ours(size)
    model.train()
    x, t, y = make_inputs(batch)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = _proc_status_kib("VmRSS") * 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    step_fn(model, which == "diffusers", x, t, y)()
    opt.step()
    peak = _proc_status_kib("VmHWM") * 1024
    print(json.dumps({"rss_before_step": before, "peak_rss": peak, "step_peak_increase": peak - before}))


def measure_memory(which: str, size: str, batch: int) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--memory-child", which, size, str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"memory subprocess failed:\n{proc.stderr}")
    out = proc.stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="where to write the JSON results (required)")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "S"], choices=list(SIZES))
    ap.add_argument("--batch", type=int, nargs="*", help="batch per size (default: per-size table)")
    ap.add_argument("--rounds", type=int, default=5, help="timed steps per model (interleaved)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1], int(args.memory_child[2]))
        return
    if args.out is None:
        ap.error("--out is required")
    if args.threads:
        torch.set_num_threads(args.threads)

    peak = matmul_peak()
    rows = []
    for i, size in enumerate(args.sizes):
        batch = args.batch[i] if args.batch else SIZES[size][3]
        ref, ours = build_pair(size)
        x, t, y = make_inputs(batch)
        ref.eval(), ours.eval()  # no label dropout for the agreement check
        with torch.no_grad():
            max_diff = (ref(x, timestep=t, class_labels=y).sample - ours(x, t, y)).abs().max().item()
        ref.train(), ours.train()
        flops = train_step_flops(ours, x, t, y)
        times = time_pair(step_fn(ref, True, x, t, y), step_fn(ours, False, x, t, y), args.rounds)
        best = {k: min(v) for k, v in times.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        # CPU seconds / wall seconds / threads: ~1.0 when the run had the cores to itself.
        util = {
            k: sum(times[f"{k}_cpu"]) / sum(times[k]) / torch.get_num_threads() for k in ("ours", "diffusers")
        }
        row = {
            "size": size,
            "depth_width_heads": SIZES[size][:3],
            "batch": batch,
            "tokens": (LATENT[1] // PATCH) * (LATENT[2] // PATCH),
            "max_abs_diff_vs_diffusers": max_diff,
            "step_s_all": {k: v for k, v in times.items() if not k.endswith("_cpu")},
            "step_s_best": {k: best[k] for k in ("ours", "diffusers")},
            "step_s_median": {k: med[k] for k in ("ours", "diffusers")},
            "cpu_utilisation": util,
            "speedup_best": best["diffusers"] / best["ours"],
            "speedup_median": med["diffusers"] / med["ours"],
            "samples_per_s_best": {k: batch / best[k] for k in ("ours", "diffusers")},
            "train_step_gflop": flops / 1e9,
            "gflops_best": {k: flops / best[k] / 1e9 for k in ("ours", "diffusers")},
        }
        del ref, ours
        if not args.no_memory:
            row["memory"] = {k: measure_memory(k, size, batch) for k in ("ours", "diffusers")}
        rows.append(row)
    # Measure the peak again at the end and keep the best: another tenant may have slowed the first.
    peak = max(peak, matmul_peak())
    for row in rows:
        row["fraction_of_peak_best"] = {k: v * 1e9 / peak for k, v in row["gflops_best"].items()}

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "matmul_peak_gflops": peak / 1e9,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    mib = 2**20
    threads = torch.get_num_threads()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s ({threads} threads, torch {torch.__version__})")
    print("step = forward + MSE + backward, best of the interleaved rounds (median in brackets)\n")
    print(
        "| size | batch | diffusers step s | ours step s | speedup | ours GFLOP/s | ours % of peak "
        "| diffusers % of peak | CPU use ours/diffusers | peak RSS MiB ours / diffusers "
        "| step RSS increase MiB ours / diffusers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, m, u, f = r["step_s_best"], r["step_s_median"], r["cpu_utilisation"], r["fraction_of_peak_best"]
        mem = r.get("memory")
        rss = inc = "-"
        if mem:
            o, d = mem["ours"], mem["diffusers"]
            rss = f"{o['peak_rss'] / mib:.0f} / {d['peak_rss'] / mib:.0f}"
            inc = f"{o['step_peak_increase'] / mib:.0f} / {d['step_peak_increase'] / mib:.0f}"
        print(
            f"| {r['size']} | {r['batch']} | {b['diffusers']:.3f} ({m['diffusers']:.3f}) "
            f"| {b['ours']:.3f} ({m['ours']:.3f}) | {r['speedup_best']:.2f}x ({r['speedup_median']:.2f}x) "
            f"| {r['gflops_best']['ours']:.1f} | {100 * f['ours']:.0f}% | {100 * f['diffusers']:.0f}% "
            f"| {u['ours']:.2f} / {u['diffusers']:.2f} | {rss} | {inc} |"
        )
    diffs = ", ".join(f"{r['size']}: {r['max_abs_diff_vs_diffusers']:.1e}" for r in rows)
    print(f"\nmax |ours - diffusers| output difference (same weights, eval mode): {diffs}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
