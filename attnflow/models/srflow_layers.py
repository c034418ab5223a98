"""SRFlow's layers that take its factored conditions (:class:`~.upsampled_concat.UpsampledConcat`):
the generic injector, coupling, network and prior, each with the one method that meets such a map
overridden. Their parameters, state-dict names and values are the generic layers'; a tensor
condition gives exactly the generic result.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import check_cond, check_cond_shape
from ..layers import AffineInjector, ConditionalAffineCoupling
from ..nn import GlowNet
from ..priors import DiagonalGaussian
from .upsampled_concat import UpsampledConcat, conv2d_on_map, dense_map

__all__ = [
    "check_factored_cond",
    "FactoredGlowNet",
    "FactoredAffineInjector",
    "FactoredConditionalAffineCoupling",
    "FactoredDiagonalGaussian",
]


def check_factored_cond(
    layer: nn.Module, cond: Tensor | UpsampledConcat | None, x: Tensor, channels: int
) -> Tensor | UpsampledConcat:
    """:func:`attnflow.core.check_cond` that lets an :class:`UpsampledConcat` of the expected shape
    through as it is."""
    if not isinstance(cond, UpsampledConcat):
        return check_cond(layer, cond, x, channels)
    check_cond_shape(layer, tuple(cond.shape), x, channels)
    return cond


class FactoredGlowNet(GlowNet):
    """:class:`~attnflow.nn.GlowNet` whose first convolution takes an :class:`UpsampledConcat` too,
    running its coarse part at the coarse resolution (:func:`conv2d_on_map`)."""

    def first_conv(self, x: Tensor | UpsampledConcat, weight: Tensor, bias: Tensor | None) -> Tensor:
        return conv2d_on_map(self.conv_in, x, weight, bias)


class FactoredAffineInjector(AffineInjector):
    """:class:`~attnflow.layers.AffineInjector` on a :class:`FactoredGlowNet`: its network gets
    the condition as it comes, factored or not."""

    def __init__(self, channels: int, cond_channels: int, *, hidden: int = 64, eps: float = 1e-4) -> None:
        net = FactoredGlowNet(cond_channels, 2 * channels, hidden)
        super().__init__(channels, cond_channels, hidden=hidden, eps=eps, net=net)

    def _net_input(self, x: Tensor, cond: Tensor | UpsampledConcat | None) -> Tensor | UpsampledConcat:
        return check_factored_cond(self, cond, x, self.cond_channels)


class FactoredConditionalAffineCoupling(ConditionalAffineCoupling):
    """:class:`~attnflow.layers.ConditionalAffineCoupling` on a :class:`FactoredGlowNet`: a
    factored condition stays factored, the pass-through half joining its fine part."""

    def __init__(self, channels: int, cond_channels: int, *, hidden: int = 64, eps: float = 1e-4) -> None:
        net = FactoredGlowNet(channels // 2 + cond_channels, 2 * (channels - channels // 2), hidden)
        super().__init__(channels, cond_channels, hidden=hidden, eps=eps, net=net)

    def _net_input(self, x_id: Tensor, cond: Tensor | UpsampledConcat | None) -> Tensor | UpsampledConcat:
        cond = check_factored_cond(self, cond, x_id, self.cond_channels)
        if isinstance(cond, UpsampledConcat):
            return cond.prepend(x_id)
        return torch.cat([x_id, cond], dim=1)


class FactoredDiagonalGaussian(DiagonalGaussian):
    """:class:`~attnflow.priors.DiagonalGaussian` that builds a factored condition out to the
    ordinary tensor (its single convolution reads it once)."""

    def _inputs(self, context: Tensor | None, cond: Tensor | UpsampledConcat | None) -> Tensor:
        return super()._inputs(context, dense_map(cond) if self.cond_channels else cond)
