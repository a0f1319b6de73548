"""The box stage of the points pipeline (``threed.box``): the box, the fit, the model, the data and
the pipeline that draws a box and fits the base's clouds to it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from shared_core.config import from_dict
from shared_core.errors import CheckpointError, ExtradimError
from shared_core.text import EmbeddingBank, TextEncoder
from threed.box import BoxModel, box_of, fit_to_box
from threed.modality import PointsConfig, PointsDataset, PointsModality, PointsModel
from threed.pipeline import PointsPipeline, save_points_checkpoint

pytest.importorskip("transformers")

TINY = {
    "diffusion": {"schedule": "cosine", "prediction": "v"},
    "data": {"num_points": 32, "coarse_points": 16, "max_text_length": 16, "canonical_yaw": True},
    "model": {"hidden_size": 32, "depth": 1, "num_heads": 2},
    "sample": {"steps": 3},
}


def _cfg(stage: str, **data: object) -> PointsConfig:
    return from_dict(
        PointsConfig, {**TINY, "data": {**TINY["data"], **data}, "model": {**TINY["model"], "stage": stage}}
    )


def _randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Zero-initialised layers (adaLN-Zero, the output) get values, so the output depends on the input."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, std)
    return model


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.load("minilm", max_length=16)


def test_fit_to_box_gives_the_drawn_box_keeping_order_and_colours() -> None:
    g = torch.Generator().manual_seed(0)
    cloud = torch.rand(3, 200, 6, generator=g) * torch.tensor([2.0, 1.0, 0.5, 1, 1, 1]) - 0.5
    target = box_of(torch.randn(3, 300, 3, generator=g), 0.03)
    fitted = fit_to_box(cloud, target, 0.03)
    torch.testing.assert_close(box_of(fitted, 0.03), target, atol=1e-5, rtol=0)
    # a box given as (hi, lo) is the same box: never a mirror image
    swapped = torch.cat([target[:, 3:], target[:, :3]], dim=1)
    torch.testing.assert_close(fit_to_box(cloud, swapped, 0.03), fitted)
    assert torch.equal(fitted[..., 3:], cloud[..., 3:])
    # per axis an increasing affine map: every axis keeps the order of its points
    assert torch.equal(fitted[..., :3].argsort(dim=1), cloud[..., :3].argsort(dim=1))
    # a cloud fitted to its own box is unchanged; q = 0 is the bounding box
    torch.testing.assert_close(fit_to_box(cloud, box_of(cloud, 0.03), 0.03), cloud)
    bb = torch.cat([cloud[..., :3].amin(1), cloud[..., :3].amax(1)], dim=-1)
    torch.testing.assert_close(box_of(cloud, 0.0), bb)
    with pytest.raises(ValueError, match="quantile"):
        box_of(cloud, 0.5)


def test_box_model_starts_at_zero_and_needs_the_text() -> None:
    cfg = _cfg("box")
    model = BoxModel(cfg)
    x, t, pooled = torch.randn(4, 6), torch.tensor([1.0, 10.0, 100.0, 900.0]), torch.randn(4, 384)
    assert torch.equal(model(x, t, pooled=pooled), torch.zeros(4, 6))  # zero-initialised output
    _randomise(model)
    out = model(x, t, pooled=pooled)
    assert out.shape == (4, 6) and not torch.allclose(out[0], out[1])
    assert not torch.allclose(model(x, t, pooled=torch.zeros(4, 384)), out)  # the text matters
    with pytest.raises(ValueError, match="pooled"):
        model(x, t)
    assert isinstance(PointsModality().build_model(cfg), BoxModel)
    with pytest.raises(ValueError, match="stage"):
        _cfg("boxes")


def test_box_item_is_the_box_of_the_base_item(encoder: TextEncoder) -> None:
    base_ds, box_ds = PointsDataset(_cfg("base"), None), PointsDataset(_cfg("box"), None)
    captions = sorted(set(base_ds.world.sample_ids(range(5)).captions))
    base_ds.bank = box_ds.bank = EmbeddingBank(encoder, captions)
    for i in range(5):
        base, box = base_ds[i], box_ds[i]
        assert set(box) == {"x", "pooled"} and box["x"].shape == (6,)
        torch.testing.assert_close(box["x"], box_of(base["x"][None], 0.03)[0])
        torch.testing.assert_close(box["pooled"], base["pooled"])


def _pipeline(encoder: TextEncoder, box_cfg: PointsConfig | None = None) -> PointsPipeline:
    base_cfg = _cfg("base")
    torch.manual_seed(0)
    base = _randomise(PointsModel(base_cfg), std=0.02)  # clouds within the pipeline's clamp
    box_cfg = box_cfg or _cfg("box")
    box = _randomise(BoxModel(box_cfg), seed=1)
    return PointsPipeline(base, base_cfg, None, None, encoder, box=box, box_cfg=box_cfg)


def test_pipeline_fits_each_base_cloud_to_its_drawn_box(encoder: TextEncoder) -> None:
    pipe = _pipeline(encoder)
    prompts = ["a blue mug", "a red table", "a white cube"]
    clouds = pipe.generate(prompts, seed=3, num_points=32, canonical=True)
    emb = encoder.encode(prompts, pad_to=16)
    boxes = pipe.boxes(emb.pooled, [0, 1, 2], seed=3)
    lo, hi = boxes[:, :3], boxes[:, 3:]  # a random model can draw lo > hi: the fit sorts them
    sorted_boxes = torch.cat([torch.minimum(lo, hi), torch.maximum(lo, hi)], dim=1)
    torch.testing.assert_close(box_of(clouds, 0.03), sorted_boxes, atol=1e-5, rtol=0)
    assert not torch.allclose(boxes[0], boxes[1])  # a box per cloud
    # batch-independent and seeded
    torch.testing.assert_close(
        pipe.generate(prompts, seed=3, num_points=32, canonical=True, batch_size=1), clouds
    )
    assert not torch.allclose(pipe.generate(prompts, seed=4, num_points=32, canonical=True), clouds)
    # without the box stage: the same base clouds, unfitted (so their boxes differ)
    plain = PointsPipeline(pipe.base, pipe.base_cfg, None, None, encoder)
    raw = plain.generate(prompts, seed=3, num_points=32, canonical=True)
    assert raw[..., :3].abs().max() < 1.5  # not clamped
    torch.testing.assert_close(fit_to_box(raw, boxes, 0.03), clouds)
    assert not torch.allclose(raw, clouds)
    assert pipe.settings()["box_quantile"] == 0.03 and plain.settings()["box_quantile"] is None


def test_pipeline_rejects_a_box_that_does_not_match(encoder: TextEncoder, tmp_path) -> None:
    with pytest.raises(ExtradimError, match="canonical_yaw"):
        _pipeline(encoder, _cfg("box", canonical_yaw=False))
    pipe = _pipeline(encoder)
    with pytest.raises(ExtradimError, match="no box stage"):
        PointsPipeline(pipe.base, pipe.base_cfg, None, None, encoder).boxes(torch.zeros(1, 384), [0], 0)
    # through files: a base checkpoint given as the box is refused; False loads no box
    base_path = save_points_checkpoint(pipe.base, pipe.base_cfg, tmp_path / "base.safetensors")
    up_cfg = dataclasses.replace(
        _cfg("upsampler"), data=dataclasses.replace(_cfg("upsampler").data, canonical_yaw=False)
    )
    up_path = save_points_checkpoint(PointsModel(up_cfg), up_cfg, tmp_path / "up.safetensors")
    assert pipe.box is not None and pipe.box_cfg is not None
    box_path = save_points_checkpoint(pipe.box, pipe.box_cfg, tmp_path / "box.safetensors")
    loaded = PointsPipeline.load(base_path, up_path, box=box_path)
    assert loaded.box is not None and loaded.box_checkpoint == box_path and len(loaded.box_sha256) == 64
    assert PointsPipeline.load(base_path, up_path).box is None  # a given base: no box unless asked
    assert PointsPipeline.load(base_path, up_path, box=False).box is None
    with pytest.raises(CheckpointError, match="not a box-stage checkpoint"):
        PointsPipeline.load(base_path, up_path, box=base_path)


def test_box_conditioned_base_starts_as_the_plain_one_and_sees_the_box(encoder: TextEncoder) -> None:
    from threed.modality import add_box_condition

    pipe = _pipeline(encoder)
    wide, wide_cfg = add_box_condition(pipe.base, pipe.base_cfg)
    assert wide.box_condition and wide_cfg.model.box_condition
    x, t = torch.randn(2, 32, 6), torch.tensor([5.0, 500.0])
    text = {
        "context": torch.randn(2, 16, 384),
        "context_mask": torch.ones(2, 16, dtype=torch.bool),
        "pooled": torch.randn(2, 384),
    }
    box = torch.randn(2, 6)
    torch.testing.assert_close(wide(x, t, **text, box=box), pipe.base(x, t, **text))  # zero columns
    with pytest.raises(ValueError, match="box="):
        wide(x, t, **text)
    with pytest.raises(ValueError, match="box condition"):
        pipe.base(x, t, **text, box=box)
    with pytest.raises(ValueError, match="base stage"):
        add_box_condition(wide, wide_cfg)
    # once the box columns are trained, the pipeline's drawn boxes reach the network
    with torch.no_grad():
        wide.dit.cond_embed.pooled_embedder.mlp[0].weight[:, -6:].normal_(0, 0.5)
    assert not torch.allclose(wide(x, t, **text, box=box), pipe.base(x, t, **text))
    prompts = ["a blue mug", "a red table"]
    boxed = PointsPipeline(wide, wide_cfg, None, None, encoder, box=pipe.box, box_cfg=pipe.box_cfg)
    a = boxed.generate(prompts, seed=3, num_points=32, canonical=True)
    b = pipe.generate(prompts, seed=3, num_points=32, canonical=True)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(
        box_of(a, 0.03), box_of(b, 0.03), atol=1e-5, rtol=0
    )  # both fitted to the same boxes
    torch.testing.assert_close(
        boxed.generate(prompts, seed=3, num_points=32, canonical=True, batch_size=1), a
    )
    # under CFG the batch is doubled: the boxes follow
    assert boxed.generate(prompts, seed=3, num_points=32, canonical=True, guidance=2.0).shape == (2, 32, 6)
    with pytest.raises(ExtradimError, match="needs a box stage"):  # refused when built, not later
        PointsPipeline(wide, wide_cfg, None, None, encoder)
    other_q = _cfg("box", box_quantile=0.05)
    with pytest.raises(ExtradimError, match=r"quantile 0\.03.*quantile 0\.05"):
        PointsPipeline(wide, wide_cfg, None, None, encoder, box=BoxModel(other_q), box_cfg=other_q)
    # autoguidance by a box-conditioned guide: the guide gets the boxes too
    boxed.guide, boxed.autoguidance = wide, 2.0
    torch.testing.assert_close(
        boxed.generate(prompts, seed=3, num_points=32, canonical=True), a
    )  # good = bad
    # training data: each base item carries its own box
    ds = PointsDataset(wide_cfg, None)
    ds.bank = EmbeddingBank(encoder, sorted(set(ds.world.sample_ids(range(2)).captions)))
    item = ds[1]
    torch.testing.assert_close(item["box"], box_of(item["x"][None], 0.03)[0])
