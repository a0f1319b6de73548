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
    assert sum(c == want for c, want in zip(colours, ["red", "blue", "yellow"])) >= 2, colours
