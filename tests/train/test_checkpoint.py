"""Checkpoints: safetensors + YAML + JSON, atomic, pruned, validated, never unpickled."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from shared_core.errors import CheckpointError
from shared_core.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    save_checkpoint,
)

from .helpers import MLP, mlp_config, mlp_trainer


def _trained(tmp_path: Path, steps: int = 5):
    tr = mlp_trainer(tmp_path / "run", mlp_config(steps=steps, checkpoint={"every": 5}))
    tr.fit()
    return tr


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_layout_and_round_trip(tmp_path: Path) -> None:
    tr = _trained(tmp_path)
    ckpt = latest_checkpoint(tr.checkpoint_root)
    assert ckpt is not None and ckpt.name == "step_00000005"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "config.yaml",
        "ema.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
    ]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 5 and state["modality"] == "mlp"
    assert all(isinstance(v, int) for v in state["rng"]["torch"])  # RNG states as plain ints
    fresh = mlp_trainer(tmp_path / "other")
    fresh.load_checkpoint(ckpt)
    assert fresh.step == 5
    assert _equal_states(fresh.model.state_dict(), tr.model.state_dict())
    assert _equal_states(fresh.ema.state_dict(), tr.ema.state_dict())
    assert fresh.ema.num_updates == tr.ema.num_updates
    a, b = fresh.optimizer.state_dict(), tr.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in b["state"]:
        assert _equal_states(a["state"][pid], b["state"][pid])


def test_optimizer_encoding_round_trip() -> None:
    model = MLP()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 8), torch.rand(4), torch.zeros(4, dtype=torch.long)).sum().backward()
    opt.step()
    tensors, meta = optimizer_state_to_tensors(opt.state_dict())
    assert all(k.startswith("state.") for k in tensors)
    json.dumps(meta)  # the metadata is plain JSON
    back = optimizer_state_from_tensors(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(MLP().parameters(), lr=1e-3)
    opt2.load_state_dict(back)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_keep_last_and_stale_temp_dirs(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    (root / ".tmp-step_00000001-999").mkdir(parents=True)  # left by a run killed mid-save
    for step in range(1, 6):
        save_checkpoint(
            root,
            step,
            tensors={"model": {"w": torch.ones(2) * step}},
            config_yaml="a: 1\n",
            state={},
            keep_last=2,
        )
    assert [s for s, _ in list_checkpoints(root)] == [4, 5]
    assert not list(root.glob(".tmp-*"))
    # Re-saving an existing step replaces it atomically.
    save_checkpoint(root, 5, tensors={"model": {"w": torch.zeros(2)}}, config_yaml="a: 2\n", state={})
    ck = load_checkpoint(root / "step_00000005")
    assert torch.equal(ck.tensors("model")["w"], torch.zeros(2)) and ck.config_yaml == "a: 2\n"


def test_corrupt_weights_name_the_file(tmp_path: Path) -> None:
    tr = _trained(tmp_path)
    ckpt = latest_checkpoint(tr.checkpoint_root)
    model_file = ckpt / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:50])  # truncated
    with pytest.raises(CheckpointError, match=rf"corrupt checkpoint file {model_file}"):
        mlp_trainer(tmp_path / "x").load_checkpoint(ckpt)
    model_file.unlink()
    with pytest.raises(CheckpointError, match=rf"checkpoint file missing: {model_file}"):
        mlp_trainer(tmp_path / "y").load_checkpoint(ckpt)


def test_shape_and_key_mismatch_named(tmp_path: Path) -> None:
    tr = _trained(tmp_path)
    ckpt = latest_checkpoint(tr.checkpoint_root)
    sd = {k: v.clone() for k, v in tr.model.state_dict().items()}
    sd["net.0.weight"] = torch.zeros(5, 5)
    save_file(sd, str(ckpt / "model.safetensors"))
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors does not match the model: shape mismatch "
        r"\[net\.0\.weight: checkpoint \(5, 5\) vs model \(32, 12\)\]",
    ):
        mlp_trainer(tmp_path / "x").load_checkpoint(ckpt)
    del sd["net.0.weight"]
    sd["extra"] = torch.zeros(1)
    save_file(sd, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \[net\.0\.weight\]; unexpected keys \[extra\]"):
        mlp_trainer(tmp_path / "y").load_checkpoint(ckpt)


def test_bad_state_json(tmp_path: Path) -> None:
    tr = _trained(tmp_path)
    ckpt = latest_checkpoint(tr.checkpoint_root)
    state_file = ckpt / "state.json"
    good = state_file.read_text()
    state_file.write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"corrupt checkpoint file {state_file}"):
        load_checkpoint(ckpt)
    state_file.write_text(json.dumps({**json.loads(good), "format": "other/9"}))
    with pytest.raises(CheckpointError, match="format 'other/9'"):
        load_checkpoint(ckpt)
    state_file.write_text(json.dumps({**json.loads(good), "modality": "toy2d"}))
    with pytest.raises(CheckpointError, match="checkpoint is for modality 'toy2d', not 'mlp'"):
        mlp_trainer(tmp_path / "x").load_checkpoint(ckpt)
    broken = json.loads(good)
    del broken["rng"]
    state_file.write_text(json.dumps(broken))
    with pytest.raises(CheckpointError, match=r"state\.json: missing or invalid entry"):
        mlp_trainer(tmp_path / "y").load_checkpoint(ckpt)


def test_optimizer_mismatch(tmp_path: Path) -> None:
    tr = _trained(tmp_path)
    ckpt = latest_checkpoint(tr.checkpoint_root)
    opt_file = ckpt / "optimizer.safetensors"
    tensors = load_checkpoint(ckpt).tensors("optimizer")
    tensors["state.0.exp_avg"] = torch.zeros(3)
    save_file(tensors, str(opt_file))
    with pytest.raises(
        CheckpointError, match=r"optimizer\.safetensors: optimizer state 'exp_avg' of parameter #0"
    ):
        mlp_trainer(tmp_path / "x").load_checkpoint(ckpt)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tr = _trained(tmp_path)

    def forbidden(*_a, **_k):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    fresh = mlp_trainer(tmp_path / "other")
    fresh.load_checkpoint(latest_checkpoint(tr.checkpoint_root))
    assert fresh.step == 5


def test_fresh_run_refuses_existing_checkpoints(tmp_path: Path) -> None:
    from shared_core.errors import ExtradimError

    _trained(tmp_path)
    with pytest.raises(ExtradimError, match=r"already holds checkpoints.*--resume"):
        mlp_trainer(tmp_path / "run").fit()
