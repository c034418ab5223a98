"""Unconditional multi-scale flows with Glow steps: (actnorm, LU 1x1 conv, coupling) plus attention."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core import Flow
from ..layers import ActNorm, AffineCoupling, Dequantize, InvConv1x1
from ..priors import DiagonalGaussian
from .multiscale import MultiScaleFlow, PriorFactory, build_levels
from .steps import AttentionConfig, make_step

__all__ = ["build_unconditional", "glow_coupling", "gaussian_priors", "CouplingFactory"]

CouplingFactory = Callable[[int], Sequence[Flow]]
"""``channels -> the coupling stage of one step`` (one or more flows)."""


def glow_coupling(hidden: int) -> CouplingFactory:
    """Glow's affine coupling (bounded sigmoid scale) of width ``hidden``."""
    return lambda channels: [AffineCoupling(channels, hidden=hidden)]


def gaussian_priors() -> PriorFactory:
    """Glow's priors: ``N(mean(z1), std(z1))`` by a zero-initialised conv at splits, learned at the top."""
    return lambda level, channels, context: DiagonalGaussian(channels, context_channels=context)


def build_unconditional(
    image_shape: Sequence[int],
    *,
    levels: int,
    steps: int,
    coupling: CouplingFactory,
    prior: PriorFactory,
    attention: AttentionConfig | None = None,
    n_bins: int = 256,
) -> MultiScaleFlow:
    """Levels of [squeeze, ``steps`` x (actnorm, 1x1 conv, coupling) with attention, split].

    No split after the last level. ``image_shape`` is (C, H, W); H and W must be divisible by
    ``2**levels``.
    """
    c, h, w = image_shape
    if levels < 1 or steps < 1:
        raise ValueError(f"levels and steps must be >= 1, got levels={levels}, steps={steps}")
    if h % (2**levels) or w % (2**levels):
        raise ValueError(
            f"image size {h}x{w} must be divisible by 2**levels = {2 ** levels} (levels={levels})"
        )
    attention = attention or AttentionConfig()

    def level_steps(level: int, channels: int) -> list[Flow]:
        return [
            make_step(
                ActNorm(channels),
                InvConv1x1(channels),
                coupling(channels),
                attention.make(channels, level),
                attention.position,
            )
            for _ in range(steps)
        ]

    built, top = build_levels(c, levels, steps=level_steps, prior=prior)
    return MultiScaleFlow(built, top, preprocess=Dequantize(n_bins), image_shape=image_shape, n_bins=n_bins)
