"""``build_model(config)``: one builder from a config for every backbone, and the backbones' keys.

Each backbone registers its builder and the ``model`` keys it adds to the shared ones of
:data:`attnflow.config.DEFAULTS` (with their defaults). :func:`complete_config` fills those defaults
in and refuses a key the chosen backbone does not use, naming the backbone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import DEFAULTS, ConfigError
from .base import FlowModel, TrainableModel
from .fullglow import build_fullglow
from .glow import build_unconditional, gaussian_priors, glow_coupling
from .marflow import ar_priors, mixture_coupling
from .options import attention_from_config
from .rrdb import build_rrdb
from .srflow import build_srflow

__all__ = ["Backbone", "BACKBONES", "register_backbone", "build_model", "complete_config"]


@dataclass(frozen=True)
class Backbone:
    """A buildable backbone: ``build(model_section) -> model`` and the keys it adds."""

    name: str
    build: Callable[[dict], TrainableModel]
    keys: dict[str, Any] = field(default_factory=dict)


BACKBONES: dict[str, Backbone] = {}


def register_backbone(name: str, keys: dict[str, Any] | None = None):
    """Decorator: make ``fn(model_section) -> model`` buildable as ``model.backbone: name``;
    ``keys`` are the backbone's own ``model`` keys with their defaults."""

    def wrap(fn: Callable[[dict], TrainableModel]) -> Callable[[dict], TrainableModel]:
        BACKBONES[name] = Backbone(name, fn, dict(keys or {}))
        return fn

    return wrap


def _backbone(m: dict) -> Backbone:
    name = m.get("backbone")
    if name not in BACKBONES:
        raise ConfigError(f"unknown model.backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def complete_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose ``model`` section has its backbone's defaults filled in.

    A ``model`` key that neither every backbone shares nor the chosen backbone adds is a
    :class:`~attnflow.config.ConfigError` naming the backbone and its valid keys.
    """
    cfg = copy.deepcopy(config)
    m = cfg["model"]
    spec = _backbone(m)
    shared = DEFAULTS["model"]
    unknown = sorted(set(m) - set(shared) - set(spec.keys))
    if unknown:
        valid = ", ".join(sorted(set(shared) | set(spec.keys)))
        key = unknown[0]
        owners = sorted(b.name for b in BACKBONES.values() if key in b.keys)
        if not owners:
            raise ConfigError(
                f"unknown config key 'model.{key}' (backbone {spec.name!r}); valid keys here: {valid}"
            )
        raise ConfigError(
            f"model.{key}: backbone {spec.name!r} does not use this key (it belongs to "
            f"{', '.join(owners)}); the keys of {spec.name!r} are: {valid}"
        )
    cfg["model"] = {**{k: copy.deepcopy(v) for k, v in shared.items()}, **copy.deepcopy(spec.keys), **m}
    return cfg


def build_model(config: dict[str, Any]) -> TrainableModel:
    """Build the model a config describes (a full config or just its ``model`` section): a
    :class:`FlowModel` for every backbone but ``rrdb`` (an L1-trained SR network)."""
    section = config.get("model", config)
    m = complete_config({"model": section})["model"]
    spec = _backbone(m)
    try:
        return spec.build(m)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"model config for backbone {spec.name!r} is incomplete or wrong: {err}") from err


# prior_geometry: the ConvLSTM kernel/dilation per level; "reference" is the official mARFlow code's
# (5/2, 5/1, then 3/1), "uniform" 5/1 everywhere (what attnflow used before 0.2)
_PRIOR_KEYS = {"prior": "ar", "prior_hidden": 32, "prior_layers": 3, "prior_geometry": "reference"}


def _priors(m: dict):
    if m["prior"] == "ar":
        try:
            return ar_priors(hidden=int(m["prior_hidden"]), layers=int(m["prior_layers"]),
                             geometry=str(m["prior_geometry"]))
        except ValueError as err:
            raise ConfigError(f"model.prior_geometry: {err}") from err
    if m["prior"] == "gaussian":
        return gaussian_priors()
    raise ConfigError(f"model.prior must be 'ar' or 'gaussian', got {m['prior']!r}")


@register_backbone("glow", _PRIOR_KEYS)
def _build_glow(m: dict) -> FlowModel:
    return build_unconditional(
        m["image_shape"],
        levels=int(m["levels"]),
        steps=int(m["steps"]),
        coupling=glow_coupling(int(m["hidden"])),
        prior=_priors(m),
        attention=attention_from_config(m),
        n_bins=int(m["n_bins"]),
    )


@register_backbone(
    "marflow",
    {"components": 32, "blocks": 10, "coupling_heads": 4, "dropout": 0.2,
     # attention dropout on the output: test bits/dim indistinguishable from the reference's (on the
     # weights) over 3 seeds, and the CPU step is faster (docs/results.md, section 2)
     "attention_dropout": "output",
     **_PRIOR_KEYS},
)
def _build_marflow(m: dict) -> FlowModel:
    return build_unconditional(
        m["image_shape"],
        levels=int(m["levels"]),
        steps=int(m["steps"]),
        coupling=mixture_coupling(
            hidden=int(m["hidden"]),
            components=int(m["components"]),
            blocks=int(m["blocks"]),
            heads=int(m["coupling_heads"]),
            dropout=float(m["dropout"]),
            attention_dropout=str(m["attention_dropout"]),
        ),
        prior=_priors(m),
        attention=attention_from_config(m),
        n_bins=int(m["n_bins"]),
    )


register_backbone("srflow", {"scale": 8, "cond": {}})(build_srflow)
register_backbone("fullglow", {"prior": "gaussian", "cond": {}})(build_fullglow)
# the plain L1-trained RRDB SR network that SRFlow's encoder is pretrained as (not a flow); it uses
# model.scale, image_shape, n_bins and model.cond (features, blocks, growth), no shared flow key
register_backbone("rrdb", {"scale": 8, "cond": {}})(build_rrdb)
