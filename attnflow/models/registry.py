"""``build_model(config)``: one builder from a config for every backbone.

Each backbone registers its builder here; its ``model`` keys (with their types and defaults) are
declared in :data:`attnflow.config.schema.BACKBONES`, and the builder receives a ``model`` section
that :func:`attnflow.config.validate_model` has checked and typed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, validate_model
from ..config.schema import BACKBONES as BACKBONE_KEYS
from ..config.schema import Key
from .base import FlowModel, TrainableModel
from .fullglow import build_fullglow
from .glow import build_unconditional, gaussian_priors, glow_coupling
from .marflow import ar_priors, mixture_coupling
from .options import attention_from_config
from .rrdb import build_rrdb
from .srflow import build_srflow

__all__ = ["Backbone", "BACKBONES", "register_backbone", "build_model"]


@dataclass(frozen=True)
class Backbone:
    """A buildable backbone: ``build(model_section) -> model``."""

    name: str
    build: Callable[[dict], TrainableModel]


BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str, keys: dict[str, Key] | None = None):
    """Decorator: make ``fn(model_section) -> model`` buildable as ``model.backbone: name``.

    ``keys``: a new backbone's own ``model`` keys (:mod:`attnflow.config.schema` types, e.g.
    ``{"width": Int(64, 1)}``); the built-in backbones' keys are declared in the schema."""

    def wrap(fn: Callable[[dict], TrainableModel]) -> Callable[[dict], TrainableModel]:
        if keys is not None or name not in BACKBONE_KEYS:
            BACKBONE_KEYS[name] = dict(keys or {})
        BACKBONES[name] = Backbone(name, fn)
        return fn

    return wrap


def build_model(config: dict[str, Any]) -> TrainableModel:
    """Build the model a config describes (a full config or just its ``model`` section): a
    :class:`FlowModel` for every backbone but ``rrdb`` (an L1-trained SR network)."""
    m = validate_model(config.get("model", config))
    if m["backbone"] not in BACKBONES:
        raise ConfigError(f"unknown model.backbone {m['backbone']!r}; available: {', '.join(sorted(BACKBONES))}")
    try:
        return BACKBONES[m["backbone"]].build(m)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # a value the layers refuse (e.g. a size 2**levels does not divide)
        raise ConfigError(f"model (backbone {m['backbone']!r}): {err}") from err


def _priors(m: dict):
    if m["prior"] == "gaussian":
        return gaussian_priors()
    try:
        return ar_priors(hidden=m["prior_hidden"], layers=m["prior_layers"], geometry=m["prior_geometry"])
    except ValueError as err:
        raise ConfigError(f"model.prior_geometry: {err}") from err


def _unconditional(coupling: Callable[[dict], Any]) -> Callable[[dict], FlowModel]:
    """The builder of an unconditional backbone whose coupling network ``coupling(m)`` gives."""

    def build(m: dict) -> FlowModel:
        return build_unconditional(m["image_shape"], levels=m["levels"], steps=m["steps"], coupling=coupling(m),
                                   prior=_priors(m), attention=attention_from_config(m), n_bins=m["n_bins"])

    return build


register_backbone("glow")(_unconditional(lambda m: glow_coupling(m["hidden"])))
register_backbone("marflow")(_unconditional(lambda m: mixture_coupling(
    hidden=m["hidden"], components=m["components"], blocks=m["blocks"], heads=m["coupling_heads"],
    dropout=m["dropout"], attention_dropout=m["attention_dropout"])))
register_backbone("srflow")(build_srflow)
register_backbone("fullglow")(build_fullglow)
# the plain L1-trained RRDB SR network that SRFlow's encoder is pretrained as (not a flow)
register_backbone("rrdb")(build_rrdb)
