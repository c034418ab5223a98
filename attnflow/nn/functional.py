"""Small element-wise maps shared by the layers, priors and networks: bounded scales, soft
clamps, even/odd channel halves."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bounded_scale", "soft_clamp", "interleaved_halves"]


def bounded_scale(raw: Tensor, eps: float = 1e-4) -> Tensor:
    """``sigmoid(raw + 2) + eps``: a positive scale in ``(eps, 1 + eps)``, about 0.88 at ``raw = 0``.

    Used by every affine layer instead of a raw ``exp`` so that one large activation cannot blow the
    output (or the log-det) up.
    """
    return torch.sigmoid(raw + 2.0) + eps


def interleaved_halves(h: Tensor) -> tuple[Tensor, Tensor]:
    """``(h[:, 0::2], h[:, 1::2])``, the even and odd channels, as views whose backward writes one
    gradient (``unbind``'s stack) instead of zero-filling a full-size one per slice."""
    even, odd = h.unflatten(1, (-1, 2)).unbind(2)
    return even, odd


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """``bound * tanh(x / bound)``: identity near 0, smoothly bounded in ``(-bound, bound)``."""
    return bound * torch.tanh(x / bound)
