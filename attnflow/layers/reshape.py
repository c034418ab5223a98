"""Volume-preserving reshapes (squeeze, channel swap) and the multi-scale split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, check_input, zeros_logdet
from ..priors import Prior

__all__ = ["Squeeze", "SwapHalves", "Split"]


class Squeeze(Flow):
    """Space-to-depth by ``factor``: ``[B, C, H, W] -> [B, C f^2, H/f, W/f]``; log-det 0.

    Channel ``c * f^2 + di * f + dj`` holds pixel ``(f i + di, f j + dj)`` of channel ``c``
    (``pixel_unshuffle`` order).
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"Squeeze: factor must be >= 1, got {factor}")
        self.factor = factor

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, x, divisible_by=self.factor)
        return F.pixel_unshuffle(x, self.factor), zeros_logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, z)
        if z.shape[1] % (self.factor**2):
            raise ValueError(
                f"Squeeze.inverse: channels must be divisible by {self.factor ** 2}, "
                f"got shape {tuple(z.shape)}"
            )
        return F.pixel_shuffle(z, self.factor), zeros_logdet(z)


class SwapHalves(Flow):
    """``[x_a, x_b] -> [x_b, x_a]`` with ``x_a`` the first ``C // 2`` channels; log-det 0."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, x, self.channels)
        k = self.channels // 2
        return torch.cat([x[:, k:], x[:, :k]], dim=1), zeros_logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, z, self.channels)
        k = self.channels - self.channels // 2
        return torch.cat([z[:, k:], z[:, :k]], dim=1), zeros_logdet(z)


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
