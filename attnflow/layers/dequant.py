"""Data-side layers whose log-dets are part of the likelihood: dequantisation and logit."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Flow, check_input

__all__ = ["Dequantize", "Logit", "quantize"]


class Dequantize(Flow):
    """Integer pixels ``k in {0..n_bins-1}`` -> ``(k + u) / n_bins - 0.5``, ``u ~ U[0, 1)``.

    The map from the continuous ``k + u`` to the output is affine, so log-det ``-D log(n_bins)``
    (``D = C H W``); with it, ``-(log p) / (D ln 2)`` of the model is the bits/dim of the discrete
    data (a variational bound). ``inverse`` returns the continuous ``k + u``; use :func:`quantize`
    to get the integer image. With ``noise=False`` (or :meth:`no_noise`) the map is deterministic,
    which is what invertibility checks use.
    """

    def __init__(self, n_bins: int = 256, *, noise: bool = True) -> None:
        super().__init__()
        if n_bins < 2:
            raise ValueError(f"Dequantize: n_bins must be >= 2, got {n_bins}")
        self.n_bins = n_bins
        self.noise = noise

    def _logdet(self, x: Tensor) -> Tensor:
        d = x.shape[1] * x.shape[2] * x.shape[3]
        return x.new_full((x.shape[0],), -d * math.log(self.n_bins))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, x)
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if self.noise:
            x = x + torch.rand_like(x)
        return x / self.n_bins - 0.5, self._logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, z)
        return (z + 0.5) * self.n_bins, -self._logdet(z)


def quantize(x: Tensor, n_bins: int = 256) -> Tensor:
    """Continuous ``k + u`` (output of :meth:`Dequantize.inverse`) -> integer bins, clamped, uint8
    when ``n_bins <= 256`` (int64 otherwise). Non-finite values become 0."""
    k = torch.nan_to_num(x, nan=0.0, posinf=n_bins - 1, neginf=0.0).floor().clamp(0, n_bins - 1)
    return k.to(torch.uint8 if n_bins <= 256 else torch.int64)


class Logit(Flow):
    """RealNVP's logit pre-processing: ``y = logit(alpha + (1 - 2 alpha) x)`` for ``x`` in [0, 1].

    Log-det ``sum(log(1 - 2 alpha) - log p - log(1 - p))`` with ``p = alpha + (1 - 2 alpha) x``.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"Logit: alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, x)
        p = self.alpha + (1 - 2 * self.alpha) * x
        log_p, log_q = torch.log(p), torch.log1p(-p)
        logdet = (math.log(1 - 2 * self.alpha) - log_p - log_q).flatten(1).sum(1)
        return log_p - log_q, logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, z)
        x = (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)
        # log-det of the inverse = -(forward log-det) = sum(log p + log(1-p) - log(1-2 alpha))
        logdet = (F.logsigmoid(z) + F.logsigmoid(-z) - math.log(1 - 2 * self.alpha)).flatten(1).sum(1)
        return x, logdet
