"""The shape world: determinism, the geometric definition held by every item, captions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from threed.world import (
    CANONICAL_DIMS,
    COLOURS,
    SHAPES,
    ShapeWorld,
    canonical_caption,
    ground_truth_mesh,
    paraphrases,
    parse_caption,
)

# Tessellation tolerance of the ground-truth meshes (64 sections, icosphere level 4), normalised.
TESS = 3e-3


def _batch(shape: str, n: int = 1024, items: int = 2, seed: int = 3):
    return ShapeWorld(num_points=n, seed=seed, classes=[shape]).sample(items, 0)


def test_item_is_a_pure_function_of_seed_and_id():
    w = ShapeWorld(num_points=64, seed=7)
    a, b = w.sample_ids([5, 9]), w.sample_ids([9, 5, 5])
    assert torch.equal(a.points[0], b.points[1]) and torch.equal(a.points[0], b.points[2])
    assert torch.equal(a.points[1], b.points[0]) and a.captions[0] == b.captions[1]
    # batch index i is items i * B ... i * B + B - 1
    assert torch.equal(w.sample(4, 2).points, w.sample_ids(range(8, 12)).points)
    assert not torch.equal(ShapeWorld(num_points=64, seed=8).sample_ids([5]).points[0], a.points[0])
    # the caption mode does not change the geometry
    canon = ShapeWorld(num_points=64, seed=7, captions="canonical").sample_ids([5, 9])
    assert torch.equal(canon.points, a.points)
    assert canon.captions == [canonical_caption(c, s) for c, s in map(parse_caption, a.captions)]


def test_batch_layout_labels_and_colours():
    b = ShapeWorld(num_points=128, seed=0).sample(32, 0)
    assert b.points.shape == (32, 128, 6) and b.points.dtype == torch.float32
    palette = torch.tensor(list(COLOURS.values()), dtype=torch.float32) / 127.5 - 1
    for k in range(32):
        colour, shape = parse_caption(b.captions[k])
        assert SHAPES[b.labels[k]] == shape and list(COLOURS)[b.colours[k]] == colour
        assert torch.allclose(b.points[k, :, 3:], palette[b.colours[k]].expand(128, 3))
    assert len(set(b.labels.tolist())) >= 6  # classes are mixed


@pytest.mark.parametrize("shape", SHAPES)
def test_points_sample_the_normalised_solid(shape):
    batch = _batch(shape)
    for points, p in zip(batch.points.double().numpy(), batch.params):
        base = np.asarray(CANONICAL_DIMS[shape])
        assert np.all(np.abs(np.asarray(p.dims) / base - 1) <= 0.2 + 1e-12)
        mesh = ground_truth_mesh(shape, "red", p)
        assert mesh.is_watertight and mesh.body_count == 1
        # exact normalisation: bounding-box centre 0, farthest point at radius 1
        assert np.abs(mesh.bounds.mean(0)).max() < TESS
        assert abs(np.linalg.norm(mesh.vertices, axis=1).max() - 1) < TESS
        xyz = points[:, :3]
        assert np.linalg.norm(xyz, axis=1).max() <= 1 + 1e-5
        # every point on the outer surface: none left inside another part of a multi-part shape
        _, dist, _ = trimesh.proximity.closest_point(mesh, xyz[:300])
        assert dist.max() < TESS


@pytest.mark.parametrize("shape", ["cylinder", "mug", "table"])
def test_sampling_is_area_uniform(shape):
    """Points fall in each half-space as often as area samples of the true surface do."""
    batch = _batch(shape, n=4096, items=1)
    xyz = batch.points[0, :, :3].double().numpy()
    ref, _ = trimesh.sample.sample_surface(ground_truth_mesh(shape, "red", batch.params[0]), 20000, seed=0)
    for axis in range(3):
        for cut in (-0.3, 0.0, 0.3):
            assert abs((xyz[:, axis] > cut).mean() - (ref[:, axis] > cut).mean()) < 0.04


def test_class_proportions_held_by_every_item():
    """The z-extent of every cloud is the height its dimensions define (times the scale)."""

    height = {
        "sphere": lambda d: 2 * d[0], "cube": lambda d: d[2], "cylinder": lambda d: d[1],
        "cone": lambda d: d[1], "torus": lambda d: 2 * d[1], "capsule": lambda d: d[1],
        "mug": lambda d: d[1], "dumbbell": lambda d: 2 * d[0],
        "snowman": lambda d: d[0] + 0.8 * (d[0] + 2 * d[1] + d[2]) + d[2], "table": lambda d: d[2] + d[3],
    }  # fmt: skip

    for shape in SHAPES:
        batch = _batch(shape, n=2048, items=3, seed=11)
        for points, p in zip(batch.points, batch.params):
            extent = float(points[:, 2].max() - points[:, 2].min())
            expected = p.scale * height[shape](p.dims)
            assert 0.93 * expected <= extent <= expected + 1e-5, shape


def test_world_options_validated():
    with pytest.raises(ValueError, match="valid: sphere"):
        ShapeWorld(classes=["teapot"])
    with pytest.raises(ValueError, match="colour"):
        ShapeWorld(colours=["beige"])
    b = ShapeWorld(num_points=32, classes=["torus", "mug"], colours=["cyan"]).sample(16, 0)
    assert {SHAPES[i] for i in b.labels.tolist()} == {"torus", "mug"}
    assert set(b.colours.tolist()) == {list(COLOURS).index("cyan")}


def test_jitter_bounds_the_dimensions():
    """Dimensions lie within +-jitter of the canonical ones; jitter 0 gives the canonical shape,
    and the default is the world's definition (+-20%)."""
    for jitter in (0.0, 0.05, 0.2):
        w = ShapeWorld(num_points=8, seed=5, jitter=jitter)
        for shape, _, p, _ in w.describe(range(40)):
            ratio = np.asarray(p.dims) / np.asarray(CANONICAL_DIMS[shape])
            assert np.all(np.abs(ratio - 1) <= jitter + 1e-9), (shape, ratio)
    items = ShapeWorld(seed=5).describe(range(40))
    spread = [np.asarray(p.dims) / np.asarray(CANONICAL_DIMS[s]) for s, _, p, _ in items]
    assert np.abs(np.concatenate(spread) - 1).max() > 0.15
    with pytest.raises(ValueError, match="jitter"):
        ShapeWorld(jitter=1.0)


def test_captions_round_trip():
    for colour in COLOURS:
        for shape in SHAPES:
            texts = paraphrases(colour, shape)
            assert canonical_caption(colour, shape) in texts
            assert all(parse_caption(t) == (colour, shape) for t in texts)
    assert parse_caption("a crimson ball") == ("red", "sphere")
    assert parse_caption("one blue box") == ("blue", "cube")
    assert parse_caption("a green donut") == ("green", "torus")
    assert parse_caption("A coffee mug in magenta!") == ("magenta", "mug")
    assert parse_caption("a snow-white snow man") == ("white", "snowman")
    for bad in ("a red blue cube", "a red thing", "a cube and a cone in red", ""):
        assert parse_caption(bad) is None
