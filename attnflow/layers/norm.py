"""Activation normalisation (Glow): a per-channel affine map with data-dependent initialisation."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Flow, check_input
from ..nn import ActNormParams

__all__ = ["ActNorm"]


class ActNorm(ActNormParams, Flow):
    """``y = (x + b) * exp(logs)`` per channel; log-det ``H * W * sum(logs)``.

    Data-dependent initialisation (``b = -mean``, ``logs = -log std``) happens through
    :meth:`initialize` or :func:`attnflow.core.initialize_data_dependent`; a channel whose std is
    (near) zero keeps scale 1 rather than dividing by zero.
    """

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, x, self.channels)
        self._maybe_initialize(x)
        y = (x + self.bias) * self.logs.exp()
        logdet = (x.shape[2] * x.shape[3]) * self.logs.sum()
        return y, logdet.expand(x.shape[0]).to(x.dtype)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, z, self.channels)
        x = z * torch.exp(-self.logs) - self.bias
        logdet = -(z.shape[2] * z.shape[3]) * self.logs.sum()
        return x, logdet.expand(z.shape[0]).to(z.dtype)
