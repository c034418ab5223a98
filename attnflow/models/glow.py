"""Unconditional multi-scale flows: Glow steps (affine coupling) and the shared level builder."""

from __future__ import annotations

from typing import Callable, Sequence



from ..core import Flow, Sequential
from ..layers import ActNorm, AffineCoupling, InvConv1x1, Split, Squeeze
from ..layers.dequant import Dequantize
from ..priors import DiagonalGaussian, Prior
from .multiscale import Level, MultiScaleFlow
from .steps import AttentionConfig, make_step

__all__ = ["build_unconditional", "glow_coupling", "gaussian_priors"]

CouplingFactory = Callable[[int], Sequence[Flow]]
PriorFactory = Callable[[int, int], Prior]  # (channels, context_channels) -> prior


def glow_coupling(hidden: int) -> CouplingFactory:
    """Glow's affine coupling (bounded sigmoid scale) of width ``hidden``."""
    return lambda channels: [AffineCoupling(channels, hidden=hidden)]


def gaussian_priors() -> PriorFactory:
    """Glow's priors: ``N(mean(z1), std(z1))`` by a zero-initialised conv at splits, learned at the top."""
    return lambda channels, context: DiagonalGaussian(channels, context_channels=context)


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
    built: list[Level] = []
    channels = c
    for level in range(levels):
        channels *= 4
        layers: list[Flow] = [Squeeze(2)]
        for _ in range(steps):
            layers.append(
                make_step(
                    ActNorm(channels),
                    InvConv1x1(channels),
                    coupling(channels),
                    attention.make(channels, level),
                    attention.position,
                )
            )
        split = None
        if level < levels - 1:
            keep = channels - channels // 2
            split = Split(channels, prior(channels - keep, keep), keep=keep)
        built.append(Level(Sequential(*layers), split))
        if split is not None:
            channels = split.keep
    top = prior(channels, 0)
    return MultiScaleFlow(built, top, preprocess=Dequantize(n_bins), image_shape=image_shape, n_bins=n_bins)


