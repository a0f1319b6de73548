"""Exact resume: a real training process killed with SIGKILL at an arbitrary step and resumed ends
with bit-identical weights, EMA, optimizer state and loss log to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from shared_core.train.checkpoint import latest_checkpoint, read_safetensors

REPO = Path(__file__).resolve().parents[2]
STEPS, EVERY = 120, 10


def _cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "shared_core.cli", "train", "toy2d",
        "--config", str(REPO / "configs/core/toy2d_tiny.yaml"), "--out", str(out), "--no-eval",
        f"train.steps={STEPS}", f"train.checkpoint.every={EVERY}", "train.checkpoint.keep_last=2",
        "train.log.every=1", "train.grad_accum=2", "data.num_samples=50",  # a finite set: epoch shuffles too
        "train.device=cpu",  # bit-identical is a CPU promise: CUDA kernels may reorder sums
        *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "EXTRADIM_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_is_bit_identical(tmp_path: Path) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_cmd(full), check=True, env=_env(), capture_output=True, timeout=300)

    proc = subprocess.Popen(_cmd(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Wait for the second checkpoint, then kill at a random moment of the following steps
        # (possibly inside a checkpoint write).
        target = killed / "checkpoints" / f"step_{2 * EVERY:08d}"
        deadline = time.monotonic() + 120
        while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(random.Random().uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, (
        f"run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
    )
    stopped_at = latest_checkpoint(killed / "checkpoints")
    assert stopped_at is not None and int(stopped_at.name[5:]) < STEPS

    r = subprocess.run(_cmd(killed, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    a, b = latest_checkpoint(full / "checkpoints"), latest_checkpoint(killed / "checkpoints")
    assert a.name == b.name == f"step_{STEPS:08d}"
    for stem in ("model", "ema", "optimizer"):
        ta, tb = read_safetensors(a / f"{stem}.safetensors"), read_safetensors(b / f"{stem}.safetensors")
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{stem}:{k} differs after resume"
    sa, sb = json.loads((a / "state.json").read_text()), json.loads((b / "state.json").read_text())
    assert sa["rng"] == sb["rng"] and sa["ema_num_updates"] == sb["ema_num_updates"]
    assert _losses(full) == _losses(killed)  # the log is continued, not duplicated
