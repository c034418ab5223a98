"""mARFlow (Mahajan et al. 2020): mixture-of-logistics couplings and a multi-scale ConvLSTM prior."""

from __future__ import annotations

from ..layers import MixtureLogisticCoupling, SwapHalves
from .glow import CouplingFactory, PriorFactory

__all__ = ["mixture_coupling", "ar_priors"]


def mixture_coupling(
    hidden: int = 96, components: int = 32, blocks: int = 10, heads: int = 4, dropout: float = 0.2
) -> CouplingFactory:
    """mARFlow's coupling stage: a Flow++ mixture-logistic coupling, then swap the two halves."""

    def make(channels: int):
        return [
            MixtureLogisticCoupling(
                channels,
                hidden=hidden,
                components=components,
                blocks=blocks,
                heads=heads,
                dropout=dropout,
            ),
            SwapHalves(channels),
        ]

    return make


def ar_priors(hidden: int = 32, layers: int = 3) -> PriorFactory:
    """mARFlow's prior: per level, a ConvLSTM autoregressive over the channels of ``z2`` given ``z1``."""
    from ..arprior import ChannelARPrior

    return lambda channels, context: ChannelARPrior(
        channels, context_channels=context, hidden=hidden, layers=layers
    )
