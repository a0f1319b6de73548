"""The CPU NeRF renderer: box intersection, occupancy skipping vs a dense reference, normals, grads."""

import math

import pytest
import torch

from threed.nerf import Background, GridField, NeRFConfig, OccupancyGrid, aabb_intersect, render_rays, shade
from threed.views import Camera, camera_rays


def _sphere_field(cfg: NeRFConfig, radius: float = 0.6, density: float = 40.0) -> GridField:
    """A field whose density is a solid ball (no blob) and whose albedo is red."""
    f = GridField(cfg)
    r = cfg.grid_size
    c = torch.linspace(-cfg.bound, cfg.bound, r)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")  # grid (D, H, W) = (z, y, x)
    inside = (x**2 + y**2 + z**2).sqrt() < radius
    with torch.no_grad():
        f.density_grid[0, 0] = torch.where(inside, torch.tensor(density), torch.tensor(-30.0))
        f.albedo_grid[0, 0] = 4.0
        f.albedo_grid[0, 1:] = -4.0
    return f


@pytest.fixture
def cfg():
    return NeRFConfig(grid_size=48, blob_density=0.0, samples_per_ray=64, occupancy_size=16)


def test_aabb_intersect():
    o = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    near, far, hit = aabb_intersect(o, d, 1.0)
    assert hit.tolist() == [True, False, True]
    torch.testing.assert_close(near[[0, 2]], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(far[[0, 2]], torch.tensor([4.0, 1.0]))


def test_occupancy_skipping_matches_a_dense_reference(cfg):
    field = _sphere_field(cfg)
    occ = OccupancyGrid(cfg)
    occ.update(field, torch.Generator().manual_seed(0))
    assert 0.05 < occ.fraction < 0.6  # the ball and its neighbours, not the whole box
    o, d = camera_rays(Camera(30.0, 20.0), 24)
    with torch.no_grad():
        fast = render_rays(field, o, d, occupancy=occ)
        same = render_rays(field, o, d)  # every sample evaluated
        ref = render_rays(field, o, d, samples=512)
    assert fast.samples_evaluated < 0.5 * same.samples_evaluated
    # skipping only drops samples of zero weight: the same image as evaluating them all
    torch.testing.assert_close(fast.rgb, same.rgb, atol=1e-4, rtol=0)
    # and close to a finely sampled reference (differences only at grazing edge pixels)
    assert (fast.rgb - ref.rgb).abs().mean() < 0.02
    assert (fast.opacity - ref.opacity).abs().mean() < 0.01
    # the ball is in the middle of the image, red, and empty at the corners
    img = fast.rgb.reshape(24, 24, 3)
    assert img[12, 12, 0] > 0.8 and img[12, 12, 1] < 0.1
    assert fast.opacity.reshape(24, 24)[0, 0] < 0.01
    # depth at the centre pixel: the camera distance minus the radius
    assert abs(float(fast.depth.reshape(24, 24)[11:13, 11:13].mean()) - (3.2 - 0.6)) < 0.1


def test_grid_axes_map_to_xyz(cfg):
    """grid_sample reads (x, y, z) from the (W, H, D) axes: a blob written at x = +0.8 is found there."""
    field = GridField(NeRFConfig(grid_size=48, blob_density=0.0))
    c = torch.linspace(-1.2, 1.2, 48)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    with torch.no_grad():
        field.density_grid[0, 0] = torch.where(((x - 0.8) ** 2 + y**2 + z**2) < 0.04, 40.0, -30.0)
    d = field.density(torch.tensor([[0.8, 0.0, 0.0], [0.0, 0.8, 0.0], [0.0, 0.0, 0.8]]))
    assert d[0] > 30 and d[1] < 1e-3 and d[2] < 1e-3


def test_normals_point_outward_and_shading(cfg):
    field = _sphere_field(cfg)
    p = torch.tensor([[0.6, 0.0, 0.0], [0.0, -0.6, 0.0], [0.0, 0.0, 0.6], [0.35, 0.35, 0.35]])
    n = field.normals(p)
    torch.testing.assert_close(n, p / p.norm(dim=-1, keepdim=True), atol=0.15, rtol=0)
    albedo = torch.tensor([[1.0, 0.5, 0.0]]).expand(4, 3)
    light = torch.tensor([1.0, 0.0, 0.0])
    lam = shade(albedo, n, light, "lambertian", 0.2)
    assert lam[0, 0] > 0.9 and abs(lam[1, 0] - 0.2) < 0.05  # lit face vs the ambient-only side
    tex = shade(albedo, n, light, "textureless", 0.2)
    torch.testing.assert_close(tex[:, 0], tex[:, 1])
    with pytest.raises(ValueError, match="shading"):
        shade(albedo, n, light, "bogus", 0.2)


def test_gradients_reach_the_grids_and_background():
    cfg = NeRFConfig(grid_size=16, samples_per_ray=32)  # with the blob
    field, bg = GridField(cfg), Background()
    o, d = camera_rays(Camera(0.0, 10.0), 8)
    out = render_rays(
        field,
        o,
        d,
        background=bg,
        stratified=True,
        generator=torch.Generator().manual_seed(0),
        shading="lambertian",
        light=torch.tensor([0.0, 0.0, 1.0]),
    )
    assert out.opacity.max() > 0.5  # the blob is visible from the start
    out.rgb.sum().backward()
    assert field.density_grid.grad.abs().sum() > 0
    assert field.albedo_grid.grad.abs().sum() > 0
    assert bg.net[2].bias.grad.abs().sum() > 0
    assert math.isfinite(float(out.rgb.detach().sum()))


def test_shading_needs_a_light(cfg):
    o, d = camera_rays(Camera(0.0, 0.0), 4)
    with pytest.raises(ValueError, match="light"):
        render_rays(GridField(cfg), o, d, shading="lambertian")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nerfacc's estimator needs CUDA")
def test_cuda_estimator_path_agrees_with_cpu(cfg):
    import nerfacc

    from threed.nerf import render_rays_cuda

    field = _sphere_field(cfg).cuda()
    est = nerfacc.OccGridEstimator([-cfg.bound] * 3 + [cfg.bound] * 3, resolution=32).cuda()
    step = 2 * math.sqrt(3) * cfg.bound / cfg.samples_per_ray
    for i in range(300):
        est.update_every_n_steps(i, lambda x: field.density(x) * step, occ_thre=0.01)
    o, d = camera_rays(Camera(30.0, 20.0), 24)
    with torch.no_grad():
        gpu = render_rays_cuda(field, o.cuda(), d.cuda(), est)
        cpu = render_rays(field.cpu(), o, d, samples=512)
    assert (gpu.rgb.cpu() - cpu.rgb).abs().mean() < 0.03
