"""Regenerate docs/demo.gif: four prompts from the shipped video model at its defaults, seed 0.

    python docs/make_demo_gif.py [--out docs/demo.gif]

A 2x2 grid of 32x32 clips, each enlarged 4x (nearest neighbour), 4-pixel grey gutters.
"""

from __future__ import annotations

import argparse

import imageio.v3 as iio
import torch

from video.pipeline import VideoPipeline

PROMPTS = (
    "a red circle moving left",
    "a blue square moving up",
    "a yellow triangle growing",
    "a green ball sliding to the right",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/demo.gif")
    args = ap.parse_args()
    clips = VideoPipeline.load().generate(list(PROMPTS), seed=0)  # (4, 3, F, H, W) in [-1, 1]
    frames = ((clips.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    frames = frames.repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)  # 4x, nearest
    n, _, f, h, w = frames.shape
    gutter = 4
    grid = torch.full((f, 2 * h + gutter, 2 * w + gutter, 3), 48, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, 2)
        y, x = r * (h + gutter), c * (w + gutter)
        grid[:, y : y + h, x : x + w] = frames[i].permute(1, 2, 3, 0)
    iio.imwrite(args.out, grid.numpy(), duration=125, loop=0)
    print(f"wrote {args.out}: {f} frames of {grid.shape[2]}x{grid.shape[1]}")


if __name__ == "__main__":
    main()
