"""Invertible 1x1 convolution (Glow), LU-parametrised so its log-det is a sum."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, check_input

__all__ = ["InvConv1x1", "lu_weight", "lu_inverse_weight", "register_lu_factors"]


def register_lu_factors(module: nn.Module, channels: int) -> None:
    """Give ``module`` the LU factors of a random rotation: buffers ``perm``, ``sign`` and
    parameters ``lower``, ``upper``, ``log_s`` (``W = P L (U + diag(sign * exp(log_s)))``)."""
    q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
    p, l_mat, u_mat = torch.linalg.lu(q)
    diag = torch.diagonal(u_mat)
    dtype = torch.get_default_dtype()  # like every other layer's parameters
    module.register_buffer("perm", p.to(dtype))
    module.register_buffer("sign", torch.sign(diag).to(dtype))
    module.lower = nn.Parameter(l_mat.tril(-1).to(dtype))
    module.upper = nn.Parameter(u_mat.triu(1).to(dtype))
    module.log_s = nn.Parameter(diag.abs().log().to(dtype))


def lu_weight(perm: Tensor, lower: Tensor, upper: Tensor, sign: Tensor, log_s: Tensor) -> Tensor:
    """``W = P L (U + diag(sign * exp(log_s)))`` with ``L`` unit lower and ``U`` strictly upper.

    ``lower`` and ``upper`` may carry leading batch dimensions (conditional LU factors).
    """
    eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
    l_mat = lower.tril(-1) + eye
    u_mat = upper.triu(1) + torch.diag_embed(sign * log_s.exp())
    return perm @ l_mat @ u_mat


def lu_inverse_weight(
    perm: Tensor, lower: Tensor, upper: Tensor, sign: Tensor, log_s: Tensor
) -> Tensor:
    """``W^{-1} = U^{-1} L^{-1} P^T`` by triangular solves (more accurate than a generic inverse)."""
    eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
    l_mat = lower.tril(-1) + eye
    u_mat = upper.triu(1) + torch.diag_embed(sign * log_s.exp())
    eye_b = eye.expand_as(l_mat)
    l_inv = torch.linalg.solve_triangular(l_mat, eye_b, upper=False, unitriangular=True)
    u_inv = torch.linalg.solve_triangular(u_mat, eye_b, upper=True)
    return u_inv @ l_inv @ perm.transpose(-1, -2)


class InvConv1x1(Flow):
    """``y[:, :, i, j] = W x[:, :, i, j]``; log-det ``H * W * sum(log|s|)``.

    Initialised at a random rotation. In eval mode the inverse weight is cached and recomputed only
    when a parameter changes (tracked through the parameters' version counters).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        register_lu_factors(self, channels)
        self._inv_cache: tuple[tuple, Tensor] | None = None

    def _factors(self) -> tuple[Tensor, ...]:
        return self.perm, self.lower, self.upper, self.sign, self.log_s

    def weight(self) -> Tensor:
        return lu_weight(*self._factors())

    def inverse_weight(self) -> Tensor:
        if self.training or torch.is_grad_enabled():
            self._inv_cache = None
            return lu_inverse_weight(*self._factors())
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self._factors())
        if self._inv_cache is None or self._inv_cache[0] != key:
            self._inv_cache = (key, lu_inverse_weight(*self._factors()))
        return self._inv_cache[1]

    def _logdet(self, x: Tensor) -> Tensor:
        return ((x.shape[2] * x.shape[3]) * self.log_s.sum()).expand(x.shape[0]).to(x.dtype)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, x, self.channels)
        w = self.weight().to(x.dtype)
        return F.conv2d(x, w.view(self.channels, self.channels, 1, 1)), self._logdet(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_input(self, z, self.channels)
        w_inv = self.inverse_weight().to(z.dtype)
        return F.conv2d(z, w_inv.view(self.channels, self.channels, 1, 1)), -self._logdet(z)
