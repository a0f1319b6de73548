"""The points modality (base + upsampler) and its pipeline at toy size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from shared_core.config import from_dict
from shared_core.errors import CheckpointError, ExtradimError
from shared_core.text import EmbeddingBank, TextEncoder
from threed.modality import (
    PointsConfig,
    PointsDataset,
    PointsModality,
    PointsModel,
    all_captions,
    fourier_features,
)
from threed.pipeline import PointsPipeline, save_points_checkpoint
from threed.world import parse_caption

pytest.importorskip("transformers")

TINY = {
    "diffusion": {"schedule": "cosine", "prediction": "x0"},
    "data": {"num_points": 32, "coarse_points": 16, "max_text_length": 16},
    "model": {"hidden_size": 32, "depth": 1, "num_heads": 2},
    "sample": {"steps": 2},
}


def _cfg(stage: str, fourier: int = 0, local_k: int = 0) -> PointsConfig:
    model = {**TINY["model"], "stage": stage, "fourier_frequencies": fourier, "local_k": local_k}
    return from_dict(PointsConfig, {**TINY, "model": model})


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.load("minilm", max_length=16)


def _randomise(model: PointsModel) -> PointsModel:
    """adaLN-Zero starts at output 0 whatever the input: give the zero weights values."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def pipeline(encoder: TextEncoder) -> PointsPipeline:
    base, up = _cfg("base"), _cfg("upsampler")
    return PointsPipeline(_randomise(PointsModel(base)), base, _randomise(PointsModel(up)), up, encoder)


def test_all_captions_parse_back() -> None:
    caps = all_captions()
    assert len(caps) == len(set(caps)) > 70 * 9
    assert all(parse_caption(c) is not None for c in caps)


@pytest.mark.parametrize(("fourier", "local_k"), [(0, 0), (3, 0), (0, 4), (2, 4)])
def test_models_are_permutation_equivariant(fourier: int, local_k: int) -> None:
    torch.manual_seed(0)
    for stage in ("base", "upsampler"):
        model = _randomise(PointsModel(_cfg(stage, fourier, local_k))).eval()  # base: its own neighbours
        x, t, perm = torch.randn(2, 32, 6), torch.tensor([10.0, 500.0]), torch.randperm(32)
        cond = (
            {"context": torch.randn(2, 16, 384), "context_mask": torch.ones(2, 16, dtype=torch.bool),
             "pooled": torch.randn(2, 384)}
            if stage == "base" else {"coarse": torch.randn(2, 16, 6)}
        )  # fmt: skip
        out = model(x, t, **cond)
        assert out.shape == x.shape  # Fourier features are inputs only
        torch.testing.assert_close(model(x[:, perm], t, **cond), out[:, perm])
    with pytest.raises(ValueError, match="coarse"):
        PointsModel(_cfg("upsampler"))(torch.randn(1, 4, 6), torch.zeros(1))


def test_fourier_features_encode_each_coordinate_at_octave_frequencies() -> None:
    xyz = torch.tensor([[0.25, -0.5, 1.0]])
    f = fourier_features(xyz, 2)
    angles = torch.pi / 2 * torch.tensor([0.25, 0.5, -0.5, -1.0, 1.0, 2.0])  # (x, y, z) x (1, 2)
    torch.testing.assert_close(f, torch.cat([angles.sin(), angles.cos()])[None])
    with pytest.raises(ValueError, match="fourier_frequencies"):
        _cfg("base", -1)


def test_local_features_see_the_nearest_coarse_points() -> None:
    model = _randomise(PointsModel(_cfg("upsampler", local_k=2))).eval()
    x = torch.zeros(1, 3, 6)
    near = torch.tensor([[[0.1, 0, 0, 1, 1, 1], [0, 0.1, 0, 1, 1, 1]]])
    far = torch.tensor([[[5.0, 5, 5, -1, -1, -1]]])
    coarse = torch.cat([near, far], 1)
    # only the two nearest coarse points count: moving the far one changes nothing
    moved = torch.cat([near, far + 1], 1)
    torch.testing.assert_close(model._local_features(x, coarse), model._local_features(x, moved))
    assert not torch.allclose(model._local_features(x, coarse), model._local_features(x, coarse * 0.5))
    with pytest.raises(ValueError, match="local_k"):
        _cfg("base", local_k=-1)


def test_datasets_are_deterministic_and_shaped(encoder: TextEncoder) -> None:
    base_cfg = _cfg("base")
    bank = EmbeddingBank(encoder, all_captions()[:0] + ["a red sphere"])  # tiny bank; index lookups below
    ds = PointsDataset(base_cfg, bank)
    caption = ds.world.sample_ids([0]).captions[0]
    bank = EmbeddingBank(encoder, [caption])
    item = PointsDataset(base_cfg, bank)[0]
    assert item["x"].shape == (32, 6) and item["context"].shape == (16, 384)
    up = PointsDataset(_cfg("upsampler"), None)
    a, b = up[3], up[3]
    assert a["x"].shape == (32, 6) and a["coarse"].shape == (16, 6)
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["coarse"], b["coarse"])
    # The coarse cloud is jittered in xyz only; the colours are the shape's.
    assert torch.equal(a["coarse"][:, 3:], a["x"][:16, 3:])


def test_generate_shapes_determinism_and_batch_independence(pipeline: PointsPipeline) -> None:
    prompts = ["a red torus", "a blue mug", "a white table"]
    a = pipeline.generate(prompts, seed=1, num_points=48, batch_size=3)
    b = pipeline.generate(prompts, seed=1, num_points=48, batch_size=1)
    assert a.shape == (3, 48, 6)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert not torch.allclose(a, pipeline.generate(prompts, seed=2, num_points=48))
    assert pipeline.generate(prompts[:1], seed=1, num_points=32).shape == (1, 32, 6)  # base only
    # a stochastic sampler too: each cloud draws its step noise from its own generator
    c = pipeline.generate(prompts, seed=1, num_points=48, batch_size=3, sampler="euler_ancestral")
    d = pipeline.generate(prompts, seed=1, num_points=48, batch_size=1, sampler="euler_ancestral")
    torch.testing.assert_close(c, d, atol=1e-4, rtol=0)


def test_guidance_rescale_reaches_the_base_sampler(pipeline: PointsPipeline) -> None:
    assert pipeline.settings()["guidance_rescale"] == 0.0  # checkpoints without the key: plain CFG
    plain = pipeline.generate(["a red torus"], seed=1, num_points=32, guidance=3.0)
    rescaled = pipeline.generate(["a red torus"], seed=1, num_points=32, guidance=3.0, guidance_rescale=0.7)
    unguided = pipeline.generate(["a red torus"], seed=1, num_points=32, guidance=1.0, guidance_rescale=0.7)
    assert not torch.allclose(plain, rescaled)
    torch.testing.assert_close(
        unguided, pipeline.generate(["a red torus"], seed=1, num_points=32, guidance=1.0)
    )
    with pytest.raises(ExtradimError, match="guidance rescale"):
        pipeline.settings(guidance_rescale=-0.1)


@pytest.mark.parametrize("n", [8, 9000])
def test_num_points_out_of_range(pipeline: PointsPipeline, n: int) -> None:
    with pytest.raises(ExtradimError, match="num-points"):
        pipeline.generate(["a red torus"], num_points=n)


def _save_stages(pipeline: PointsPipeline, folder: Path) -> tuple[Path, Path]:
    """Both stages of ``pipeline`` saved as checkpoints in ``folder``: (base, upsampler)."""
    b = save_points_checkpoint(pipeline.base, pipeline.base_cfg, folder / "base.safetensors")
    assert pipeline.upsampler is not None and pipeline.up_cfg is not None
    return b, save_points_checkpoint(pipeline.upsampler, pipeline.up_cfg, folder / "up.safetensors")


def test_checkpoint_round_trip_and_errors(
    pipeline: PointsPipeline, encoder: TextEncoder, tmp_path: Path
) -> None:
    b, u = _save_stages(pipeline, tmp_path)
    again = PointsPipeline.load(b, u)
    again.text = encoder
    torch.testing.assert_close(
        again.generate(["a cone"], seed=0, num_points=40),
        pipeline.generate(["a cone"], seed=0, num_points=40),
    )
    with pytest.raises(ExtradimError, match="base-stage"):
        PointsPipeline.load(u, b)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    (tmp_path / "bad.yaml").write_text(b.with_suffix(".yaml").read_text())
    with pytest.raises(CheckpointError, match="corrupt"):
        PointsPipeline.load(tmp_path / "bad.safetensors", u)


def test_autoguidance_by_a_weaker_base(
    pipeline: PointsPipeline, encoder: TextEncoder, tmp_path: Path
) -> None:
    b, u = _save_stages(pipeline, tmp_path)
    torch.manual_seed(3)
    other = _randomise(PointsModel(pipeline.base_cfg))  # other initial weights: a different model
    w = save_points_checkpoint(other, pipeline.base_cfg, tmp_path / "weak.safetensors")
    plain = pipeline.generate(["a cone"], seed=0, num_points=40)
    runs = {}
    for name, guide, scale in [("self", b, 2.0), ("weak", w, 2.0), ("off", w, 1.0)]:
        pipe = PointsPipeline.load(b, u, guide=guide, autoguidance=scale)
        pipe.text = encoder
        runs[name] = pipe.generate(["a cone"], seed=0, num_points=40)
    torch.testing.assert_close(runs["self"], plain, atol=1e-5, rtol=0)  # good - bad = 0
    torch.testing.assert_close(runs["off"], plain)
    assert not torch.allclose(runs["weak"], plain, atol=1e-3)
    with pytest.raises(ExtradimError, match="autoguidance model"):
        PointsPipeline.load(b, u, guide=u, autoguidance=2.0)
    with pytest.raises(ExtradimError, match="autoguidance must be"):
        PointsPipeline.load(b, u, guide=w, autoguidance=-1.0)


@pytest.mark.parametrize(
    ("diffusion", "data", "stage"),
    [
        (
            "{schedule: cosine, prediction: x0, cond_drop_prob: 0.0}",
            "{num_points: 24, coarse_points: 8}",
            "upsampler",
        ),
        (
            "{schedule: cosine, prediction: v, self_condition: 0.5}",
            "{num_points: 16}",
            "base",
        ),  # self-conditioned
        ("{schedule: cosine, prediction: v}", "{num_points: 16, canonical_yaw: true}", "box"),
        ("{schedule: cosine, prediction: v}", "{num_points: 16}", "base, box_condition: true"),
    ],
)
def test_train_points_end_to_end(
    diffusion: str, data: str, stage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared_core.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "train: {steps: 2, batch_size: 2, log: {every: 1, progress: false}}\n"
        f"diffusion: {diffusion}\ndata: {data}\n"
        f"model: {{stage: {stage}, hidden_size: 32, depth: 1, num_heads: 2}}\n"
    )
    assert main(["train", "points", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    written = (tmp_path / "run" / "config.yaml").read_text()
    assert ("self_condition: 0.5" in written) == ("self_condition" in diffusion)
    assert PointsModality().build_model(from_dict(PointsConfig, {})).stage == "base"


def test_upsampler_draws_chunks_of_its_trained_size(pipeline: PointsPipeline) -> None:
    """Extra points come in chunks of m (the upsampler's set size) that do not see each other:
    asking for more points keeps the first chunk and adds independent ones."""
    assert pipeline.up_cfg is not None
    m, coarse = pipeline.up_cfg.data.num_points, pipeline.coarse_points
    one = pipeline.generate(["a red torus"], seed=3, num_points=coarse + m)
    three = pipeline.generate(["a red torus"], seed=3, num_points=coarse + 2 * m + 5)
    assert three.shape == (1, coarse + 2 * m + 5, 6)
    torch.testing.assert_close(three[:, : coarse + m], one, atol=1e-4, rtol=0)
    first, second = three[0, coarse : coarse + m], three[0, coarse + m : coarse + 2 * m]
    assert not torch.allclose(first, second, atol=1e-3)


def test_project_to_planes_puts_points_on_the_local_plane() -> None:
    """Points near a sampled plane land on it (error << their offset), keep their colour, and
    points already on the plane do not move; on a sphere the error shrinks several-fold."""
    from threed.pipeline import project_to_planes

    g = torch.Generator().manual_seed(0)
    plane = torch.cat([torch.rand(1, 200, 2, generator=g) * 2 - 1, torch.full((1, 200, 1), 0.3)], -1)
    surface = torch.cat([plane, torch.rand(1, 200, 3, generator=g)], -1)
    off = torch.cat(
        [torch.rand(1, 50, 2, generator=g) - 0.5, 0.3 + 0.1 * torch.randn(1, 50, 1, generator=g)], -1
    )
    points = torch.cat([off, torch.rand(1, 50, 3, generator=g)], -1)
    out = project_to_planes(points, surface, 6)
    torch.testing.assert_close(out[..., 2], torch.full((1, 50), 0.3), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out[..., :2], points[..., :2], atol=1e-5, rtol=0
    )  # moved along the normal only
    torch.testing.assert_close(out[..., 3:], points[..., 3:])
    torch.testing.assert_close(project_to_planes(surface, surface, 6), surface, atol=1e-5, rtol=0)

    sphere = torch.nn.functional.normalize(torch.randn(1, 2000, 3, generator=g), dim=-1)
    noisy = torch.nn.functional.normalize(torch.randn(1, 300, 3, generator=g), dim=-1)
    noisy = noisy * (1 + 0.05 * torch.randn(1, 300, 1, generator=g))
    before = (noisy.norm(dim=-1) - 1).abs().mean()
    after = (project_to_planes(noisy, sphere, 8).norm(dim=-1) - 1).abs().mean()
    assert after < before / 4


def test_project_to_quadrics_follows_curvature() -> None:
    """On a 512-point unit sphere a plane fit pulls points ~0.015 inside (the chord plane); the
    quadric fit lands them on the sphere (noisy or not), keeps colour, is exact on a plane, stays
    bounded on a degenerate patch, and refuses k < 6."""
    from threed.pipeline import project_to_planes, project_to_quadrics

    g = torch.Generator().manual_seed(0)
    sphere = torch.nn.functional.normalize(torch.randn(1, 512, 3, generator=g), dim=-1)
    on = torch.nn.functional.normalize(torch.randn(1, 300, 3, generator=g), dim=-1)
    noisy = torch.cat([on * (1 + 0.05 * torch.randn(1, 300, 1, generator=g)), torch.rand(1, 300, 3)], -1)
    plane_err = (project_to_planes(noisy, sphere, 8)[..., :3].norm(dim=-1) - 1).abs().mean()
    out = project_to_quadrics(noisy, sphere, 12)
    quad_err = (out[..., :3].norm(dim=-1) - 1).abs().mean()
    assert plane_err > 0.01 and quad_err < 0.002
    torch.testing.assert_close(out[..., 3:], noisy[..., 3:])

    flat = torch.cat([torch.rand(1, 200, 2, generator=g) * 2 - 1, torch.full((1, 200, 1), -0.2)], -1)
    off = torch.cat([torch.rand(1, 40, 2, generator=g) - 0.5, torch.randn(1, 40, 1, generator=g) * 0.1], -1)
    moved = project_to_quadrics(off, flat, 10)
    torch.testing.assert_close(moved[..., 2], torch.full((1, 40), -0.2), atol=1e-4, rtol=0)
    torch.testing.assert_close(moved[..., :2], off[..., :2], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="k >= 6"):
        project_to_quadrics(off, flat, 5)

    # A badly conditioned patch (two tight clusters 0.4 apart): the raw least-squares quadratic
    # flings points ~10 away; the height stays within the neighbours' widened height range.
    pair = torch.cat(
        [torch.tensor([-0.2, 0, 0]) + 0.03 * torch.randn(1, 6, 3, generator=g),
         torch.tensor([0.2, 0, 0]) + 0.03 * torch.randn(1, 6, 3, generator=g)], 1
    )  # fmt: skip
    scattered = 0.4 * torch.randn(1, 500, 3, generator=g)
    moved = project_to_quadrics(scattered, pair, 12)
    assert float((moved - scattered).norm(dim=-1).max()) < 2.0


def test_sigma_max_and_projection_settings(encoder: TextEncoder) -> None:
    """``sample.sigma_max`` caps the Karras grid (the sampler starts there), ``sample.project_k``
    moves the upsampler's points onto the coarse cloud's planes; both are validated and reported."""
    import dataclasses

    from shared_core.train.loop import build_schedule
    from threed.pipeline import _sigmas, project_to_planes, project_to_quadrics, upsample

    base, up = _cfg("base"), _cfg("upsampler")
    schedule = build_schedule(base.diffusion)
    s = _sigmas(schedule, 8, "karras", 10.0)
    assert float(s[0]) == pytest.approx(10.0) and float(s[-1]) == 0 and len(s) == 9
    assert float(_sigmas(schedule, 8, "karras")[0]) == pytest.approx(schedule.sigma_max)
    with pytest.raises(ExtradimError, match="sigma_min"):
        _sigmas(schedule, 8, "karras", schedule.sigma_min / 2)
    with pytest.raises(ValueError, match="karras"):
        from_dict(PointsConfig, {**TINY, "sample": {"spacing": "trailing", "sigma_max": 10.0}})
    with pytest.raises(ValueError, match="project_k"):
        from_dict(PointsConfig, {**TINY, "sample": {"project_k": 2}})
    with pytest.raises(ValueError, match="quadric"):
        from_dict(PointsConfig, {**TINY, "sample": {"project_k": 5, "project_fit": "quadric"}})

    model = _randomise(PointsModel(up))
    coarse = torch.randn(2, 16, 6)
    plain = upsample(model, up, coarse, 20, [0, 1], seed=1)
    proj_cfg = dataclasses.replace(up, sample=dataclasses.replace(up.sample, project_k=4))
    projected = upsample(model, proj_cfg, coarse, 20, [0, 1], seed=1)
    torch.testing.assert_close(projected, project_to_planes(plain, coarse, 4))
    quad_cfg = dataclasses.replace(
        up, sample=dataclasses.replace(up.sample, project_k=6, project_fit="quadric")
    )
    torch.testing.assert_close(
        upsample(model, quad_cfg, coarse, 20, [0, 1], seed=1), project_to_quadrics(plain, coarse, 6)
    )
    pipe = PointsPipeline(_randomise(PointsModel(base)), base, model, proj_cfg, encoder)
    st = pipe.settings()
    assert st["sigma_max"] is None and st["upsampler_project_k"] == 4
    assert st["upsampler_project_fit"] == "plane"


def test_canonical_yaw_undoes_the_world_turn(encoder: TextEncoder) -> None:
    """With ``data.canonical_yaw`` the base learns each item in its own azimuth frame: a mug's
    handle (its only off-axis part) then always sits on +X, whatever yaw the world drew."""
    from threed.modality import rotate_z

    data = {**TINY["data"], "num_points": 2048, "canonical_yaw": True}
    cfg = from_dict(PointsConfig, {**TINY, "data": data})
    ds = PointsDataset(cfg, None)
    ds.world = type(ds.world)(num_points=2048, seed=0, classes=["mug"])
    ds.bank = EmbeddingBank(encoder, sorted(set(ds.world.sample_ids(range(6)).captions)))
    batch = ds.world.sample_ids(range(6))
    yaws = torch.tensor([p.yaw for p in batch.params], dtype=torch.float64)
    assert float(yaws.max() - yaws.min()) > 1.0  # the world turned them differently
    for i in range(6):
        x = ds[i]["x"]
        torch.testing.assert_close(x, rotate_z(batch.points[i], -batch.params[i].yaw))
        torch.testing.assert_close(rotate_z(x, batch.params[i].yaw), batch.points[i], atol=1e-5, rtol=0)
        # the point farthest from the body's axis (the handle's outer rim) lies in the +X direction
        d = x[:, :2] - x[:, :2].mean(0)
        far = d[d.norm(dim=1).argmax()]
        assert abs(math.atan2(float(far[1]), float(far[0]))) < 0.15
        assert torch.equal(x[:, 3:], batch.points[i, :, 3:])  # colours untouched


def test_rotate_z_turns_counter_clockwise_per_row() -> None:
    from threed.modality import rotate_z

    x = torch.tensor([[[1.0, 0.0, 0.5, 0.1, 0.2, 0.3]], [[1.0, 0.0, 0.5, 0.1, 0.2, 0.3]]])
    out = rotate_z(x, torch.tensor([torch.pi / 2, torch.pi]))
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 1.0, 0.5, 0.1, 0.2, 0.3]))
    torch.testing.assert_close(out[1, 0], torch.tensor([-1.0, 0.0, 0.5, 0.1, 0.2, 0.3]))


def test_canonical_base_turns_each_cloud_by_its_seeded_yaw(encoder: TextEncoder) -> None:
    """The pipeline turns a canonical-yaw base's clouds by a yaw from (seed, i), re-centred in XY:
    the same coarse cloud as the plain base up to that turn and shift, batch-independent."""
    import dataclasses

    from threed.pipeline import turn_randomly

    base = _cfg("base")
    canon = dataclasses.replace(base, data=dataclasses.replace(base.data, canonical_yaw=True))
    torch.manual_seed(0)  # weights independent of the tests run before (random ones can amplify rounding)
    model = _randomise(PointsModel(base))
    plain = PointsPipeline(model, base, None, None, encoder)
    turned = PointsPipeline(model, canon, None, None, encoder)
    prompts = ["a blue mug", "a red table", "a white cube"]
    a = plain.generate(prompts, seed=3, num_points=32)
    b = turned.generate(prompts, seed=3, num_points=32, batch_size=1)
    assert not torch.allclose(a, b)
    # distances within each cloud survive (a rigid turn plus a shift) ...
    dist = lambda c: (c[:, :, None, :3] - c[:, None, :, :3]).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(dist(a), dist(b), atol=1e-4, rtol=0)
    # ... and the XY box is centred
    xy = b[..., :2]
    torch.testing.assert_close(xy.amax(1) + xy.amin(1), torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(b[..., 2:], a[..., 2:])  # z and colours as generated
    # canonical=True leaves them in the item's own frame (dream's start): the unturned clouds
    torch.testing.assert_close(turned.generate(prompts, seed=3, num_points=32, canonical=True), a)
    # the yaws differ per cloud and come from the seed
    g = lambda s: [torch.Generator().manual_seed(s + i) for i in range(3)]  # noqa: E731
    one, two = turn_randomly(a, g(0)), turn_randomly(a, g(0))
    torch.testing.assert_close(one, two)
    assert not torch.allclose(one, turn_randomly(a, g(10)))


def test_upsampler_can_start_from_the_coarse_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    """``sample.start: coarse`` starts each chunk at the coarse points (a random order, drawn per
    cloud and chunk; with replacement when the chunk is larger) plus noise of the grid's top level;
    ``noise`` starts at pure noise. The start is validated by the config."""
    import dataclasses

    import threed.pipeline as pipeline_mod

    up = _cfg("upsampler")  # chunks of m = 32 points
    model = _randomise(PointsModel(up))
    starts: list[torch.Tensor] = []

    def capture(den: object, x: torch.Tensor, sigmas: torch.Tensor, **kw: object) -> torch.Tensor:
        starts.append(x.clone())
        return x

    monkeypatch.setattr(pipeline_mod, "get_sampler", lambda name: capture)
    small = dataclasses.replace(up.sample, start="coarse", sigma_max=0.01, spacing="karras")
    cfg = dataclasses.replace(up, sample=small)
    coarse = torch.randn(2, 40, 6)  # more coarse points than a chunk: each chunk a permutation's head
    pipeline_mod.upsample(model, cfg, coarse, 64, [0, 1], seed=1)
    x = starts[-1].reshape(2, 2, 32, 6)  # (clouds, chunks, m, 6)
    for b in range(2):
        d = torch.cdist(x[b].reshape(-1, 6), coarse[b])
        nearest = d.min(dim=1)
        assert float(nearest.values.max()) < 0.1  # each start point sits on a coarse point
        for c in range(2):  # within a chunk no coarse point is used twice
            assert nearest.indices.reshape(2, 32)[c].unique().numel() == 32
    assert not torch.allclose(x[0, 0], x[0, 1])  # chunks draw their own orders
    pipeline_mod.upsample(model, cfg, coarse[1:], 64, [1], seed=1)  # batch-independent
    torch.testing.assert_close(starts[-1], starts[-2][2:])

    few = coarse[:, :10]  # fewer coarse points than a chunk: drawn with replacement
    pipeline_mod.upsample(model, cfg, few, 32, [0, 1], seed=1)
    assert float(torch.cdist(starts[-1][0], few[0]).min(dim=1).values.max()) < 0.1

    pipeline_mod.upsample(model, up, coarse, 32, [0, 1], seed=1)  # default: pure noise, std ~sigma_max
    assert float(starts[-1].std()) > 10
    with pytest.raises(ValueError, match="start"):
        from_dict(PointsConfig, {**TINY, "sample": {"start": "zeros"}})


def test_self_conditioning_widens_a_trained_stage_and_samples(
    pipeline: PointsPipeline, encoder: TextEncoder, tmp_path: Path
) -> None:
    """``add_self_conditioning`` gives a model that takes ``self_cond=`` and starts as the same
    function; once its new columns are trained it uses the estimate, the pipeline feeds it
    (``SelfConditioning``), and clouds stay seeded and batch-independent."""
    from threed.modality import add_self_conditioning
    from threed.pipeline import points_denoiser

    base, cfg = pipeline.base, pipeline.base_cfg
    new, new_cfg = add_self_conditioning(base, cfg)
    assert new.self_condition and new_cfg.diffusion.self_condition == 0.5
    x, t = torch.randn(2, 32, 6), torch.tensor([10.0, 500.0])
    emb = encoder.encode(["a cone", "a red torus"], pad_to=16)
    cond = {"context": emb.tokens, "context_mask": emb.mask, "pooled": emb.pooled}
    with torch.no_grad():
        torch.testing.assert_close(new(x, t, **cond, self_cond=torch.randn(2, 32, 6)), base(x, t, **cond))
    with pytest.raises(ValueError, match="self-conditioning"):
        base(x, t, **cond, self_cond=x)
    with pytest.raises(ValueError, match="already"):
        add_self_conditioning(new, new_cfg)
    with torch.no_grad():
        new.dit.x_embedder.weight[:, -6:].normal_(0, 0.5)  # as if trained: the estimate matters
    assert not torch.allclose(new(x, t, **cond, self_cond=x), new(x, t, **cond))
    assert type(points_denoiser(new, None, "x0")).__name__ == "SelfConditioning"  # type: ignore[arg-type]
    b = save_points_checkpoint(new, new_cfg, tmp_path / "sc.safetensors")
    assert pipeline.upsampler is not None and pipeline.up_cfg is not None
    u = save_points_checkpoint(pipeline.upsampler, pipeline.up_cfg, tmp_path / "up.safetensors")
    pipe = PointsPipeline.load(b, u)
    pipe.text = encoder
    assert pipe.base.self_condition
    prompts = ["a red torus", "a blue mug"]
    a1 = pipe.generate(prompts, seed=1, num_points=32, batch_size=2)
    torch.testing.assert_close(
        a1, pipe.generate(prompts, seed=1, num_points=32, batch_size=1), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(a1, pipe.generate(prompts, seed=1, num_points=32, batch_size=2))
    assert not torch.allclose(a1, pipeline.generate(prompts, seed=1, num_points=32, batch_size=2), atol=1e-3)
    guided = pipe.generate(prompts, seed=1, num_points=32, guidance=2.0)  # CFG halves keep their own
    assert guided.shape == a1.shape and torch.isfinite(guided).all()


def test_fourier_features_widen_a_trained_stage_as_the_same_function(
    pipeline: PointsPipeline, encoder: TextEncoder
) -> None:
    """``add_fourier_features`` gives a base and an upsampler whose tokens carry Fourier features
    and which start as the same functions (the new columns are zero); once those columns are
    trained the features matter; a model that has them is refused."""
    from threed.modality import add_fourier_features

    base, cfg = pipeline.base, pipeline.base_cfg
    new, new_cfg = add_fourier_features(base, cfg, 3)
    assert new.fourier == 3 and new_cfg.model.fourier_frequencies == 3
    assert new.dit.x_embedder.weight.shape[1] == base.dit.x_embedder.weight.shape[1] + 18
    x, t = torch.randn(2, 32, 6), torch.tensor([10.0, 500.0])
    emb = encoder.encode(["a cone", "a red torus"], pad_to=16)
    cond = {"context": emb.tokens, "context_mask": emb.mask, "pooled": emb.pooled}
    with torch.no_grad():
        torch.testing.assert_close(new(x, t, **cond), base(x, t, **cond))
        new.dit.x_embedder.weight[:, 6:24].normal_(0, 0.5)  # as if trained
        assert not torch.allclose(new(x, t, **cond), base(x, t, **cond), atol=1e-4)
    with pytest.raises(ValueError, match="without Fourier"):
        add_fourier_features(new, new_cfg, 2)
    assert pipeline.upsampler is not None and pipeline.up_cfg is not None
    up, _ = add_fourier_features(pipeline.upsampler, pipeline.up_cfg, 2)
    coarse = torch.randn(2, 16, 6)
    with torch.no_grad():
        torch.testing.assert_close(up(x, t, coarse=coarse), pipeline.upsampler(x, t, coarse=coarse))


def test_smooth_deformation_is_smooth_seeded_and_of_the_asked_size() -> None:
    from shared_core.random import make_generator
    from threed.modality import smooth_deformation

    g = torch.Generator().manual_seed(0)
    xyz = torch.nn.functional.normalize(torch.randn(1024, 3, generator=g), dim=1)
    d = smooth_deformation(xyz, 0.02, make_generator(3))
    assert d.shape == (1024, 3) and d.dtype == xyz.dtype
    torch.testing.assert_close(d.pow(2).sum(1).mean().sqrt(), torch.tensor(0.02))
    assert torch.equal(d, smooth_deformation(xyz, 0.02, make_generator(3)))
    assert not torch.equal(d, smooth_deformation(xyz, 0.02, make_generator(4)))
    # smooth: a point moves much like its nearest neighbour, unlike a random other point
    near = torch.cdist(xyz, xyz).topk(2, largest=False).indices[:, 1]
    far = torch.randperm(1024, generator=torch.Generator().manual_seed(1))
    assert (d - d[near]).norm(dim=1).mean() < 0.3 * (d - d[far]).norm(dim=1).mean()


def test_shape_noise_gives_the_base_a_seeded_xyz_perturbation(encoder: TextEncoder) -> None:
    """``data.shape_noise``: about ``shape_noise_prob`` of the base's items carry a smooth xyz
    perturbation no larger than ``shape_noise`` (RMS), the same for the same item; colours and the
    clean cloud untouched; off by default."""
    data = {**TINY["data"], "shape_noise": 0.03, "shape_noise_prob": 0.5}
    cfg = from_dict(PointsConfig, {**TINY, "data": data})
    ds = PointsDataset(cfg, None)
    ds.bank = EmbeddingBank(encoder, sorted(set(ds.world.sample_ids(range(40)).captions)))
    plain = PointsDataset(_cfg("base"), ds.bank)
    rms = []
    for i in range(40):
        item = ds[i]
        p = item["perturbation"]
        assert p.shape == (32, 6) and not p[:, 3:].any()
        assert torch.equal(p, ds[i]["perturbation"]) and torch.equal(item["x"], plain[i]["x"])
        assert "perturbation" not in plain[i]
        rms.append(float(p[:, :3].pow(2).sum(1).mean().sqrt()))
    moved = [r for r in rms if r > 0]
    assert 10 <= len(moved) <= 30 and max(moved) <= 0.03 + 1e-6
    with pytest.raises(ValueError, match="shape_noise"):
        from_dict(PointsConfig, {**TINY, "data": {**TINY["data"], "shape_noise": -1.0}})
    with pytest.raises(ValueError, match="shape_noise is for the base"):
        from_dict(PointsConfig, {**TINY, "data": data, "model": {**TINY["model"], "stage": "upsampler"}})
