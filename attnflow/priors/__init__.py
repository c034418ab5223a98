"""Latent priors: Gaussian, conditional Gaussian, mARFlow's multi-scale autoregressive ConvLSTM
prior, and :class:`Split`, the multi-scale factor-out that owns its prior.

Every prior has ``log_prob(z, context=None, cond=None) -> [B]`` and
``sample(shape, context=None, cond=None, temperature=1.0) -> z`` (see :mod:`.gaussian`).
"""

from .autoregressive import ChannelARPrior, ConvLSTMLayer, reference_geometry
from .gaussian import DiagonalGaussian, Prior, StandardNormal, gaussian_log_prob
from .split import Split

__all__ = [
    "Prior",
    "StandardNormal",
    "DiagonalGaussian",
    "gaussian_log_prob",
    "ChannelARPrior",
    "ConvLSTMLayer",
    "reference_geometry",
    "Split",
]
