"""Models: multi-scale flows and their backbones."""

from .build import build_model
from .multiscale import Level, MultiScaleFlow, dequantization_noise
from .steps import AttentionConfig, make_step

__all__ = ["build_model", "Level", "MultiScaleFlow", "dequantization_noise", "AttentionConfig", "make_step"]
