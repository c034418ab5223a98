"""Glow's coupling network and its zero-initialised output convolution (Conv2dZeros)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .actnorm import ActNormNet

__all__ = ["ZeroConv2d", "GlowNet"]


class ZeroConv2d(nn.Module):
    """Zero-initialised convolution with a learned output scale ``exp(3 * logs)`` (Glow's Conv2dZeros).

    The layer it ends starts as the identity map; the ``3 *`` speeds learning of the scale.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # (W * x + b) e^{3 logs} as one convolution with the scale folded into W and b
        scale = torch.exp(3.0 * self.logs).view(-1)
        conv = self.conv
        return F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), conv.bias * scale, padding=conv.padding)


class GlowNet(nn.Module):
    """Glow's coupling network: conv3x3 -> actnorm -> ReLU -> conv1x1 -> actnorm -> ReLU -> ZeroConv.

    Its output is zero at initialisation, so an affine layer built on it starts near the identity.
    After the data-dependent initialisation each actnorm is folded into the convolution before it.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 512) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        self.norm_in = ActNormNet(hidden)
        self.conv_mid = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.norm_mid = ActNormNet(hidden)
        self.conv_out = ZeroConv2d(hidden, out_channels)

    def first_conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """``conv_in``'s 3x3 convolution of ``x`` with ``weight`` and ``bias`` (the module's own, or
        with the actnorm after it folded in); a subclass that takes another kind of input
        convolves it here."""
        return self.conv_in._conv_forward(x, weight, bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.norm_in._init_pending or self.norm_mid._init_pending:  # the init sees conv outputs
            h = F.relu(self.norm_in(self.first_conv(x, self.conv_in.weight, self.conv_in.bias)))
            h = F.relu(self.norm_mid(self.conv_mid(h)))
            return self.conv_out(h)
        # each actnorm folded into the convolution before it (one pass over the map fewer each)
        h = F.relu(self.first_conv(x, *self.norm_in.fold_into(self.conv_in.weight, None)))
        w, b = self.norm_mid.fold_into(self.conv_mid.weight, None)
        h = F.relu(F.conv2d(h, w, b))
        return self.conv_out(h)
