"""Plain (non-invertible) networks that parametrise flow layers: conditioners, not flows.

Nothing here is a :class:`~attnflow.core.Flow`; this package imports no layer, so every layer can
use these networks. One concept per module:

* :mod:`.autocast`: running conditioner networks in lower precision (``train.autocast``);
* :mod:`.functional`: the small element-wise maps the layers and priors share (bounded scales,
  soft clamps, channel halves);
* :mod:`.actnorm`: per-channel normalisation with data-dependent initialisation;
* :mod:`.glow`: Glow's coupling network and its zero-initialised output convolution;
* :mod:`.flowpp`: the Flow++ / mARFlow coupling network (gated convolutions and attention).
"""

from .actnorm import ActNormNet, ActNormParams
from .autocast import AUTOCAST_DTYPES, network_autocast, run_network
from .flowpp import ATTENTION_DROPOUT, FlowPPNet, concat_elu
from .functional import bounded_scale, interleaved_halves, soft_clamp
from .glow import GlowNet, ZeroConv2d

__all__ = [
    "ActNormParams",
    "ActNormNet",
    "ZeroConv2d",
    "GlowNet",
    "FlowPPNet",
    "bounded_scale",
    "soft_clamp",
    "concat_elu",
    "ATTENTION_DROPOUT",
    "AUTOCAST_DTYPES",
    "network_autocast",
    "run_network",
    "interleaved_halves",
]
