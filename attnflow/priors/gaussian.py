"""Latent priors: standard normal, (conditional) diagonal Gaussian, and the contract they share.

Every prior has
``log_prob(z, context=None, cond=None) -> [B]`` and
``sample(shape, context=None, cond=None, temperature=1.0) -> z``.
``context`` is the part of the activation that stays in the flow at a split (``z1``); ``cond`` is the
external condition (e.g. low-resolution features), already at the latent's resolution. Sampling at
``temperature`` tau scales every standard deviation by tau.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..nn import ZeroConv2d, interleaved_halves, soft_clamp

__all__ = ["Prior", "StandardNormal", "DiagonalGaussian", "gaussian_log_prob"]

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``sum log N(z; mean, exp(log_std)^2)`` over all but the batch dimension -> ``[B]``."""
    logp = -0.5 * (_LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-log_std)) ** 2)
    return logp.flatten(1).sum(1)


class Prior(nn.Module):
    """Base class of latent priors (see module docstring for the contract)."""

    def log_prob(self, z: Tensor, context: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def sample(
        self,
        shape: tuple[int, ...],
        context: Tensor | None = None,
        cond: Tensor | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        raise NotImplementedError


class StandardNormal(Prior):
    """``N(0, I)``; ignores context and condition."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor, context: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        return gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))

    def sample(self, shape, context=None, cond=None, temperature: float = 1.0) -> Tensor:
        ref = context if context is not None else cond if cond is not None else self._anchor
        return temperature * torch.randn(shape, dtype=ref.dtype, device=ref.device)


class DiagonalGaussian(Prior):
    """Diagonal Gaussian whose mean and log-std come from ``ZeroConv([context, cond])``.

    With neither context nor condition channels it is a learned per-channel Gaussian. The log-std
    is soft-clamped to ``(-max_log_std, max_log_std)`` so a runaway prior cannot produce NaN.
    At initialisation it is ``N(0, I)``.
    """

    def __init__(
        self,
        channels: int,
        *,
        context_channels: int = 0,
        cond_channels: int = 0,
        max_log_std: float = 6.0,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.context_channels = context_channels
        self.cond_channels = cond_channels
        self.max_log_std = max_log_std
        in_channels = context_channels + cond_channels
        if in_channels:
            self.net = ZeroConv2d(in_channels, 2 * channels)
        else:
            self.net = None
            self.mean = nn.Parameter(torch.zeros(1, channels, 1, 1))
            self.log_std = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def _inputs(self, context: Tensor | None, cond: Tensor | None) -> Tensor:
        parts = []
        for name, t, ch in (("context", context, self.context_channels), ("cond", cond, self.cond_channels)):
            if ch:
                if t is None or t.dim() != 4 or t.shape[1] != ch:
                    got = None if t is None else tuple(t.shape)
                    raise ValueError(
                        f"DiagonalGaussian: expected {name} [B, {ch}, H, W], got {got}"
                    )
                parts.append(t)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def params(
        self, shape: tuple[int, ...], context: Tensor | None, cond: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """``(mean, log_std)`` broadcast to ``shape``."""
        if self.net is None:
            mean, raw = self.mean, self.log_std
        else:
            h = self.net(self._inputs(context, cond))
            mean, raw = interleaved_halves(h)
        log_std = soft_clamp(raw, self.max_log_std)
        return mean.expand(shape), log_std.expand(shape)

    def log_prob(self, z: Tensor, context: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        if z.dim() != 4 or z.shape[1] != self.channels:
            raise ValueError(
                f"DiagonalGaussian: expected z [B, {self.channels}, H, W], got {tuple(z.shape)}"
            )
        mean, log_std = self.params(tuple(z.shape), context, cond)
        return gaussian_log_prob(z, mean, log_std)

    def sample(self, shape, context=None, cond=None, temperature: float = 1.0) -> Tensor:
        mean, log_std = self.params(tuple(shape), context, cond)
        eps = torch.randn(shape, dtype=mean.dtype, device=mean.device)
        return mean + temperature * torch.exp(log_std) * eps
