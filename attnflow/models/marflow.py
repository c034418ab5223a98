"""mARFlow (Mahajan et al. 2020): mixture-of-logistics couplings and a multi-scale ConvLSTM prior."""

from __future__ import annotations

from ..layers import MixtureLogisticCoupling, SwapHalves
from ..priors import ChannelARPrior, reference_geometry
from .glow import CouplingFactory
from .multiscale import PriorFactory

__all__ = ["mixture_coupling", "ar_priors", "PRIOR_GEOMETRIES"]

PRIOR_GEOMETRIES = ("reference", "uniform")


def mixture_coupling(
    hidden: int = 96,
    components: int = 32,
    blocks: int = 10,
    heads: int = 4,
    dropout: float = 0.2,
    attention_dropout: str = "output",
) -> CouplingFactory:
    """mARFlow's coupling stage: a Flow++ mixture-logistic coupling, then swap the two halves.

    ``attention_dropout``: where the coupling network's self-attention applies its dropout,
    ``"weights"`` (the reference) or ``"output"``."""

    def make(channels: int):
        return [
            MixtureLogisticCoupling(
                channels,
                hidden=hidden,
                components=components,
                blocks=blocks,
                heads=heads,
                dropout=dropout,
                attention_dropout=attention_dropout,
            ),
            SwapHalves(channels),
        ]

    return make


def ar_priors(
    hidden: int = 32, layers: int = 3, *, geometry: str = "reference", cond_channels: int = 0
) -> PriorFactory:
    """mARFlow's prior: per level, a ConvLSTM autoregressive over the channels of ``z2`` given ``z1``.

    ``geometry="reference"``: the ConvLSTM kernel / dilation of the official code per level (5/2 at
    the finest, 5/1, then 3/1; :func:`~attnflow.priors.reference_geometry`); ``"uniform"``: 5/1 at
    every level. ``cond_channels``: width of an external condition at every level (0: none).
    """
    if geometry not in PRIOR_GEOMETRIES:
        raise ValueError(f"prior geometry must be one of {', '.join(PRIOR_GEOMETRIES)}, got {geometry!r}")

    def make(level: int, channels: int, context: int) -> ChannelARPrior:
        kernel, dilation = reference_geometry(level + 1) if geometry == "reference" else (5, 1)
        return ChannelARPrior(
            channels, context, cond_channels, hidden=hidden, layers=layers,
            kernel_size=kernel, dilation=dilation,
        )

    return make
