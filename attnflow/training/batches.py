"""The run's data order and random streams: deterministic batches per step (so ``--resume`` at
any step sees the same data) and the seeds of the global RNGs."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ..config import ConfigError

__all__ = ["ResumableBatches", "data_noise_seed", "seed_all"]


class ResumableBatches(Sampler[list[int]]):
    """Deterministic batches for steps ``start..total-1``: epoch ``e`` uses ``randperm`` seeded by
    ``(seed, e)``, rank ``r`` of ``world`` takes its slice. Restarting at any step reproduces the
    same sequence, which makes ``--resume`` exact."""

    def __init__(
        self, n: int, batch_size: int, total: int, *, seed: int, start: int = 0, rank: int = 0, world: int = 1
    ) -> None:
        self.n, self.batch_size, self.total = n, batch_size, total
        self.seed, self.start, self.rank, self.world = seed, start, rank, world
        self.per_epoch = n // (batch_size * world)
        if self.per_epoch < 1:
            raise ConfigError(
                f"the training set has {n} images, fewer than one batch of {batch_size} x {world} "
                f"process(es); lower train.batch_size"
            )

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        perm, perm_epoch = None, -1
        for step in range(self.start, self.total):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                perm, perm_epoch = torch.randperm(self.n, generator=gen), epoch
            first = (k * self.world + self.rank) * self.batch_size
            yield perm[first : first + self.batch_size].tolist()


def data_noise_seed(seed: int, rank: int = 0) -> int:
    """The seed of the global torch RNG once the model is built: the dequantisation noise and
    random flips of run seed ``seed`` (process ``rank``), independent of the model's initialisation."""
    return (int(seed) + int(rank)) * 2_654_435_761 % (2**63) + 1_000_003


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
