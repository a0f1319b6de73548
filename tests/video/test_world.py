"""The Shapes world keeps its definition: determinism, geometry, colours, held-out split, captions."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch

from video.world import (
    COLOURS,
    MOTIONS,
    SHAPES,
    Attributes,
    ClipParams,
    ShapesWorld,
    all_combinations,
    canonical_caption,
    default_held_out,
    paraphrases,
    parse_caption,
    render_clip,
    render_clips,
)

_AREA = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}  # area / side^2


@pytest.fixture(scope="module")
def batch() -> tuple[list[Attributes], torch.Tensor, torch.Tensor]:
    """600 clips of all 126 combinations: attributes, (B, 6) params, (B, F, 3, 32, 32) uint8."""
    world = ShapesWorld(32, 16, seed=7, split="all")
    attrs, params, _ = world.describe(torch.arange(600))
    return attrs, params, render_clips(attrs, params, 32, 16)


def _coverage(attrs: list[Attributes], clips: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W) fraction of each pixel covered, read back from the pixels."""
    peak = torch.tensor([max(COLOURS[a.colour]) for a in attrs], dtype=torch.float32)
    return clips.float().amax(2) / peak[:, None, None, None]


# ----------------------------------------------------------------------------------------------
# Vocabulary and determinism
# ----------------------------------------------------------------------------------------------


def test_vocabulary_matches_the_definition() -> None:
    assert COLOURS == {
        "red": (240, 40, 40),
        "yellow": (240, 220, 40),
        "green": (40, 200, 40),
        "cyan": (40, 210, 220),
        "blue": (40, 80, 240),
        "magenta": (220, 40, 220),
        "white": (240, 240, 240),
    }
    assert SHAPES == ("circle", "square", "triangle")
    assert MOTIONS == ("left", "right", "up", "down", "grow", "shrink")
    combos = all_combinations()
    assert len(combos) == len(set(combos)) == 126
    assert [a.index for a in combos] == list(range(126))
    assert Attributes.from_index(5) == combos[5]
    with pytest.raises(ValueError, match="valid: circle, square, triangle"):
        Attributes("red", "hexagon", "left")


def test_same_seed_and_index_give_the_same_clips() -> None:
    a, b = ShapesWorld(32, 16, seed=3), ShapesWorld(32, 16, seed=3)
    x, y = a.sample(8, 5), b.sample(8, 5)
    assert torch.equal(x.clips, y.clips)
    assert x.captions == y.captions and x.attributes == y.attributes
    assert not torch.equal(x.clips, a.sample(8, 6).clips)
    assert not torch.equal(x.clips, ShapesWorld(32, 16, seed=4).sample(8, 5).clips)
    # Clip i depends only on (seed, i): batches of any size tile the same stream (exact resume/shard).
    big = a.sample(16, 1)
    assert torch.equal(big.clips[8:], a.sample(8, 3).clips)
    assert torch.equal(big.clips[:8], a.sample_ids(torch.arange(16, 24)).clips)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(a.sample(4, g1).clips, a.sample(4, g2).clips)


def test_output_format() -> None:
    for size in (32, 64):
        clips, captions, attrs = ShapesWorld(size, 16, seed=0).sample(4, 0)
        assert clips.shape == (4, 3, 16, size, size) and clips.dtype == torch.float32
        assert clips.is_contiguous()
        assert clips.min() >= -1 and clips.max() <= 1
        assert clips.amin((1, 2, 3, 4)).eq(-1).all()  # black background
        assert len(captions) == len(attrs) == 4


# ----------------------------------------------------------------------------------------------
# Geometry: size, motion, frame, one object, exact colours
# ----------------------------------------------------------------------------------------------


def test_sizes_and_the_object_stays_in_frame(batch) -> None:
    attrs, params, clips = batch
    x0, y0, x1, y1, s0, s1 = params.unbind(-1)
    assert s0.min() >= 0.25 and s1.min() >= 0.25 and s0.max() <= 0.45 and s1.max() <= 0.45
    # Motion is linear, so the box is inside the frame throughout iff it is at both ends.
    for x, y, s in ((x0, y0, s0), (x1, y1, s1)):
        assert (x - s / 2).min() >= 0 and (x + s / 2).max() <= 1
        assert (y - s / 2).min() >= 0 and (y + s / 2).max() <= 1
    # The pixels agree: the covered area is the shape's whole area in every frame (nothing cut off).
    t = torch.linspace(0, 1, 16)
    side = s0[:, None] + (s1 - s0)[:, None] * t  # (B, F)
    expected = torch.tensor([_AREA[a.shape] for a in attrs])[:, None] * side**2
    area = _coverage(attrs, clips).sum((2, 3)) / 32**2
    assert ((area - expected).abs() / expected).max() < 0.03


def test_motions_follow_the_definition(batch) -> None:
    attrs, params, clips = batch
    cov = _coverage(attrs, clips)
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    mass = cov.sum((2, 3))
    cx, cy = (cov * xs).sum((2, 3)) / mass / 32, (cov * ys).sum((2, 3)) / mass / 32  # (B, F)
    seen = set()
    for i, a in enumerate(attrs):
        x0, y0, x1, y1, s0, s1 = params[i].tolist()
        dx, dy, ratio = x1 - x0, y1 - y0, float(mass[i, -1] / mass[i, 0])
        if a.motion in ("left", "right", "up", "down"):
            along, across = (dx, dy) if a.motion in ("left", "right") else (dy, dx)
            sign = -1 if a.motion in ("left", "up") else 1
            assert sign * along >= 0.25 and across == 0 and s0 == s1
            measured = (
                float(cx[i, -1] - cx[i, 0]) if a.motion in ("left", "right") else float(cy[i, -1] - cy[i, 0])
            )
            assert sign * measured >= 0.25 - 0.01
            assert 0.97 < ratio < 1.03
            steps = torch.diff(cx[i] if a.motion in ("left", "right") else cy[i])
            assert (steps - steps.mean()).abs().max() < 0.01  # smooth: constant velocity
        else:
            assert dx == 0 and dy == 0
            assert ratio >= 1.4 if a.motion == "grow" else ratio <= 0.6  # area changes by >= 40%
            assert torch.diff(mass[i]).sign().eq(1 if a.motion == "grow" else -1).all()  # monotone
        seen.add(a.motion)
    assert seen == set(MOTIONS)


def test_exactly_one_object_with_exact_colours_on_black(batch) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    attrs, _, clips = batch
    colour = torch.tensor([COLOURS[a.colour] for a in attrs], dtype=torch.float32)  # (B, 3)
    cov = _coverage(attrs, clips)  # (B, F, H, W)
    # Every pixel is the palette colour times its coverage (up to uint8 rounding): one colour, on black.
    expected = (cov[:, :, None] * colour[:, None, :, None, None]).round()
    assert (clips.float() - expected).abs().max() <= 1
    full = cov >= 1
    assert full.flatten(2).any(2).all()  # every frame has interior pixels ...
    interior = clips.permute(0, 1, 3, 4, 2)[full]  # ... and they are the exact palette colour
    owner = torch.arange(len(attrs))[:, None, None, None].expand_as(full)[full]
    assert torch.equal(interior.float(), colour[owner])
    # 8-connected components of each frame (the structure never connects neighbouring frames).
    structure = torch.zeros(3, 3, 3, dtype=torch.bool)
    structure[1] = True
    labels, n = ndimage.label((cov > 0).flatten(0, 1).numpy(), structure=structure.numpy())
    frames = cov.shape[0] * cov.shape[1]
    assert n == frames  # one component per frame ...
    per_frame = torch.from_numpy(labels).flatten(1).amax(1)
    assert torch.equal(per_frame, torch.arange(1, frames + 1))  # ... and each frame has its own


def test_shapes_are_upright_and_filled_as_defined() -> None:
    params = ClipParams(0.5, 0.5, 0.5, 0.5, 0.4, 0.4)
    side = 0.4 * 64
    for shape, ratio in _AREA.items():
        clip = render_clip(Attributes("white", shape, "grow"), params, size=64, frames=2)
        cov = clip[0].float().amax(0) / 240  # (H, W)
        assert cov.sum().item() == pytest.approx(ratio * side**2, rel=0.01)
        rows = cov.sum(1)
        top, bottom = rows.nonzero()[0].item(), rows.nonzero()[-1].item()
        if shape == "triangle":  # apex up: narrow at the top, full width at the base
            assert rows[top + 1] < 0.2 * rows[bottom - 1]
        else:
            assert torch.allclose(rows, rows.flip(0), atol=1e-2)  # symmetric top-bottom (centred)


# ----------------------------------------------------------------------------------------------
# Held-out combinations
# ----------------------------------------------------------------------------------------------


def test_default_held_out_is_a_tenth_of_new_compositions() -> None:
    held = default_held_out()
    assert len(held) == len(set(held)) == 13  # 10.3% of 126
    train = [a for a in all_combinations() if a not in held]
    assert {a.colour for a in train} == set(COLOURS)
    assert {a.shape for a in train} == set(SHAPES)
    assert {a.motion for a in train} == set(MOTIONS)
    # Every pair of a held-out combination was seen in training: only the triple is new.
    for h in held:
        for keep in itertools.combinations(("colour", "shape", "motion"), 2):
            assert any(all(getattr(t, k) == getattr(h, k) for k in keep) for t in train)
    assert max(sum(h.colour == c for h in held) for c in COLOURS) <= 2


def test_training_never_samples_held_out_combinations() -> None:
    world = ShapesWorld(32, 16, seed=1)
    attrs, _, _ = world.describe(torch.arange(3000))
    assert not set(attrs) & set(default_held_out())
    assert set(attrs) == set(world.train_combos) and len(world.train_combos) == 113
    held = ShapesWorld(32, 16, seed=1, split="held_out")
    assert set(held.describe(torch.arange(300))[0]) == set(default_held_out())
    custom = ShapesWorld(held_out=[("red", "circle", "left")], split="held_out")
    assert custom.held_out == (Attributes("red", "circle", "left"),)
    assert len(ShapesWorld(held_out=()).train_combos) == 126
    with pytest.raises(ValueError, match="no combinations"):
        ShapesWorld(held_out=(), split="held_out")


def test_render_given_attributes() -> None:
    world = ShapesWorld(32, 16, seed=0)
    targets = [Attributes("red", "circle", "left"), ("blue", "triangle", "shrink")]
    clips, captions, attrs = world.render(targets, index=2)
    assert clips.shape == (2, 3, 16, 32, 32)
    assert captions == ["a red circle moving left", "a blue triangle shrinking"]
    assert attrs[1] == Attributes("blue", "triangle", "shrink")
    assert torch.equal(clips, world.render(targets, index=2).clips)


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


def test_canonical_captions_parse_back() -> None:
    assert canonical_caption(Attributes("red", "circle", "left")) == "a red circle moving left"
    assert canonical_caption(Attributes("white", "square", "grow")) == "a white square growing"
    for a in all_combinations():
        assert parse_caption(canonical_caption(a)) == a


def test_every_paraphrase_parses_back() -> None:
    # Seven combinations that together use every colour, shape and motion and all their synonyms.
    for i in range(7):
        a = Attributes(list(COLOURS)[i], SHAPES[i % 3], MOTIONS[i % 6])
        texts = paraphrases(a)
        assert len(texts) > 500
        assert all(parse_caption(t) == a for t in texts), [t for t in texts if parse_caption(t) != a][:5]


def test_issue_examples_and_free_text() -> None:
    assert parse_caption("a red ball sliding to the left") == Attributes("red", "circle", "left")
    assert parse_caption("small blue square drifting upwards") == Attributes("blue", "square", "up")
    assert parse_caption("A Bright-White TRIANGLE, getting smaller!") == Attributes(
        "white", "triangle", "shrink"
    )
    assert parse_caption("a pink disc that falls") == Attributes("magenta", "circle", "down")
    for text in ("a red blue circle moving left", "a red circle", "a circle moving left", "hello", ""):
        assert parse_caption(text) is None
    assert parse_caption("a red circle moving left and right") is None


def test_sampled_captions_are_varied_and_parse_to_their_attributes() -> None:
    world = ShapesWorld(32, 16, seed=2)
    attrs, _, captions = world.describe(torch.arange(2000))
    assert all(parse_caption(c) == a for c, a in zip(captions, attrs))
    canonical = sum(c == canonical_caption(a) for c, a in zip(captions, attrs)) / len(captions)
    assert 0.2 < canonical < 0.4  # 25% canonical, the rest paraphrases (some of which are canonical)
    assert len(set(captions)) > 1000
    plain = ShapesWorld(32, 16, seed=2, captions="canonical").describe(torch.arange(50))
    assert plain[2] == [canonical_caption(a) for a in plain[0]]


# ----------------------------------------------------------------------------------------------
# Speed (printed, never asserted)
# ----------------------------------------------------------------------------------------------


def test_generation_speed_is_reported() -> None:
    for size in (32, 64):
        world = ShapesWorld(size, 16, seed=0)
        world.sample(64, 0)
        t0 = time.perf_counter()
        for i in range(3):
            world.sample(64, i + 1)
        rate = 3 * 64 / (time.perf_counter() - t0)
        print(
            f"Shapes world {size}x{size}x16, batch 64: {rate:.0f} clips/s ({torch.get_num_threads()} threads)"
        )
