"""Distributed training and generation: process-group setup from torchrun's environment, exact
deterministic sharding of procedural datasets, and in-order gathering of sharded outputs.

Exactness comes from making everything a pure function of global positions, never of a rank:
the data of a step is the list of global sample positions ``global_batch_indices(step)``, each rank
takes a contiguous slice of it, and every random draw of a sample (augmentation, condition dropout,
timestep, noise) comes from a generator seeded by ``derive_seed(seed, step, position)``. So one
process with a global batch G and W processes with G / W each see the same samples with the same
noise, and a run resumed at any step continues the same stream.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from shared_core.errors import ExtradimError
from shared_core.random import make_generator

__all__ = [
    "DistInfo",
    "ShardedBatchSampler",
    "all_gather_cat",
    "barrier",
    "derive_seed",
    "gather_in_order",
    "init_distributed",
    "is_main",
    "shard_indices",
    "shutdown_distributed",
    "split_evenly",
]

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    # SplitMix64 finaliser (Steele et al. 2014): a cheap bijective mixer, so nearby keys (step,
    # step + 1) give unrelated seeds.
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure function of the integer keys, e.g. (seed, step, position)."""
    h = 0x243F6A8885A308D3
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h >> 1


# ----------------------------------------------------------------------------------------------
# Process group
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ExtradimError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(backend: str = "auto", timeout_s: float = 600.0) -> DistInfo:
    """Join the process group that torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK.

    Without those variables (a plain ``python`` run) this is a no-op returning a world of one.

    Args:
        backend: "gloo", "nccl", or "auto" (nccl when CUDA is available, else gloo).
        timeout_s: collective timeout.
    """
    world = _env_int("WORLD_SIZE", 1)
    info = DistInfo(
        rank=_env_int("RANK", 0),
        world_size=world,
        local_rank=_env_int("LOCAL_RANK", 0),
        local_world_size=_env_int("LOCAL_WORLD_SIZE", world),
    )
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise ExtradimError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ExtradimError(f"unknown distributed backend {backend!r}; valid: auto, gloo, nccl")
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return info


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes files."""
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


# ----------------------------------------------------------------------------------------------
# Training data: deterministic global batches, sharded by rank
# ----------------------------------------------------------------------------------------------


def split_evenly(n: int, parts: int, index: int) -> range:
    """The ``index``-th of ``parts`` contiguous blocks of range(n); sizes differ by at most one."""
    if not 0 <= index < parts:
        raise ValueError(f"index {index} out of range for {parts} parts")
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return range(start, start + base + (index < extra))


class ShardedBatchSampler:
    """Global batches of dataset indices as a pure function of (seed, step); one rank's share.

    A finite dataset of ``size`` items is read in a fresh permutation every epoch (seeded by
    (seed, epoch)); epochs run on seamlessly across step boundaries, so every item is seen once
    per epoch whatever the batch size. An infinite procedural stream (``size=None``) is read at
    indices step * G + j. Like ``DistributedSampler``, but addressed by step, so resuming at any
    step needs no iterator state.

    Args:
        size: number of items, or None for an infinite stream.
        global_batch: G, samples per optimizer step over all ranks and micro-steps.
        seed: shuffle seed.
        shuffle: permute finite datasets each epoch.
    """

    def __init__(self, size: int | None, global_batch: int, seed: int = 0, shuffle: bool = True) -> None:
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        if size is not None and size < 1:
            raise ValueError(f"dataset size must be >= 1, got {size}")
        self.size, self.global_batch, self.seed, self.shuffle = size, global_batch, seed, shuffle
        self._perm: tuple[int, Tensor] | None = None  # (epoch, permutation) cache

    def _permutation(self, epoch: int) -> Tensor:
        if self._perm is None or self._perm[0] != epoch:
            assert self.size is not None
            g = make_generator(derive_seed(self.seed, epoch))
            perm = torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
            self._perm = (epoch, perm)
        return self._perm[1]

    def global_indices(self, step: int) -> list[int]:
        """Dataset indices of the G samples of ``step``, in global-position order."""
        start = step * self.global_batch
        positions = range(start, start + self.global_batch)
        if self.size is None:
            return list(positions)
        out = []
        for p in positions:
            epoch, i = divmod(p, self.size)
            out.append(int(self._permutation(epoch)[i]))
        return out

    def shard(self, step: int, rank: int, world_size: int) -> tuple[list[int], range]:
        """This rank's dataset indices for ``step`` and their positions within the global batch."""
        if self.global_batch % world_size:
            raise ExtradimError(
                f"global batch {self.global_batch} is not divisible by the world size {world_size}"
            )
        positions = split_evenly(self.global_batch, world_size, rank)
        indices = self.global_indices(step)
        return [indices[p] for p in positions], positions


# ----------------------------------------------------------------------------------------------
# Sharded generation: split N items over ranks, gather the results in the original order
# ----------------------------------------------------------------------------------------------


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """The contiguous block of the items range(n) that this rank generates."""
    if rank is None or world_size is None:
        rank = dist.get_rank() if _active() else 0
        world_size = dist.get_world_size() if _active() else 1
    return split_evenly(n, world_size, rank)


def all_gather_cat(local: Tensor) -> Tensor:
    """Concatenate every rank's ``local`` (same trailing shape, any leading size) in rank order."""
    if not _active():
        return local
    world = dist.get_world_size()
    # all_gather needs equal shapes: share the sizes, pad to the largest, trim after.
    size = torch.tensor([local.shape[0]], dtype=torch.long, device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def gather_in_order(local: Tensor, n: int) -> Tensor:
    """Gather per-rank outputs for ``shard_indices(n)`` into one (n, ...) tensor on every rank.

    Args:
        local: (len(shard_indices(n)), ...) this rank's outputs, in its items' order.
        n: the total number of items.

    Returns:
        (n, ...): item i's output at row i, as if one process had made them all.
    """
    mine = shard_indices(n)
    if local.shape[0] != len(mine):
        raise ValueError(f"this rank owns {len(mine)} of {n} items but passed {local.shape[0]} outputs")
    out = all_gather_cat(local)
    if out.shape[0] != n:
        raise ValueError(f"gathered {out.shape[0]} outputs for {n} items")
    return out
