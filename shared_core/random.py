"""Reproducible noise: every random draw takes an explicit generator and is made on that
generator's device (the CPU by default), then moved, so one seed gives one sample on any device."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["make_generator", "rand", "randn", "randn_like"]


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise drawn on the generator's device (CPU by default), then moved."""
    out = torch.randn(tuple(shape), generator=generator, device=_gen_device(generator), dtype=dtype)
    return out.to(device) if device is not None else out


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    return randn(x.shape, generator, x.device, x.dtype)


def rand(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    out = torch.rand(tuple(shape), generator=generator, device=_gen_device(generator), dtype=dtype)
    return out.to(device) if device is not None else out
