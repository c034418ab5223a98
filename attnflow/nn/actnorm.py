"""Per-channel affine normalisation with data-dependent initialisation (Glow's actnorm): the
parameters every actnorm-like layer shares, and the plain (log-det free) layer networks use."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import check_input

__all__ = ["ActNormParams", "ActNormNet"]


def _init_stats(x: Tensor, min_std: float) -> tuple[Tensor, Tensor]:
    """Per-channel ``(-mean, -log std)`` of ``x``; a channel with std <= ``min_std`` keeps scale 1."""
    flat = x.detach().transpose(0, 1).reshape(x.shape[1], -1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, unbiased=False) if flat.shape[1] > 1 else torch.zeros_like(mean)
    logs = torch.where(std > min_std, -torch.log(std.clamp_min(min_std)), torch.zeros_like(std))
    return -mean, logs


class ActNormParams(nn.Module):
    """Per-channel ``bias`` and ``logs`` with data-dependent initialisation."""

    def __init__(self, channels: int, *, min_std: float = 1e-6) -> None:
        super().__init__()
        self.channels = channels
        self.min_std = min_std
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._init_pending = False

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set ``b, logs`` so that the output on ``x`` has zero mean and unit variance per channel."""
        check_input(self, x, self.channels)
        bias, logs = _init_stats(x, self.min_std)
        self.bias.copy_(bias.view_as(self.bias))
        self.logs.copy_(logs.view_as(self.logs))
        self.initialized.fill_(True)

    def _maybe_initialize(self, x: Tensor) -> None:
        if self._init_pending:
            self.initialize(x)
            self._init_pending = False


class ActNormNet(ActNormParams):
    """ActNorm as a plain layer inside coupling networks (no log-det), same data-dependent init."""

    def forward(self, x: Tensor) -> Tensor:
        self._maybe_initialize(x)
        return (x + self.bias) * self.logs.exp()

    def fold_into(self, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(W', b')`` of the convolution followed by this actnorm, as one convolution:
        ``(W * x + b + beta) e^s = (W e^s) * x + (b + beta) e^s`` (per output channel)."""
        scale = self.logs.exp().view(-1)
        shift = self.bias.view(-1) if bias is None else bias + self.bias.view(-1)
        return weight * scale.view(-1, *([1] * (weight.dim() - 1))), shift * scale
