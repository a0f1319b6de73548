"""The video modality's pieces: autoencoder, caption bank, dataset, objective, pipeline round trip,
and `extradim train video` end to end at toy size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shared_core.config import from_dict
from shared_core.errors import CheckpointError
from shared_core.text import TextEncoder
from tests.video.conftest import TINY_CONFIG
from video.autoencoder import AutoencoderConfig, FrameAutoencoder, train_autoencoder
from video.modality import (
    CaptionBank,
    LatentObjective,
    LatentVideoModel,
    VideoConfig,
    VideoModality,
    make_world,
)
from video.pipeline import VideoPipeline, save_pipeline_checkpoint
from video.world import canonical_caption


def test_autoencoder_shapes_and_scale() -> None:
    ae = FrameAutoencoder(AutoencoderConfig(latent_channels=4, width=16))
    clips = torch.rand(2, 3, 4, 32, 32) * 2 - 1
    z = ae.encode(clips)
    assert z.shape == (2, 4, 4, 8, 8)
    ae.scale.fill_(2.0)
    torch.testing.assert_close(ae.encode(clips), 2 * z)
    assert ae.decode(ae.encode(clips)).shape == clips.shape
    assert ae.decode(z * 100).abs().max() <= 1


def test_autoencoder_training_reduces_error_and_sets_unit_scale() -> None:
    torch.manual_seed(0)
    cfg = AutoencoderConfig(width=16, steps=40, batch_size=16, lr=3e-3)
    ae = FrameAutoencoder(cfg)
    world = make_world(from_dict(VideoConfig, {}).data)

    def frames(n: int, g: torch.Generator) -> torch.Tensor:
        return world.sample(1, g).clips[0].transpose(0, 1)[:n]

    before = ae(frames(16, torch.Generator().manual_seed(1))) - frames(16, torch.Generator().manual_seed(1))
    losses: list[float] = []
    stats = train_autoencoder(ae, cfg, frames, lambda step, loss: losses.append(loss))
    assert len(losses) == 40 and sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert stats["l1"] < before.abs().mean().item()
    assert not any(p.requires_grad for p in ae.parameters())  # frozen again for the diffusion stage
    z = ae.encode(world.sample(8, 0).clips)
    assert 0.8 < float(z.std()) < 1.25  # scale makes the latents about unit variance


@pytest.fixture(scope="module")
def tiny_cfg() -> VideoConfig:
    return from_dict(VideoConfig, TINY_CONFIG)


@pytest.fixture(scope="module")
def bank(text_encoder: TextEncoder, tiny_cfg: VideoConfig) -> CaptionBank:
    world = make_world(tiny_cfg.data)
    return CaptionBank(text_encoder, world.combos[:3], k=2, seed=0)


def test_caption_bank_holds_canonical_then_paraphrases(bank: CaptionBank, tiny_cfg: VideoConfig) -> None:
    combos = make_world(tiny_cfg.data).combos[:3]
    assert [caps[0] for caps in bank.captions] == [canonical_caption(a) for a in combos]
    assert all(len(set(caps)) == 3 for caps in bank.captions)
    assert len(bank.bank) == 9 and bank.bank.tokens.shape[1] == 32  # padded to max_length
    assert bank.bank.mask[:, 0].all()
    assert torch.equal(bank.row(2, 1)["context"], bank.bank.tokens[7].float())


def test_dataset_items_are_pure_functions_of_the_index(
    text_encoder: TextEncoder, tiny_cfg: VideoConfig
) -> None:
    modality = VideoModality()
    modality._encoder = text_encoder
    ds = modality.build_dataset(tiny_cfg)
    a, b, c = ds[5], ds[5], ds[6]
    assert a["clip"].shape == (3, 16, 32, 32) and a["context"].shape == (32, 384)
    for k in a:
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["clip"], c["clip"])
    # The caption belongs to the clip's combination (held-out combinations never appear).
    world = ds.world
    attrs = world.describe([5])[0][0]
    assert attrs not in world.held_out


def test_latent_objective_trains_the_dit_only(text_encoder: TextEncoder, tiny_cfg: VideoConfig) -> None:
    torch.manual_seed(0)
    model = LatentVideoModel(tiny_cfg)
    modality = VideoModality()
    modality._encoder = text_encoder
    objective = modality.build_objective(tiny_cfg, model)
    assert isinstance(objective, LatentObjective)
    ds = modality.build_dataset(tiny_cfg)
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ds[0]}
    out = objective(model, batch, [torch.Generator().manual_seed(i) for i in range(2)])
    out.loss.mean().backward()
    assert torch.isfinite(out.loss).all() and out.loss.shape == (2,)
    assert all(p.grad is None for p in model.ae.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.dit.parameters())


def test_pipeline_round_trip_and_batch_independence(tiny_pipeline: VideoPipeline, tmp_path: Path) -> None:
    prompts = ["a red circle moving left", "a blue square growing", "a white triangle moving up"]
    one = tiny_pipeline.generate(prompts, seed=3, batch_size=1)
    three = tiny_pipeline.generate(prompts, seed=3, batch_size=3)
    assert one.shape == (3, 3, 16, 32, 32) and one.abs().max() <= 1
    torch.testing.assert_close(one, three, atol=1e-4, rtol=0)
    assert not torch.allclose(one, tiny_pipeline.generate(prompts, seed=4, batch_size=3))
    # Saving and loading again gives the same model.
    path = save_pipeline_checkpoint(tiny_pipeline.model, tiny_pipeline.cfg, tmp_path / "again.safetensors")
    again = VideoPipeline.load(path)
    again.text = tiny_pipeline.text
    torch.testing.assert_close(again.generate(prompts[:1], seed=3), one[:1], atol=1e-5, rtol=0)


def test_bad_checkpoints_are_one_line_errors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        VideoPipeline.load(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match=r"\.safetensors"):
        VideoPipeline.load(tmp_path / "model.pt")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(tiny_checkpoint.read_bytes()[:200])
    corrupt.with_suffix(".yaml").write_text(tiny_checkpoint.with_suffix(".yaml").read_text())
    with pytest.raises(CheckpointError, match="corrupt"):
        VideoPipeline.load(corrupt)
    mismatch = tmp_path / "mismatch.safetensors"
    mismatch.write_bytes(tiny_checkpoint.read_bytes())
    mismatch.with_suffix(".yaml").write_text(
        tiny_checkpoint.with_suffix(".yaml").read_text().replace("hidden_size: 32", "hidden_size: 64")
    )
    with pytest.raises(CheckpointError, match="does not match"):
        VideoPipeline.load(mismatch)


def test_train_video_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`extradim train video` at toy size: both stages run, checkpoints and the evaluation land."""
    from shared_core.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "train: {steps: 2, batch_size: 2, log: {every: 1, progress: false}}\n"
        "diffusion: {schedule: cosine, prediction: x0}\n"
        "data: {captions_per_combo: 1}\n"
        "autoencoder: {width: 16, steps: 2, batch_size: 8}\n"
        "model: {hidden_size: 32, depth: 1, num_heads: 2, attention: factorised}\n"
        "sample: {steps: 1, num_eval_clips: 2, batch_size: 2}\n"
    )
    assert main(["train", "video", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2
    assert set(summary["eval"]) == {"seen", "held_out"}
    assert (tmp_path / "run" / "checkpoints" / "step_00000002" / "ema.safetensors").is_file()


def test_resume_takes_the_autoencoder_from_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--resume` does not retrain stage 1, and a run resumed from step 2 ends as the straight run."""
    import shutil

    from safetensors.torch import load_file

    from shared_core.cli import main
    from video import modality as video_modality

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "train: {steps: 3, batch_size: 2, log: {every: 1, progress: false},"
        " checkpoint: {every: 1, keep_last: 5}}\n"
        "diffusion: {schedule: cosine, prediction: x0}\n"
        "data: {captions_per_combo: 1}\n"
        "autoencoder: {width: 16, steps: 2, batch_size: 8}\n"
        "model: {hidden_size: 32, depth: 1, num_heads: 2, attention: factorised}\n"
    )
    args = ["train", "video", "--config", str(cfg), "--no-eval"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_00000003")  # as if killed after step 2

    def no_stage_one(*a: object, **k: object) -> None:
        raise AssertionError("the autoencoder was retrained on resume")

    monkeypatch.setattr(video_modality, "train_autoencoder", no_stage_one)
    assert main([*args, "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    a = load_file(tmp_path / "straight" / "checkpoints" / "step_00000003" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "step_00000003" / "model.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("ae.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_autoencoder_init_reuses_a_checkpoints_autoencoder(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`autoencoder.init` loads stage 1 from a video checkpoint (scale included) instead of training
    it; a file without an autoencoder is a one-line error."""
    from safetensors.torch import load_file, save_file

    from video import modality as video_modality
    from video.modality import VideoModality

    shipped = load_file(str(tiny_checkpoint))
    shipped["ae.scale"] = torch.tensor(2.5)  # as after stage 1
    source = tmp_path / "trained.safetensors"
    save_file(shipped, str(source))

    def no_stage_one(*a: object, **k: object) -> None:
        raise AssertionError("stage 1 ran despite autoencoder.init")

    monkeypatch.setattr(video_modality, "train_autoencoder", no_stage_one)
    cfg = from_dict(VideoConfig, {**TINY_CONFIG, "autoencoder": {"width": 16, "init": str(source)}})
    model = VideoModality().build_model(cfg)
    ae = model.ae.state_dict()
    assert all(torch.equal(ae[k], shipped["ae." + k]) for k in ae)
    assert float(model.ae.scale) == 2.5

    bad = tmp_path / "no_ae.safetensors"
    save_file({"dit.x": torch.zeros(1)}, str(bad))
    for path, msg in ((bad, "holds no autoencoder"), (tmp_path / "missing.safetensors", "cannot read")):
        wrong = from_dict(VideoConfig, {**TINY_CONFIG, "autoencoder": {"width": 16, "init": str(path)}})
        with pytest.raises(CheckpointError, match=msg):
            VideoModality().build_model(wrong)
    wide = from_dict(VideoConfig, {**TINY_CONFIG, "autoencoder": {"width": 32, "init": str(source)}})
    with pytest.raises(CheckpointError, match="does not match"):
        VideoModality().build_model(wide)
