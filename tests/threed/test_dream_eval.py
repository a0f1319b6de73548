"""`extradim eval dream`'s scoring: mesh sampling, R-precision, the multi-view flag, a tiny full run."""

from __future__ import annotations

import json

import numpy as np
import torch
import trimesh

from shared_core.io import file_sha256
from shared_core.schedules import get_schedule
from threed.dream import DreamConfig
from threed.dream_eval import evaluate_dream, mesh_cloud, r_precision, summarise, view_consistency
from threed.pipeline import DEFAULT_BASE, DEFAULT_BOX, DEFAULT_UPSAMPLER
from threed.viewnet import ViewNet, ViewNetConfig, train_view_net
from threed.views import Camera, render_mesh
from threed.world import COLOURS, SHAPES, ShapeWorld, ground_truth_mesh, parse_caption


class FixedNet(torch.nn.Module):
    """Answers the given (shape, colour) per view."""

    def __init__(self, shapes: list[int], colour: int) -> None:
        super().__init__()
        self.shapes, self.colour = shapes, colour

    def forward(self, images):
        ls = torch.full((len(images), len(SHAPES)), -5.0)
        ls[torch.arange(len(images)), torch.tensor(self.shapes)] = 5.0
        lc = torch.full((len(images), len(COLOURS)), -5.0)
        lc[:, self.colour] = 5.0
        return ls, lc


def test_r_precision_and_view_consistency():
    imgs = torch.zeros(8, 3, 32, 32)
    torus, red = SHAPES.index("torus"), list(COLOURS).index("red")
    net = FixedNet([torus] * 8, red)
    assert r_precision(net, imgs, "torus", "red") and not r_precision(net, imgs, "torus", "blue")
    assert view_consistency(net, imgs) == (8, "torus")
    janus = FixedNet([torus] * 5 + [SHAPES.index("cube")] * 3, red)
    assert view_consistency(janus, imgs) == (5, "torus")


def test_mesh_cloud_is_normalised_and_coloured():
    box = trimesh.creation.box((2.0, 1.0, 4.0))
    box.apply_translation((3.0, 0.0, 0.0))
    box.visual.vertex_colors = np.array([40, 80, 240, 255], dtype=np.uint8)
    cloud = mesh_cloud(box, 512)
    assert cloud.shape == (512, 6)
    assert abs(float(cloud[:, :3].norm(dim=1).max()) - 1) < 1e-5
    torch.testing.assert_close(cloud[:, :3].amax(0) + cloud[:, :3].amin(0), torch.zeros(3), atol=0.02, rtol=0)
    torch.testing.assert_close(cloud[0, 3:], torch.tensor([40, 80, 240]) / 127.5 - 1)


def test_view_net_learns_a_little():
    net, stats = train_view_net(
        ViewNetConfig(width=8, objects=30, views_per_object=2, held_out_objects=10, steps=60)
    )
    assert isinstance(net, ViewNet) and stats["held_out_views"] == 20
    assert stats["held_out_colour_accuracy"] > 0.3  # colour is easy; shape needs the full recipe


class CaptionOracle:
    """x0 = the ground-truth render of the prompted object (one fixed item per caption)."""

    size, distance, fov, name = 16, 3.2, 45.0, "oracle"

    def __init__(self) -> None:
        self.schedule = get_schedule("cosine")

    def encode(self, prompt):
        colour, shape = parse_caption(prompt)
        _, _, params, _ = ShapeWorld(1, seed=9, classes=[shape]).describe([0])[0]
        return ground_truth_mesh(shape, colour, params)

    def latents(self, images):
        return images

    def denoiser(self, mesh, cameras, guidance):
        views = [
            render_mesh(mesh, Camera(a, e, self.distance, self.fov), self.size).image
            for a, e in cameras.tolist()
        ]
        target = torch.stack(views) * 2 - 1
        return lambda x, sigma: target.to(x)


def test_evaluate_dream_end_to_end(tmp_path):
    cfg = DreamConfig(
        steps=40,
        albedo_steps=10**6,
        init="blob",
        nerf={"grid_size": 20, "samples_per_ray": 24, "occupancy_size": 10},
    )
    net = FixedNet([SHAPES.index("sphere")] * 8, list(COLOURS).index("red"))
    out = tmp_path / "not" / "yet"  # created when the results are written
    report = evaluate_dream(CaptionOracle(), net, classes=["sphere"], seeds=[0], cfg=cfg, out_dir=out,
                            progress=False)  # fmt: skip
    (row,) = report["results"]
    assert row["prompt"] == "a red sphere" and row["steps"] == 40
    assert row["mesh_colour"] == "red" and row["watertight"]
    assert row["r_precision_hit"] and row["r_precision_truth_hit"] and not row["multi_view_flag"]
    s = report["summary"]
    assert s["r_precision_ratio"] == 1.0 and s["colour_accuracy"] == 1.0
    saved = json.loads((out / "eval.json").read_text())
    assert saved["summary"] == s and (out / "contact_sheet.png").is_file()
    assert report["init_points_sha256"] is None  # a blob start uses no points checkpoint


def test_summary_names_the_points_checkpoints_of_a_points_start():
    row = {
        "r_precision_hit": True, "r_precision_truth_hit": True, "chamfer_to_prompted": 0.01,
        "mesh_class": "cube", "shape": "cube", "mesh_colour": "red", "colour": "red", "watertight": True,
        "multi_view_flag": False, "seconds": 1.0,
    }  # fmt: skip
    report = summarise([row], "oracle", DreamConfig(init="points"))
    shipped = (("box", DEFAULT_BOX), ("base", DEFAULT_BASE), ("upsampler", DEFAULT_UPSAMPLER))
    assert report["init_points_sha256"] == {name: file_sha256(path) for name, path in shipped}
    assert summarise([row], "oracle", DreamConfig(init="blob"))["init_points_sha256"] is None
