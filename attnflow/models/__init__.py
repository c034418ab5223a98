"""Models: one contract (:class:`FlowModel`) for every family, the level builder, the backbones.

Families: :class:`MultiScaleFlow` (unconditional generation; Glow or mARFlow steps), :class:`SRFlow`
(super-resolution) and :class:`FullGlow` (label-to-photo translation). Build any of them from a
config with :func:`build_model`.
"""

from .attention_maps import attention_layers, attention_maps, attention_summary, summarize_attention
from .base import TASKS, FlowModel
from .fullglow import FullGlow, SourceGlow
from .multiscale import Level, MultiScaleFlow, build_levels, dequantization_noise
from .registry import BACKBONES, build_model, complete_config, register_backbone
from .srflow import RRDBEncoder, SRFlow
from .steps import ATTENTION_KINDS, POSITIONS, AttentionConfig, make_step

__all__ = [
    "TASKS",
    "FlowModel",
    "MultiScaleFlow",
    "SRFlow",
    "RRDBEncoder",
    "FullGlow",
    "SourceGlow",
    "Level",
    "build_levels",
    "dequantization_noise",
    "BACKBONES",
    "build_model",
    "complete_config",
    "register_backbone",
    "ATTENTION_KINDS",
    "POSITIONS",
    "AttentionConfig",
    "make_step",
    "attention_layers",
    "attention_maps",
    "attention_summary",
    "summarize_attention",
]
