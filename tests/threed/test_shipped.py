"""The shipped point-cloud weights (checkpoints/threed/points_{box,base,upsampler}.*) load and follow
prompts: a regression test of the artefacts (the full measurement is ``extradim eval points``)."""

from __future__ import annotations

import pytest

from threed.evaluate import colour_of
from threed.pipeline import DEFAULT_BASE, DEFAULT_BOX, DEFAULT_UPSAMPLER, PointsPipeline


@pytest.fixture(scope="module")
def pipe() -> PointsPipeline:
    for path in (DEFAULT_BOX, DEFAULT_BASE, DEFAULT_UPSAMPLER):
        assert path.is_file(), f"shipped weights missing: {path}"
    return PointsPipeline.load()


def test_shipped_checkpoints_follow_colour(pipe: PointsPipeline) -> None:
    prompts = ["a red torus", "a blue cube", "a yellow cone"]
    clouds = pipe.generate(prompts, seed=0, num_points=1024)
    assert clouds.shape == (3, 1024, 6)
    assert clouds[..., :3].abs().max() <= 1.5 and clouds[..., :3].std() > 0.2  # a spread-out cloud
    colours = [colour_of(c) for c in clouds]
    assert colours == ["red", "blue", "yellow"], colours


def test_shipped_box_stage_draws_the_worlds_extents(pipe: PointsPipeline) -> None:
    """The box stage ships with the base and draws boxes of the prompted shape: a sphere's 3-97%
    quantile box is ~1.87 wide on every axis (real: 1.87 +- 0.02), a torus's flat (z ~0.46, xy ~1.85)."""
    assert pipe.box is not None and pipe.settings()["box_quantile"] == 0.03
    emb = pipe.text.encode(["a white sphere"] * 8 + ["a blue torus"] * 8, pad_to=16)
    boxes = pipe.boxes(emb.pooled, list(range(16)), seed=0)
    extent = boxes[:, 3:] - boxes[:, :3]
    assert ((extent[:8] > 1.75) & (extent[:8] < 1.95)).all(), extent[:8]
    assert ((extent[8:, :2] > 1.7) & (extent[8:, :2] < 1.95)).all() and (extent[8:, 2] < 0.7).all(), extent[
        8:
    ]


def test_shipped_base_needs_its_box_stage(pipe: PointsPipeline) -> None:
    """The shipped base is conditioned on the box: naming it by path still takes the shipped box,
    and asking for no box is a one-line error."""
    from shared_core.errors import ExtradimError

    assert pipe.base.box_condition
    assert PointsPipeline.load(DEFAULT_BASE).box_checkpoint == pipe.box_checkpoint
    with pytest.raises(ExtradimError, match="needs a box stage"):
        PointsPipeline.load(box=False)


def test_shipped_view_prior_and_classifier_agree() -> None:
    """The shipped 2-D prior draws views the shipped view classifier reads as the prompted colour and
    shape (both nets were trained apart: this checks the prior and the judge of ``eval dream``)."""
    import torch

    from threed.prior import DEFAULT_VIEWS, ShapeWorldPrior
    from threed.viewnet import DEFAULT_VIEWNET, load_view_net

    assert DEFAULT_VIEWS.is_file() and DEFAULT_VIEWNET.is_file()
    prior, net = ShapeWorldPrior.load(), load_view_net()
    cams = torch.tensor([[0.0, 20.0], [120.0, 30.0], [240.0, 10.0]])
    hits = 0
    for prompt, shape, colour in (("a red torus", 4, 0), ("a blue cube", 1, 4)):
        images = prior.sample(prompt, cams, seed=0, steps=10)
        ls, lc = net(images)
        hits += int(lc.softmax(-1).mean(0).argmax() == colour) + int(ls.softmax(-1).mean(0).argmax() == shape)
    assert hits >= 3, hits


def test_shipped_view_prior_listens_to_the_camera() -> None:
    """A dumbbell seen end-on is a disc, from the side a bar: the shipped prior's x0 prediction for
    the same noisy image must change with the azimuth (the first shipped prior's changed by ~1e-5,
    and score distillation then made a surface of revolution of every shape)."""
    import math

    import torch

    from threed.prior import ShapeWorldPrior
    from threed.views import Camera, render_mesh
    from threed.world import ShapeWorld, ground_truth_mesh

    prior = ShapeWorldPrior.load()
    _, _, params, _ = ShapeWorld(1, seed=5, classes=["dumbbell"], colours=["red"]).describe([0])[0]
    cam = Camera(90.0 + math.degrees(params.yaw), 15.0, prior.distance, prior.fov)
    side = render_mesh(ground_truth_mesh("dumbbell", "red", params), cam, prior.size).image * 2 - 1
    sigma = prior.schedule.sigma(torch.full((4,), 0.9 * (prior.schedule.num_steps - 1))).float()
    x = side[None] + sigma[:, None, None, None] * torch.randn(
        (4, *side.shape), generator=torch.Generator().manual_seed(0)
    )
    cond = prior.encode("a red dumbbell")
    with torch.no_grad():
        end_on, from_side = (
            prior.denoiser(cond, torch.tensor([[az, 15.0]] * 4), 1.0)(x, sigma) for az in (0.0, 90.0)
        )
    assert float((end_on - from_side).pow(2).mean()) > 1e-3
