"""DDP on CPU: torchrun with 2 gloo processes and half the batch each matches one process with the
whole batch, and sharded generation gathers the samples back in order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from shared_core.train.checkpoint import latest_checkpoint, list_checkpoints, read_safetensors
from shared_core.train.distributed import gather_in_order, shard_indices

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _args(out: Path) -> list[str]:
    return [
        "train", "toy2d", "--config", str(REPO / "configs/core/toy2d_tiny.yaml"), "--out", str(out),
        "train.steps=8", "train.batch_size=8", "train.checkpoint.every=4", "train.log.every=2",
        "train.grad_accum=2", "sample.num_samples=7", "sample.steps=3", "sample.batch_size=2",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "EXTRADIM_NUM_THREADS": "1"}


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    r = subprocess.run(
        [sys.executable, "-m", "shared_core.cli", *_args(single)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "shared_core.cli",
    ]
    r = subprocess.run([*torchrun, *_args(ddp)], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    # Rank 0 alone wrote checkpoints.
    assert [s for s, _ in list_checkpoints(ddp / "checkpoints")] == [4, 8]
    a, b = latest_checkpoint(single / "checkpoints"), latest_checkpoint(ddp / "checkpoints")
    for stem in ("model", "ema"):
        ta, tb = read_safetensors(a / f"{stem}.safetensors"), read_safetensors(b / f"{stem}.safetensors")
        worst = max(float((ta[k] - tb[k]).abs().max()) for k in ta)
        assert worst <= 1e-6, f"{stem} differs by {worst}"
        assert any(float(v.abs().max()) > 0 for k, v in ta.items() if "final_layer.linear" in k)  # it trained

    # Sharded generation (7 samples over 2 ranks: 4 + 3) gathered in order equals one process.
    sa, sb = read_safetensors(single / "samples.safetensors"), read_safetensors(ddp / "samples.safetensors")
    assert torch.equal(sa["labels"], sb["labels"]) and sa["samples"].shape == (7, 3, 16, 16)
    torch.testing.assert_close(sa["samples"], sb["samples"], atol=1e-4, rtol=0)


def test_shard_and_gather_single_process() -> None:
    assert shard_indices(5, 0, 2) == range(0, 3) and shard_indices(5, 1, 2) == range(3, 5)
    assert shard_indices(5) == range(5)  # no process group: everything is local
    x = torch.arange(10.0).reshape(5, 2)
    assert torch.equal(gather_in_order(x, 5), x)
    with pytest.raises(ValueError, match="owns 5 of 5 items"):
        gather_in_order(x[:3], 5)
