"""The multi-scale factor-out: a split that owns the prior of the half it factors out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import check_input
from .gaussian import Prior

__all__ = ["Split"]


class Split(nn.Module):
    """Multi-scale factor-out: keep ``z1`` (first ``ceil(C/2)`` channels), emit ``z2`` to a prior.

    Owns the prior of ``z2`` given ``z1`` (and optionally the condition): ``log_prob(z2, z1, cond)``
    and ``sample(z1, cond, temperature)``. The split itself is a permutation (log-det 0); the model
    adds ``log_prob`` to the log-likelihood.
    """

    def __init__(self, channels: int, prior: Prior, *, keep: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.keep = channels - channels // 2 if keep is None else keep
        if not 0 < self.keep < channels:
            raise ValueError(
                f"Split: keep must be between 1 and {channels - 1} channels, got {self.keep}"
            )
        self.prior = prior

    @property
    def out_channels(self) -> int:
        return self.channels - self.keep

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, x, self.channels)
        return x[:, : self.keep], x[:, self.keep :]

    def inverse(self, z1: Tensor, z2: Tensor) -> Tensor:
        check_input(self, z1, self.keep, what="z1")
        check_input(self, z2, self.out_channels, what="z2")
        return torch.cat([z1, z2], dim=1)

    def log_prob(self, z2: Tensor, z1: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.prior.log_prob(z2, context=z1, cond=cond)

    def sample(self, z1: Tensor, cond: Tensor | None = None, temperature: float = 1.0) -> Tensor:
        shape = (z1.shape[0], self.out_channels, z1.shape[2], z1.shape[3])
        return self.prior.sample(shape, context=z1, cond=cond, temperature=temperature)
