"""The hand-coded checker reads rendered clips (its accuracy is the evaluation's ceiling) and
flags clips without exactly one object."""

from __future__ import annotations

import pytest
import torch

from video.checker import CheckerConfig, attribute_accuracy, check_clips, label_components
from video.world import Attributes, ClipParams, ShapesWorld, all_combinations, render_clip, to_unit_range


def test_accuracy_on_generated_clips_is_the_ceiling() -> None:
    world = ShapesWorld(32, 16, seed=11, split="all")
    clips, _, attrs = world.sample(504, 0)
    acc = attribute_accuracy(check_clips(clips), attrs)
    print(f"checker on 504 generated 32x32 clips: {acc}")
    for key in ("colour", "shape", "motion", "single_object", "all"):
        assert acc[key] >= 0.99, (key, acc)


def test_every_combination_is_read_at_64px() -> None:
    world = ShapesWorld(64, 16, seed=5, split="all")
    batch = world.render(all_combinations(), index=1)
    result = check_clips(batch.clips)
    assert result.attributes == list(all_combinations())
    assert result.num_objects.eq(1).all()


def test_uint8_and_float_inputs_agree() -> None:
    world = ShapesWorld(32, 16, seed=0, split="all")
    clips, _, _ = world.sample(16, 0)
    as_uint8 = ((clips + 1) * 127.5).round().to(torch.uint8)
    a, b = check_clips(clips), check_clips(as_uint8)
    assert a.attributes == b.attributes
    assert torch.allclose(a.fill, b.fill) and torch.allclose(a.shift, b.shift, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 3, F, H, W\)"):
        check_clips(clips[0])
    with pytest.raises(ValueError, match="non-empty"):
        check_clips(clips[:0])


def test_blank_clips_are_rejected() -> None:
    blank = -torch.ones(2, 3, 16, 32, 32)
    result = check_clips(blank)
    assert result.colour == [None, None] and result.shape == [None, None] and result.motion == [None, None]
    assert result.num_objects.eq(0).all() and not result.single_object.any()
    assert result.attributes == [None, None]
    acc = attribute_accuracy(result, [Attributes("red", "circle", "left")] * 2)
    assert acc == {"colour": 0.0, "shape": 0.0, "motion": 0.0, "single_object": 0.0, "all": 0.0}


def test_two_object_clips_are_rejected() -> None:
    left = render_clip(Attributes("red", "circle", "up"), ClipParams(0.2, 0.7, 0.2, 0.3, 0.3, 0.3))
    right = render_clip(Attributes("blue", "square", "down"), ClipParams(0.75, 0.3, 0.75, 0.7, 0.3, 0.3))
    both = to_unit_range(torch.maximum(left, right)[None])  # (1, 3, F, H, W)
    result = check_clips(both)
    assert result.num_objects.eq(2).all()
    assert not result.single_object.any() and result.attributes == [None]
    one = check_clips(to_unit_range(left[None]))
    assert one.attributes == [Attributes("red", "circle", "up")]


def test_specks_are_ignored_but_objects_are_counted() -> None:
    clip = render_clip(Attributes("green", "triangle", "grow"), ClipParams(0.5, 0.5, 0.5, 0.5, 0.3, 0.45))
    clip = clip.clone()
    clip[:, :, 1, 1] = 200  # a one-pixel speck in every frame, far from the object
    result = check_clips(to_unit_range(clip[None]))
    assert result.attributes == [Attributes("green", "triangle", "grow")]
    strict = check_clips(to_unit_range(clip[None]), CheckerConfig(min_object_frac=0.0))
    assert strict.num_objects.eq(2).all() and not strict.single_object.any()
    speck_only = -torch.ones(1, 3, 16, 32, 32)
    speck_only[..., 5, 5] = 1
    alone = check_clips(speck_only)
    assert alone.num_objects.eq(0).all() and alone.colour == [None] and alone.attributes == [None]


def test_a_static_object_has_no_motion() -> None:
    still = render_clip(Attributes("white", "square", "left"), ClipParams(0.5, 0.5, 0.5, 0.5, 0.3, 0.3))
    result = check_clips(to_unit_range(still[None]))
    assert result.colour == ["white"] and result.shape == ["square"] and result.motion == [None]
    assert result.attributes == [None]


def test_torch_components_match_scipy() -> None:
    pytest.importorskip("scipy")
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(6, 20, 24, generator=g) > 0.55
    mask[0] = True  # a frame that is all foreground
    mask[1] = False  # and one that is all background
    a, b = label_components(mask, "scipy"), label_components(mask, "torch")
    assert a.max() == b.max()
    assert torch.equal(a == 0, b == 0)
    # The same partition: each scipy label maps to exactly one torch label and back.
    pairs = torch.unique(torch.stack([a[mask], b[mask]]), dim=1)
    assert pairs.shape[1] == int(a.max())
    world = ShapesWorld(32, 16, seed=3, split="all")
    clips = world.sample(8, 0).clips
    assert check_clips(clips, backend="torch").attributes == check_clips(clips, backend="scipy").attributes


def test_accuracy_counts_each_attribute() -> None:
    world = ShapesWorld(32, 16, seed=0, split="all")
    batch = world.render([("red", "circle", "left"), ("blue", "square", "up")], index=0)
    result = check_clips(batch.clips)
    targets = [Attributes("red", "circle", "right"), Attributes("cyan", "square", "up")]
    acc = attribute_accuracy(result, targets)
    assert acc == {"colour": 0.5, "shape": 1.0, "motion": 0.5, "single_object": 1.0, "all": 0.0}
    with pytest.raises(ValueError, match="targets"):
        attribute_accuracy(result, targets[:1])


def test_chunking_does_not_change_results() -> None:
    clips = ShapesWorld(32, 16, seed=9, split="all").sample(10, 0).clips
    a, b = check_clips(clips, chunk=3), check_clips(clips)
    assert a.attributes == b.attributes and torch.equal(a.num_objects, b.num_objects)
    assert torch.allclose(a.fill, b.fill)
