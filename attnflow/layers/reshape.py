"""Volume-preserving reshapes (squeeze, channel swap) and the multi-scale split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Flow, check_input, zeros_logdet

__all__ = ["Squeeze", "SwapHalves"]


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
