"""Models: one contract (:class:`FlowModel`) for every family, the level builder, the backbones.

Families: :class:`MultiScaleFlow` (unconditional generation; Glow or mARFlow steps), :class:`SRFlow`
(super-resolution) and :class:`FullGlow` (label-to-photo translation), plus :class:`RRDBNet`,
the L1-trained SR network that pretrains SRFlow's encoder (a :class:`TrainableModel`, not a flow).
Build any of them from a config with :func:`build_model`.
"""

from .attention_maps import attention_layers, attention_maps, attention_summary, summarize_attention
from .base import TASKS, FlowModel, TrainableModel
from .fullglow import FullGlow, SourceGlow
from .multiscale import Level, MultiScaleFlow, build_levels, dequantization_noise
from .registry import BACKBONES, build_model, register_backbone
from .rrdb import RRDBNet
from .rrdb_encoder import RRDBEncoder
from .srflow import SRFlow
from .steps import ATTENTION_KINDS, POSITIONS, AttentionConfig, make_step

__all__ = [
    "TASKS",
    "FlowModel",
    "TrainableModel",
    "RRDBNet",
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
