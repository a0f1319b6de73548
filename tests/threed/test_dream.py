"""Score distillation end to end with an oracle prior, and the mesh export's threshold rule."""

import numpy as np
import pytest
import torch
import trimesh

from shared_core.schedules import get_schedule
from threed.dream import DreamConfig, density_volume, dream, extract_mesh, surface_threshold
from threed.nerf import Background, GridField, NeRFConfig, render_rays
from threed.views import Camera, camera_rays, render_mesh


class OraclePrior:
    """A perfect 'prior' of one object: x0 is the ground-truth render at the asked camera."""

    size, distance, fov, name = 16, 3.2, 45.0, "oracle"

    def __init__(self, mesh: trimesh.Trimesh) -> None:
        self.mesh, self.schedule = mesh, get_schedule("cosine")
        self.calls = 0

    def encode(self, prompt: str) -> str:
        return prompt

    def latents(self, images):
        return images

    def denoiser(self, cond, cameras, guidance):
        self.calls += 1
        views = [
            render_mesh(self.mesh, Camera(a, e, self.distance, self.fov), self.size).image
            for a, e in cameras.tolist()
        ]
        target = torch.stack(views) * 2 - 1
        return lambda x, sigma: target.to(x)


class RecordingPrior(OraclePrior):
    """The oracle, keeping the last batch of renders it was given."""

    def latents(self, images):
        self.seen = images.detach().clone()
        return images


@pytest.fixture(scope="module")
def red_ball():
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.7)
    mesh.visual.vertex_colors = np.array([240, 40, 40, 255], dtype=np.uint8)
    return mesh


@pytest.fixture(scope="module")
def result(red_ball):
    cfg = DreamConfig(
        steps=150,
        albedo_steps=10**6,
        init="blob",
        nerf=dict(grid_size=24, samples_per_ray=32, occupancy_size=12),
    )
    return dream(OraclePrior(red_ball), "a red ball", cfg, seed=0, progress=False)


def test_dream_with_an_oracle_prior_recovers_the_object(result, red_ball):
    assert result.steps == 150 and len(result.history) == 150
    assert result.history[-1]["sds"] < 0.2 * result.history[5]["sds"]
    mesh = extract_mesh(result.field, resolution=48)
    assert mesh.is_watertight
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(radius) - 0.7) < 0.15  # the ball, not the initial blob or a shell of fog
    colour = mesh.visual.vertex_colors[:, :3].mean(0)
    assert colour[0] > 180 and colour[1] < 90 and colour[2] < 90
    assert set(result.timings) == {"render_s", "prior_s", "backward_s", "total_s"}


def test_dream_is_reproducible_and_respects_the_time_budget(red_ball):
    cfg = DreamConfig(
        steps=3, albedo_steps=0, init="blob", nerf=dict(grid_size=12, samples_per_ray=16, occupancy_size=6)
    )
    a = dream(OraclePrior(red_ball), "x", cfg, seed=3, progress=False)
    b = dream(OraclePrior(red_ball), "x", cfg, seed=3, progress=False)
    assert torch.equal(a.field.density_grid, b.field.density_grid)
    tiny = DreamConfig(steps=1000, max_minutes=1e-9, init="blob", nerf=cfg.nerf)
    assert dream(OraclePrior(red_ball), "x", tiny, seed=0, progress=False).steps == 0


TINY_NERF = dict(grid_size=12, samples_per_ray=16, occupancy_size=6)


def _recorded(mesh, seed: int, steps: int, **overrides):
    """A short albedo-only run on a tiny grid: its result and the renders of its last step."""
    prior = RecordingPrior(mesh)
    cfg = DreamConfig(steps=steps, albedo_steps=10**6, init="blob", nerf=TINY_NERF, **overrides)
    return dream(prior, "x", cfg, seed=seed, progress=False), prior.seen


def test_supersampled_renders_reach_the_prior_at_its_size(red_ball):
    got = {ss: _recorded(red_ball, 1, 2, supersample=ss)[1] for ss in (1, 3)}
    assert got[1].shape == got[3].shape == (2, 3, 16, 16)
    # the box filter averages sub-pixels: the same object, softer edges, not a different picture
    assert not torch.equal(got[1], got[3])
    assert (got[1] - got[3]).abs().mean() < 0.1
    with pytest.raises(ValueError):
        DreamConfig(supersample=0)


def test_random_backgrounds_replace_the_learned_one(red_ball):
    (learned, seen0), (random, seen1) = (_recorded(red_ball, 2, 3, random_background=p) for p in (0.0, 1.0))
    torch.manual_seed(2)  # how dream() draws its initial field and background MLP for seed 2
    GridField(NeRFConfig(**TINY_NERF))
    init = Background().state_dict()
    # with p = 1 the learned background is never rendered, so it never moves; with p = 0 it trains
    assert all(torch.equal(v, random.background.state_dict()[k]) for k, v in init.items())
    assert not all(torch.equal(v, learned.background.state_dict()[k]) for k, v in init.items())
    corner0, corner1 = seen0[:, :, 0, 0], seen1[:, :, 0, 0]  # empty pixels: the background
    assert not torch.allclose(corner0, corner1)
    assert (corner1[0] - corner1[1]).abs().max() > 0.1  # a colour per view
    with pytest.raises(ValueError, match="probability"):
        DreamConfig(random_background=1.5)


def test_surface_threshold_follows_the_field_scale():
    cfg = NeRFConfig(grid_size=32, blob_density=0.0)
    c = torch.linspace(-cfg.bound, cfg.bound, 32)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    r = (x**2 + y**2 + z**2).sqrt()
    levels = []
    for scale in (1.0, 4.0):
        f = GridField(cfg)
        with torch.no_grad():  # density rising inwards through r = 0.6, steeper with the scale
            f.density_grid[0, 0] = cfg.density_shift + scale * 10 * (0.6 - r)
        levels.append(surface_threshold(f))
        mesh = extract_mesh(f, resolution=40)
        assert mesh.is_watertight
        med = np.median(np.linalg.norm(mesh.vertices, axis=1))
        assert 0.45 < med < 0.75, med
    assert levels[1] > 1.3 * levels[0]  # a denser field gets a higher level
    # slack: the lowest level within `slack` of the best IoU, so never above the best level;
    # a slack of 1 admits every candidate, down to the lowest (1/1000 of the peak along the rays)
    vol = density_volume(f)
    assert surface_threshold(f, vol, slack=0.0) == levels[1]
    assert surface_threshold(f, vol, slack=0.05) <= levels[1]
    assert surface_threshold(f, vol, slack=1.0) < 0.1 * levels[1]


def test_empty_field_cannot_be_meshed():
    f = GridField(NeRFConfig(grid_size=8, blob_density=0.0, density_shift=30.0))
    with pytest.raises(ValueError, match="empty"):
        extract_mesh(f, resolution=16)


def test_config_checks():
    with pytest.raises(ValueError):
        DreamConfig(steps=0)
    with pytest.raises(ValueError):
        DreamConfig(max_minutes=0)
    with pytest.raises(ValueError):
        DreamConfig(shading_probs=(0.5, 0.5, 0.5))
    for bad in (
        {"t_range": (0.5, 0.2)},
        {"t_final": (0.0, 1.5)},
        {"elevation": (10, -10)},
        {"weighting": "x"},
        {"entropy_start": 1.0},
        {"lambda_entropy": -1.0},
        {"init": "mesh"},
    ):
        with pytest.raises(ValueError):
            DreamConfig(**bad)
    assert isinstance(DreamConfig(nerf={"grid_size": 16}).nerf, NeRFConfig)


def _ball_field(density_inside: float, radius: float = 0.6, grid: int = 32, noise: float = 0.0) -> GridField:
    """A field whose density is ``density_inside`` within ``radius`` (optionally speckled: each
    voxel dropped with probability ``noise``) and ~0 outside."""
    cfg = NeRFConfig(grid_size=grid, blob_density=0.0)
    c = torch.linspace(-cfg.bound, cfg.bound, grid)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    inside = ((x**2 + y**2 + z**2).sqrt() < radius).float()
    if noise:
        inside = inside * (torch.rand(inside.shape, generator=torch.Generator().manual_seed(0)) > noise)
    f = GridField(cfg)
    raw = torch.log(torch.expm1(torch.tensor(density_inside)))  # softplus^-1
    with torch.no_grad():
        f.density_grid[0, 0] = torch.where(inside > 0, raw + cfg.density_shift, torch.tensor(-20.0))
    return f


def test_a_translucent_field_is_meshed_at_its_outline():
    # opacity through the centre is 1 - exp(-0.3 * 1.2) ~ 0.3: below 0.5 on every ray
    f = _ball_field(0.3)
    o, d = camera_rays(Camera(0.0, 20.0), 32)
    with torch.no_grad():
        assert float(render_rays(f, o, d, samples=64).opacity.max()) < 0.5
    mesh = extract_mesh(f, resolution=48)
    assert mesh.is_watertight
    assert abs(np.median(np.linalg.norm(mesh.vertices, axis=1)) - 0.6) < 0.1


def test_smoothing_joins_a_speckled_field_into_one_body():
    f = _ball_field(5.0, grid=64, noise=0.3)  # 30% of the voxels inside the ball knocked out
    raw = extract_mesh(f, resolution=64, smooth=0.0)
    smooth = extract_mesh(f, resolution=64)
    assert raw.metadata["components"] > 10  # unsmoothed: speckle, of which only the largest is kept
    assert smooth.metadata["components"] <= 2 and smooth.is_watertight
    assert abs(np.median(np.linalg.norm(smooth.vertices, axis=1)) - 0.6) < 0.1


def _coloured_sphere_cloud(n: int = 2000, radius: float = 0.7) -> torch.Tensor:
    """(n, 6): points on a sphere, red on the +x half and blue on the other (rgb in [-1, 1])."""
    xyz = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    xyz = radius * xyz / xyz.norm(dim=1, keepdim=True)
    red, blue = torch.tensor([0.9, -0.7, -0.7]), torch.tensor([-0.7, -0.7, 0.9])
    return torch.cat([xyz, torch.where(xyz[:, :1] > 0, red, blue)], dim=1)


def test_a_field_started_from_a_cloud_is_a_shell_of_its_points():
    from threed.dream import field_from_cloud

    cfg = NeRFConfig(grid_size=32)
    cloud = _coloured_sphere_cloud()
    field = field_from_cloud(cloud, cfg, shell=0.1)
    assert field.cfg == cfg  # the blob stays in the config (a saved field loads as any other) ...
    with torch.no_grad():
        on = field.density(cloud[:, :3] * 1.02).median()
        centre = field.density(torch.zeros(1, 3))[0]  # ... and is cancelled by the grid
        far = field.density(torch.tensor([[1.1, 1.1, 1.1], [0.0, 0.0, -1.1]])).max()
        assert on > 5 and centre < 0.1 and far < 0.1
        albedo = field.albedo(torch.tensor([[0.7, 0.0, 0.0], [-0.7, 0.0, 0.0]]))
    assert albedo[0, 0] > 0.8 and albedo[0, 2] < 0.3 and albedo[1, 2] > 0.8 and albedo[1, 0] < 0.3
    mesh = extract_mesh(field, resolution=48, smooth=0.0)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(radius) - 0.75) < 0.1 and mesh.is_watertight


def test_dream_can_start_from_a_cloud(red_ball):
    """``init="points"``: the field starts as the cloud's shell (here given; by default the shipped
    points pipeline's cloud for the prompt), so a run of one step already holds the object."""
    cfg = DreamConfig(steps=1, albedo_steps=10**6, init="points", nerf=dict(grid_size=24, samples_per_ray=32))
    cloud = _coloured_sphere_cloud()
    started = dream(OraclePrior(red_ball), "x", cfg, seed=0, progress=False, init_cloud=cloud)
    blob = dream(
        OraclePrior(red_ball), "x", DreamConfig(steps=1, init="blob", nerf=cfg.nerf), seed=0, progress=False
    )
    with torch.no_grad():
        on = cloud[:, :3] * 1.02
        assert started.field.density(on).median() > 5 > blob.field.density(on).median()
