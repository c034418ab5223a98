"""Invertible layers, each an :class:`attnflow.core.Flow`."""

from .attention import IMap, ITrans
from .conv import InvConv1x1
from .coupling import (
    AffineCoupling,
    AffineInjector,
    ConditionalAffineCoupling,
    MixtureLogisticCoupling,
)
from .dequant import Dequantize, Logit, quantize
from .masks import MASK_KINDS, make_mask
from .norm import ActNorm
from .reshape import Squeeze, SwapHalves

__all__ = [
    "IMap",
    "ITrans",
    "InvConv1x1",
    "AffineCoupling",
    "AffineInjector",
    "ConditionalAffineCoupling",
    "MixtureLogisticCoupling",
    "Dequantize",
    "Logit",
    "quantize",
    "MASK_KINDS",
    "make_mask",
    "ActNorm",
    "Squeeze",
    "SwapHalves",
]
