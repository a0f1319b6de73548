"""The modality registry (loud failures, entry points) and the `extradim train` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shared_core.cli import main
from shared_core.errors import ExtradimError
from shared_core.train import modality as registry
from shared_core.train.modality import Modality, available_modalities, build_trainer, get_modality
from shared_core.train.toy_modality import Toy2D

REPO = Path(__file__).resolve().parents[2]


class _FakeEntryPoint:
    def __init__(self, name: str, value: str, load) -> None:
        self.name, self.value, self._load = name, value, load

    def load(self):
        return self._load()


def test_builtin_and_unknown() -> None:
    assert "toy2d" in available_modalities()
    assert isinstance(get_modality("toy2d"), Toy2D)
    with pytest.raises(ExtradimError, match=r"unknown modality 'nope'; valid: .*toy2d"):
        get_modality("nope")


def test_entry_points_load_and_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken():
        raise ImportError("No module named 'missing_dep'")

    class Audio(Modality):
        name = "audio"

    eps = [
        _FakeEntryPoint("audio", "ext.audio:Audio", lambda: Audio),
        _FakeEntryPoint("broken", "ext.broken:MODALITY", broken),
        _FakeEntryPoint("wrong", "ext.wrong:thing", lambda: 42),
    ]
    monkeypatch.setattr(
        registry, "entry_points", lambda group: eps if group == registry.ENTRY_POINT_GROUP else []
    )
    assert {"audio", "broken", "wrong", "toy2d"} <= set(available_modalities())  # listing imports nothing
    assert isinstance(get_modality("audio"), Audio)  # a class is instantiated
    with pytest.raises(
        ExtradimError, match=r"'broken' \(ext.broken:MODALITY\) failed to load.*missing_dep"
    ) as exc:
        get_modality("broken")
    assert isinstance(exc.value.__cause__, ImportError)  # the original error is kept
    with pytest.raises(ExtradimError, match="is a int, not a Modality"):
        get_modality("wrong")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "unknown modality 'nope'"),
        (
            ["toy2d", "--config", "configs/core/toy2d_tiny.yaml", "train.optim.lrr=1"],
            "unknown key 'train.optim.lrr'",
        ),
        (["toy2d", "train.steps=ten"], "train.steps: expected int, got str 'ten'"),
        (["toy2d", "--config", "missing.yaml"], "config file not found: missing.yaml"),
        (["toy2d", "model.patch_size=3"], "model.patch_size 3 does not divide"),
        (["toy2d", "train.init_from=missing.safetensors"], "checkpoint file not found: missing.safetensors"),
        (["toy2d", "diffusion.self_condition=0.5"], "does not take a self-conditioning input"),
    ],
)
def test_cli_errors_are_one_line(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("extradim: error:") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "run").exists()


def test_cli_train_overrides_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "toy2d", "train.steps=3", "--config", str(REPO / "configs/core/toy2d_tiny.yaml")]
    args += ["--out", str(out), "sample.num_samples=4", "sample.steps=2", "train.checkpoint.every=2"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3 and summary["eval"]["num_samples"] == 4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000003"]
    assert json.loads((out / "eval.json").read_text())["num_samples"] == 4
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    # Running again without --resume must not overwrite the run; with --resume at the end, nothing to do.
    assert main(args) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    assert main([*args, "--resume", "--no-eval"]) == 0


def test_cli_train_init_from_starts_a_deeper_model_from_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = REPO / "configs/core/toy2d_tiny.yaml"
    small = tmp_path / "small"
    assert (
        main(["train", "toy2d", "--config", str(config), "--out", str(small), "train.steps=2", "--no-eval"])
        == 0
    )
    step = small / "checkpoints" / "step_00000002"
    toy = get_modality("toy2d")
    cfg = toy.load_config(config, ["model.depth=3", f"train.init_from={step}"])
    trainer = build_trainer(toy, cfg, tmp_path / "grown")
    ema, state = load_file(str(step / "ema.safetensors")), trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ema.items())  # the run's EMA weights, exactly
    assert all(torch.equal(trainer.ema.module.state_dict()[k], v) for k, v in ema.items())
    assert {k for k in state if k not in ema} and all(".2." in k for k in state if k not in ema)
    # Weights that do not fit: a one-line error before anything is written.
    capsys.readouterr()
    bad = ["train", "toy2d", "--config", str(config), "--out", str(tmp_path / "bad"), "model.hidden_size=32"]
    assert main([*bad, f"train.init_from={step}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("extradim: error:") and err.count("\n") == 1 and "does not fit the model" in err
    assert not (tmp_path / "bad").exists()
