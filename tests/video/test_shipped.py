"""The shipped text-to-clip weights (checkpoints/video/shapes.*) load and follow prompts.

A regression test of the artefact itself: four prompts at the default settings, read by the
hand-coded checker. (The full measurement is ``extradim eval video``; see the model card.)"""

from __future__ import annotations

import pytest

from video.checker import check_clips
from video.pipeline import DEFAULT_CHECKPOINT, VideoPipeline


@pytest.fixture(scope="module")
def pipe() -> VideoPipeline:
    assert DEFAULT_CHECKPOINT.is_file(), f"shipped weights missing: {DEFAULT_CHECKPOINT}"
    return VideoPipeline.load()


def test_shipped_checkpoint_follows_colour_and_is_deterministic(pipe: VideoPipeline) -> None:
    prompts = ["a red circle moving left", "a blue square moving up", "a yellow triangle growing",
               "a green circle moving right"]  # fmt: skip
    clips = pipe.generate(prompts, seed=0)
    assert clips.shape == (4, 3, pipe.frames, pipe.size, pipe.size)
    colours = check_clips(clips).colour
    assert sum(c == want for c, want in zip(colours, ["red", "blue", "yellow", "green"])) >= 3, colours
    again = pipe.generate(prompts[:1], seed=0)
    assert (again - clips[:1]).abs().max() < 1e-4
