"""The shipped point-cloud weights (checkpoints/threed/points_{base,upsampler}.*) load and follow
prompts: a regression test of the artefacts (the full measurement is ``extradim eval points``)."""

from __future__ import annotations

import pytest

from threed.evaluate import colour_of
from threed.pipeline import DEFAULT_BASE, DEFAULT_UPSAMPLER, PointsPipeline


@pytest.fixture(scope="module")
def pipe() -> PointsPipeline:
    for path in (DEFAULT_BASE, DEFAULT_UPSAMPLER):
        assert path.is_file(), f"shipped weights missing: {path}"
    return PointsPipeline.load()


def test_shipped_checkpoints_follow_colour(pipe: PointsPipeline) -> None:
    prompts = ["a red torus", "a blue cube", "a yellow cone"]
    clouds = pipe.generate(prompts, seed=0, num_points=1024)
    assert clouds.shape == (3, 1024, 6)
    assert clouds[..., :3].abs().max() <= 1.5 and clouds[..., :3].std() > 0.2  # a spread-out cloud
    colours = [colour_of(c) for c in clouds]
    assert colours == ["red", "blue", "yellow"], colours


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
