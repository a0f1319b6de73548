"""Cameras, the ground-truth ray caster, the view-prior dataset/model and its SDS interface."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from shared_core.text import TextEncoder
from threed.prior import ShapeWorldPrior, ViewsDataConfig, ViewsDataset
from threed.views import Camera, camera_rays, render_mesh, view_embedding, view_phrase


def test_camera_rays_look_at_the_origin_with_z_up():
    cam = Camera(90.0, 0.0, distance=3.0)
    np.testing.assert_allclose(cam.position(), [0.0, 3.0, 0.0], atol=1e-9)
    o, d = camera_rays(cam, 4)
    assert o.shape == d.shape == (16, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(16))
    centre = d.reshape(4, 4, 3)[1:3, 1:3].mean((0, 1))
    torch.testing.assert_close(centre / centre.norm(), torch.tensor([0.0, -1.0, 0.0]), atol=1e-6, rtol=0)
    assert d.reshape(4, 4, 3)[0, :, 2].min() > 0 > d.reshape(4, 4, 3)[-1, :, 2].max()  # row 0 is the top
    # looking straight down still gives a valid frame
    assert torch.isfinite(camera_rays(Camera(0.0, 90.0), 2)[1]).all()


def test_render_mesh_draws_a_lit_disc_of_the_right_size():
    ball = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    ball.visual.vertex_colors = np.array([240, 40, 40, 255], dtype=np.uint8)
    cam = Camera(0.0, 0.0, distance=3.0, fov=40.0)
    view = render_mesh(ball, cam, 32, ambient=0.2)
    # apparent radius in pixels: tan of the half-angle the ball subtends over tan of half the fov
    r_px = math.tan(math.asin(0.5 / 3.0)) / math.tan(math.radians(20)) * 16
    assert abs(float(view.mask.sum()) - math.pi * r_px**2) < 0.08 * math.pi * r_px**2
    centre = view.image[:, 15:17, 15:17].mean((1, 2))
    torch.testing.assert_close(
        centre, torch.tensor([240, 40, 40]) / 255.0, atol=0.03, rtol=0
    )  # facing the light
    assert view.image[:, 0, 0].abs().max() == 0  # background
    side = render_mesh(ball, cam, 32, ambient=0.2, light=np.array([0.0, 1.0, 0.0]))
    assert side.image[0, 16, 16] < 0.6 * view.image[0, 16, 16]  # lit from the side: darker in front


def test_view_phrases_and_embedding():
    assert view_phrase(10, 0) == "front view" and view_phrase(180, 20) == "back view"
    assert view_phrase(-90, 10) == "side view" and view_phrase(0, 75) == "overhead view"
    e = view_embedding(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 90.0]))
    torch.testing.assert_close(
        e, torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]), atol=1e-6, rtol=0
    )
    # harmonics: cos/sin(k az) for k = 1, 2, then elevation
    e2 = view_embedding(torch.tensor([90.0]), torch.tensor([0.0]), harmonics=2)
    torch.testing.assert_close(e2, torch.tensor([[0.0, 1.0, -1.0, 0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        view_embedding(torch.tensor([0.0]), torch.tensor([0.0]), harmonics=0)


def test_views_dataset_is_deterministic_with_relative_cameras():
    cfg = ViewsDataConfig(size=16, objects=3, views_per_object=2, supersample=1)
    a, b = ViewsDataset(cfg, None, progress=False), ViewsDataset(cfg, None, progress=False)
    assert len(a) == 6
    assert torch.equal(a.images, b.images) and torch.equal(a.cameras, b.cameras)
    item = a[7]  # wraps around
    assert item["x"].shape == (3, 16, 16) and -1 <= item["x"].min() and item["x"].max() <= 1
    assert (a.cameras[:, 0] >= 0).all() and (a.cameras[:, 0] < 360).all()
    # stratified azimuths: an object's two views are on opposite halves of the circle
    assert ((a.cameras[0::2, 0] < 180) & (a.cameras[1::2, 0] >= 180)).all()
    lo, hi = cfg.elevation
    assert ((a.cameras[:, 1] >= lo) & (a.cameras[:, 1] <= hi)).all()
    assert a.images.float().std() > 0
    with pytest.raises(ValueError):
        ViewsDataConfig(size=10)


def test_random_backgrounds_fill_only_the_empty_pixels():
    black = ViewsDataset(ViewsDataConfig(size=16, objects=2, views_per_object=3), None, progress=False)
    cfg = ViewsDataConfig(size=16, objects=2, views_per_object=3, background="random")
    rand = ViewsDataset(cfg, None, progress=False)
    assert torch.equal(black.cameras, rand.cameras)  # the colours have their own random stream
    corners = rand.images[:, :, 0, 0].float()  # the object never reaches a corner
    assert (black.images[:, :, 0, 0] == 0).all() and corners.sum(1).gt(0).all()
    assert len({tuple(c) for c in corners.tolist()}) == len(rand)  # a colour per view
    # a corner's colour fills every empty pixel of its view; covered pixels are the object's own
    for i in range(len(rand)):
        empty = black.images[i].sum(0) == 0
        assert empty.any() and (~empty).any()
        same = (rand.images[i] == rand.images[i][:, :1, :1]).all(0)
        assert same[empty].float().mean() > 0.99
    with pytest.raises(ValueError, match="unknown background"):
        ViewsDataConfig(background="noise")


def test_views_dataset_draws_only_the_configured_classes():
    from threed.world import SHAPES

    cfg = ViewsDataConfig(size=8, objects=6, views_per_object=1, supersample=1, classes=["dumbbell", "mug"])
    data = ViewsDataset(cfg, None, progress=False)
    assert {SHAPES[i] for i in data.labels.tolist()} <= {"dumbbell", "mug"}
    with pytest.raises(ValueError, match="unknown or no classes"):
        ViewsDataConfig(classes=["teapot"])


def test_camera_token_reaches_cross_attention(monkeypatch):
    from threed.prior import ViewPriorModel, ViewsConfig, ViewsModelConfig

    cfg = ViewsConfig(
        data=ViewsDataConfig(size=8),
        model=ViewsModelConfig(hidden_size=16, depth=1, num_heads=2, text_dim=8, camera_dim=4,
                               camera_harmonics=3, camera_token=True),
    )  # fmt: skip
    model = ViewPriorModel(cfg)
    seen = {}

    def spy(x, t, *, context, context_mask, pooled):
        seen.update(context=context, mask=context_mask)
        return x

    monkeypatch.setattr(model.dit, "forward", spy)
    cams = torch.tensor([[0.0, 10.0], [90.0, 10.0]])
    null = {"context": torch.zeros(2, 5, 8), "context_mask": torch.zeros(2, 5, dtype=torch.bool)}
    model(torch.zeros(2, 3, 8, 8), torch.zeros(2), pooled=torch.zeros(2, 8), camera=cams, **null)
    # one more token, always attended (even under CFG's empty text), different for the two cameras
    assert seen["context"].shape == (2, 6, 8) and seen["mask"][:, -1].all() and not seen["mask"][:, :5].any()
    assert not torch.allclose(seen["context"][0, -1], seen["context"][1, -1])


def test_upscaled_prior_is_the_old_one_on_the_downsampled_image():
    from threed.prior import ViewPriorModel, ViewsConfig, ViewsModelConfig, upscale_prior

    torch.manual_seed(0)
    cfg = ViewsConfig(
        data=ViewsDataConfig(size=8),
        model=ViewsModelConfig(hidden_size=16, depth=2, num_heads=2, text_dim=8, camera_dim=4, patch_size=2,
                               camera_token=True),
    )  # fmt: skip
    old = ViewPriorModel(cfg).eval()
    with torch.no_grad():  # every weight non-zero (adaLN-Zero and the zero head would hide paths)
        for p in old.parameters():
            p.normal_(0.0, 0.2)
    new, new_cfg = upscale_prior(old, cfg, 2)
    assert (new_cfg.data.size, new_cfg.model.patch_size) == (16, 4) and new_cfg.model.hidden_size == 16
    cond = {
        "context": torch.randn(2, 5, 8),
        "context_mask": torch.ones(2, 5, dtype=torch.bool),
        "pooled": torch.randn(2, 8),
        "camera": torch.tensor([[0.0, 10.0], [90.0, 40.0]]),
    }
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([100.0, 700.0])
    with torch.no_grad():
        want = (
            old(torch.nn.functional.avg_pool2d(x, 2), t, **cond)
            .repeat_interleave(2, 2)
            .repeat_interleave(2, 3)
        )
        torch.testing.assert_close(new(x, t, **cond), want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(new(x, t, **cond), new(torch.randn(2, 3, 16, 16), t, **cond))
    with pytest.raises(ValueError, match="factor"):
        upscale_prior(old, cfg, 0)


@pytest.fixture(scope="module")
def tiny_prior(tiny_views_checkpoint, text_encoder: TextEncoder) -> ShapeWorldPrior:
    prior = ShapeWorldPrior.load(tiny_views_checkpoint)
    prior.text = text_encoder
    return prior


def test_prior_denoiser_depends_on_camera_and_text(tiny_prior: ShapeWorldPrior):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([1.0, 1.0])
    cams = torch.tensor([[0.0, 10.0], [120.0, 40.0]])
    red = tiny_prior.encode("a red torus")
    out = tiny_prior.denoiser(red, cams, 3.0)(x, sigma)
    assert out.shape == x.shape and torch.isfinite(out).all()
    same_cam = tiny_prior.denoiser(red, cams[:1].expand(2, 2), 3.0)(x, sigma)
    assert not torch.allclose(out[1], same_cam[1])  # the camera matters
    torch.testing.assert_close(out[0], same_cam[0])
    blue = tiny_prior.denoiser(tiny_prior.encode("a blue cube"), cams, 3.0)(x, sigma)
    assert not torch.allclose(out, blue)  # the text matters


def test_prior_sample_is_reproducible(tiny_prior: ShapeWorldPrior):
    cams = torch.tensor([[0.0, 10.0], [90.0, 30.0]])
    a = tiny_prior.sample("a red torus", cams, seed=1)
    b = tiny_prior.sample("a red torus", cams, seed=1)
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1


def test_train_views_end_to_end(tmp_path, capsys, monkeypatch):
    import json

    from shared_core.cli import main
    from threed import prior as prior_mod

    # the full caption bank takes a while to encode: train on a small one
    monkeypatch.setattr(
        prior_mod, "all_captions", lambda: sorted({"a red torus", "a blue cube"} | _captions())
    )
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        "train: {steps: 2, batch_size: 2, log: {every: 1, progress: false}}\n"
        "diffusion: {schedule: cosine, prediction: x0}\n"
        "data: {size: 16, objects: 2, views_per_object: 2, supersample: 1}\n"
        "model: {hidden_size: 32, depth: 1, num_heads: 2, camera_dim: 8}\n"
    )
    assert main(["train", "views", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2


def _captions() -> set[str]:
    from threed.world import ShapeWorld

    return {c for _, _, _, c in ShapeWorld(1, seed=0).describe(range(2))}
