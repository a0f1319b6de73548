"""The CUDA-only paths, checked on a GPU machine: xformers attention, nerfacc's OccGridEstimator, and
AMP (bf16 / fp16) training through the engine for every modality. CI has no GPU, so this is a
benchmark-style command, not a test; `benchmarks/cuda_check.sh` runs it (with the CUDA tests of the
suite) on a lent GPU and `benchmarks/CUDA_CHECK.md` records what it printed.

    python benchmarks/cuda_check.py --out OUT [--tokenizer DIR]

Prints one JSON report (also written to OUT/cuda_check.json); exits 1 when a check fails.
`--tokenizer` is a Hugging Face tokenizer folder (MiniLM's): the AMP runs build a tiny random BERT
on it, so they need neither the 90 MB MiniLM weights nor a download.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPORT: dict[str, Any] = {}
FAILED: list[str] = []


def check(fn: Callable[..., dict[str, Any]]) -> Callable[..., None]:
    def run(*args: Any) -> None:
        t0 = time.perf_counter()
        try:
            out = fn(*args)
            out["ok"] = bool(out.get("ok", True))
        except Exception as exc:  # a report, not a crash: the other checks still run
            out = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-1500:],
            }
        out["seconds"] = round(time.perf_counter() - t0, 2)
        REPORT[fn.__name__] = out
        if not out["ok"]:
            FAILED.append(fn.__name__)
        print(fn.__name__, json.dumps({k: v for k, v in out.items() if k != "trace"}), flush=True)
        if "trace" in out:
            print(out["trace"], flush=True)

    return run


@check
def environment() -> dict[str, Any]:
    import nerfacc
    import xformers

    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "bf16": torch.cuda.is_bf16_supported(),
        "xformers": xformers.__version__,
        "nerfacc": nerfacc.__version__,
    }


@check
def attention_xformers_vs_sdpa() -> dict[str, Any]:
    """Self-, folded and masked cross-attention: xformers vs sdpa on CUDA vs sdpa on CPU."""
    import xformers.ops as xops

    from shared_core.nn.attention import Attention

    q = torch.randn(1, 8, 2, 32, device="cuda", dtype=torch.bfloat16)
    try:
        xops.memory_efficient_attention(q, q, q)
        kernels = True
    except NotImplementedError:  # e.g. a wheel built for another torch: it imports, runs nothing
        kernels = False
    backends = ("sdpa", "xformers") if kernels else ("sdpa", "auto")  # auto: must fall back to sdpa
    torch.manual_seed(0)
    out: dict[str, Any] = {"xformers_has_cuda_kernels": kernels}
    ok = True
    for name, ctx_dim in (("self", None), ("cross_masked", 24)):
        attn = Attention(64, 4, context_dim=ctx_dim).eval()
        x = torch.randn(3, 40, 64)
        kw: dict[str, Any] = {}
        if ctx_dim:
            kw = {
                "context": torch.randn(3, 11, ctx_dim),
                "context_mask": torch.arange(11)[None] < torch.tensor([[11], [4], [0]]),
            }
        else:
            kw = {"grid_shape": (4, 10), "axes": (1,)}  # folded: attention within each row
        with torch.no_grad():
            ref = attn(x, **kw)
            res = {}
            for backend in backends:
                attn.backend = backend
                gpu = attn.cuda()(
                    x.cuda(), **{k: v.cuda() if torch.is_tensor(v) else v for k, v in kw.items()}
                )
                res[backend] = float((gpu.cpu() - ref).abs().max())
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    half = attn(x.cuda(), **{k: v.cuda() if torch.is_tensor(v) else v for k, v in kw.items()})
                res[backend + "_bf16"] = float((half.float().cpu() - ref).abs().max())
                attn.cpu()
        ok &= all(res[b] < 1e-4 and res[b + "_bf16"] < 5e-2 for b in backends)
        out[name] = res
    # gradients through xformers (masked cross-attention) against sdpa's
    attn = Attention(64, 4, context_dim=24).cuda()
    x = torch.randn(2, 30, 64, device="cuda", requires_grad=True)
    c, m = (
        torch.randn(2, 7, 24, device="cuda"),
        torch.tensor([[1] * 7, [1, 1, 0, 0, 0, 0, 0]], device="cuda").bool(),
    )
    grads = {}
    for backend in backends:
        attn.backend = backend
        x.grad = None
        attn(x, context=c, context_mask=m).square().sum().backward()
        grads[backend] = x.grad.clone()
    out["grad_max_diff"] = float((grads[backends[0]] - grads[backends[1]]).abs().max())
    out["ok"] = ok and out["grad_max_diff"] < 1e-3
    return out


@check
def shipped_video_model_on_cuda() -> dict[str, Any]:
    """The shipped video DiT (joint space-time attention): CUDA + xformers (fp32 and bf16 autocast)
    against the CPU forward on the same latents and a random text context; speed of a batch."""
    from shared_core.pretrained import load_pretrained
    from video.modality import LatentVideoModel, VideoConfig
    from video.pipeline import DEFAULT_CHECKPOINT

    model, cfg, _ = load_pretrained(DEFAULT_CHECKPOINT, VideoConfig, LatentVideoModel)
    model.eval()
    g = torch.Generator().manual_seed(0)
    B = 8
    x = torch.randn(B, *model.latent_shape(cfg.data), generator=g)
    t = torch.rand(B, generator=g) * 0.9 + 0.05
    L, D = cfg.data.max_text_length, cfg.model.text_dim
    ctx = torch.randn(B, L, D, generator=g)
    mask = torch.arange(L)[None] < torch.randint(3, L, (B, 1), generator=g)
    pooled = ctx.mean(1)
    with torch.no_grad():
        ref = model(x, t, ctx, mask, pooled)
        model.cuda()
        args = [a.cuda() for a in (x, t, ctx, mask, pooled)]
        fp32 = model(*args)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(*args).float()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            model(*args)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / 20 * 1e3
    scale = float(ref.abs().mean())
    out = {
        "tokens": int(math.prod(model.latent_shape(cfg.data)[1:]) // math.prod(cfg.model.patch_size)),
        "fp32_max_diff": float((fp32.cpu() - ref).abs().max()),
        "bf16_mean_rel_diff": float((bf16.cpu() - ref).abs().mean()) / scale,
        "forward_ms_batch8_fp32": round(ms, 2),
    }
    out["ok"] = out["fp32_max_diff"] < 1e-3 and out["bf16_mean_rel_diff"] < 0.05
    return out


@check
def nerfacc_estimator_vs_cpu_sampler() -> dict[str, Any]:
    """nerfacc's OccGridEstimator + packed rendering (render_rays_cuda) against our CPU sampler and a
    dense reference on the same field; forward+backward time of 64x64 rays on both CUDA paths."""
    import nerfacc

    from threed.nerf import GridField, NeRFConfig, OccupancyGrid, render_rays, render_rays_cuda
    from threed.views import Camera, camera_rays

    cfg = NeRFConfig(blob_density=0.0)
    field = GridField(cfg)
    with torch.no_grad():  # a solid ball of radius 0.6, red
        c = torch.linspace(-cfg.bound, cfg.bound, cfg.grid_size)
        z, y, x = torch.meshgrid(c, c, c, indexing="ij")
        inside = (x**2 + y**2 + z**2).sqrt() < 0.6
        field.density_grid[0, 0] = torch.where(inside, torch.tensor(40.0), torch.tensor(-30.0))
        field.albedo_grid[0, 0] = 4.0
        field.albedo_grid[0, 1:] = -4.0
    field = field.cuda()
    est = nerfacc.OccGridEstimator([-cfg.bound] * 3 + [cfg.bound] * 3, resolution=32).cuda()
    step = 2 * math.sqrt(3) * cfg.bound / cfg.samples_per_ray
    for i in range(300):
        est.update_every_n_steps(i, lambda p: field.density(p) * step, occ_thre=0.01)
    occ = OccupancyGrid(cfg, device="cuda")
    for _ in range(20):
        occ.update(field)
    o, d = camera_rays(Camera(30.0, 20.0), 64)
    o, d = o.cuda(), d.cuda()
    with torch.no_grad():
        t0 = time.perf_counter()
        gpu = render_rays_cuda(field, o, d, est)  # the first call JIT-builds nerfacc's CUDA ops
        build_s = time.perf_counter() - t0
        ours = render_rays(field, o, d, occupancy=occ)
        dense = render_rays(field, o, d, samples=512)
    timings = {}
    for name, fn in (
        ("estimator", lambda: render_rays_cuda(field, o, d, est)),
        ("ours", lambda: render_rays(field, o, d, occupancy=occ)),
    ):
        for _ in range(3):
            fn().rgb.sum().backward()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(10):
            fn().rgb.sum().backward()
        torch.cuda.synchronize()
        timings[name + "_ms"] = round((time.perf_counter() - t0) / 10 * 1e3, 2)
    out = {
        "nerfacc_cuda_build_s": round(build_s, 1),
        "occupied_cells": int(est.binaries.sum()),
        "estimator_vs_dense_rgb_mae": float((gpu.rgb - dense.rgb).abs().mean()),
        "ours_vs_dense_rgb_mae": float((ours.rgb - dense.rgb).abs().mean()),
        "estimator_vs_dense_opacity_mae": float((gpu.opacity - dense.opacity).abs().mean()),
        "estimator_samples": gpu.samples_evaluated,
        "ours_samples": ours.samples_evaluated,
        **timings,
    }
    out["ok"] = out["estimator_vs_dense_rgb_mae"] < 0.03 and out["ours_vs_dense_rgb_mae"] < 0.03
    return out


def tiny_encoder(tokenizer_dir: Path, out: Path) -> Path:
    """A random 1-layer BERT (width 32) on MiniLM's tokenizer, saved as a local encoder folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    torch.manual_seed(0)
    model = BertModel(
        BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


def train_run(modality: str, config: str, overrides: list[str], out: Path) -> dict[str, Any]:
    """``extradim train`` in this process; the run's metrics log read back."""
    from shared_core.cli import main

    rc = main(["train", modality, "--config", str(ROOT / config), "--out", str(out), "--no-eval", *overrides])
    rows = []
    for f in sorted(out.rglob("*.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in rows if "loss" in r]
    return {
        "rc": rc,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "logged": len(losses),
    }


@check
def amp_training(tokenizer_dir: Path, out: Path) -> dict[str, Any]:
    """Each modality trains on CUDA under bf16 autocast (and toy2d also fp16 with GradScaler, and
    fp32), attention on xformers (auto on CUDA); losses finite and falling; resume on CUDA works."""
    enc = tiny_encoder(tokenizer_dir, out / "tiny_encoder")
    common = ["train.device=cuda", "train.log.progress=false", "train.log.every=5", "train.num_threads=4"]
    res: dict[str, Any] = {}
    for prec in ("fp32", "bf16", "fp16"):
        res[f"toy2d_{prec}"] = train_run(
            "toy2d",
            "configs/core/toy2d_tiny.yaml",
            [*common, f"train.precision={prec}", "train.steps=300", "train.checkpoint.every=150"],
            out / f"toy2d_{prec}",
        )
    text = [f"data.text_encoder={enc}", "model.text_dim=32"]
    small = ["model.hidden_size=64", "model.depth=2", "model.num_heads=4"]
    res["video_bf16"] = train_run(
        "video",
        "configs/video/shapes.yaml",
        [
            *common,
            *text,
            *small,
            "train.precision=bf16",
            "train.steps=40",
            "train.checkpoint.every=20",
            "autoencoder.steps=30",
            "train.batch_size=8",
        ],
        out / "video_bf16",
    )
    res["points_bf16"] = train_run(
        "points",
        "configs/threed/points_base.yaml",
        [*common, *text, *small, "train.precision=bf16", "train.steps=40", "train.checkpoint.every=20"],
        out / "points_bf16",
    )
    res["views_bf16"] = train_run(
        "views",
        "configs/threed/views.yaml",
        [
            *common,
            *text,
            *small,
            "train.precision=bf16",
            "train.steps=40",
            "train.checkpoint.every=20",
            "data.objects=40",
            "data.views_per_object=2",
        ],
        out / "views_bf16",
    )
    # resume on CUDA (the CUDA RNG state is saved and restored): 150 steps, then --resume to 300.
    # Not an equality check: the first leg's cosine schedule ends at 150 (the CPU tests check
    # bit-identical resume).
    half = out / "toy2d_resume"
    leg = [*common, "train.precision=fp32", "train.checkpoint.every=150"]
    r1 = train_run("toy2d", "configs/core/toy2d_tiny.yaml", [*leg, "train.steps=150"], half)
    from shared_core.cli import main

    rc = main(
        ["train", "toy2d", "--config", str(ROOT / "configs/core/toy2d_tiny.yaml"), "--out", str(half),
         "--resume", "--no-eval", *leg, "train.steps=300"]
    )  # fmt: skip
    res["resume_rc"] = [r1["rc"], rc]
    res["resume_reached_300"] = (half / "checkpoints" / "step_00000300").is_dir()
    ok = all(
        v["rc"] == 0
        and v["last_loss"] is not None
        and math.isfinite(v["last_loss"])
        and v["last_loss"] < v["first_loss"]
        for k, v in res.items()
        if isinstance(v, dict)
    )
    res["ok"] = ok and res["resume_rc"] == [0, 0] and res["resume_reached_300"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tokenizer", type=Path, required=True, help="a Hugging Face tokenizer folder")
    ap.add_argument("--only", nargs="*", help="run only these checks (function names)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("cuda_check: no CUDA device", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    checks = {
        "environment": lambda: environment(),
        "attention_xformers_vs_sdpa": lambda: attention_xformers_vs_sdpa(),
        "shipped_video_model_on_cuda": lambda: shipped_video_model_on_cuda(),
        "nerfacc_estimator_vs_cpu_sampler": lambda: nerfacc_estimator_vs_cpu_sampler(),
        "amp_training": lambda: amp_training(args.tokenizer, args.out / "runs"),
    }
    for name, run in checks.items():
        if not args.only or name in args.only:
            run()
    REPORT["failed"] = FAILED
    (args.out / "cuda_check.json").write_text(json.dumps(REPORT, indent=1))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
