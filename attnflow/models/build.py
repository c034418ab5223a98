"""``build_model(config)``: one builder from a config for every backbone."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..config import ConfigError
from .glow import build_unconditional, gaussian_priors, glow_coupling
from .steps import AttentionConfig

__all__ = ["build_model", "attention_from_config", "cond_options", "BACKBONES", "register_backbone"]

BACKBONES: dict[str, Callable[[dict], nn.Module]] = {}


def register_backbone(name: str):
    """Decorator: make ``fn(model_config) -> model`` buildable as ``model.backbone: name``."""

    def wrap(fn):
        BACKBONES[name] = fn
        return fn

    return wrap


def cond_options(m: dict, defaults: dict[str, Any], backbone: str) -> dict[str, Any]:
    """A conditional backbone's ``model.cond`` merged over its defaults; unknown keys are errors."""
    given = dict(m.get("cond") or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"model.cond: unknown key(s) {', '.join(unknown)} for backbone {backbone!r}; "
            f"valid keys: {', '.join(defaults)}"
        )
    return {**defaults, **given}


def attention_from_config(m: dict) -> AttentionConfig:
    try:
        return AttentionConfig(
            kind=m["attention"],
            position=m["position"],
            mask=m["mask"],
            heads=int(m["heads"]),
            patches=m["patches"],
            imap_attention=m["imap_attention"],
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def _priors(m: dict):
    if m["prior"] == "ar":
        from .marflow import ar_priors

        return ar_priors(hidden=int(m["prior_hidden"]), layers=int(m["prior_layers"]))
    if m["prior"] == "gaussian":
        return gaussian_priors()
    raise ConfigError(f"model.prior must be 'ar' or 'gaussian', got {m['prior']!r}")


@register_backbone("glow")
def _build_glow(m: dict) -> nn.Module:
    return build_unconditional(
        m["image_shape"],
        levels=int(m["levels"]),
        steps=int(m["steps"]),
        coupling=glow_coupling(int(m["hidden"])),
        prior=_priors(m),
        attention=attention_from_config(m),
        n_bins=int(m["n_bins"]),
    )


@register_backbone("marflow")
def _build_marflow(m: dict) -> nn.Module:
    from .marflow import mixture_coupling

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
        ),
        prior=_priors(m),
        attention=attention_from_config(m),
        n_bins=int(m["n_bins"]),
    )


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build the model a config describes (a full config or just its ``model`` section)."""
    m = config.get("model", config)
    backbone = m.get("backbone")
    if backbone not in BACKBONES:
        _load_optional_backbones()
    if backbone not in BACKBONES:
        raise ConfigError(
            f"unknown model.backbone {backbone!r}; available: {', '.join(sorted(BACKBONES))}"
        )
    try:
        return BACKBONES[backbone](m)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"model config for backbone {backbone!r} is incomplete or wrong: {err}") from None


def _load_optional_backbones() -> None:
    """Import the conditional backbones' modules, which register themselves."""
    import importlib

    for mod in ("srflow", "fullglow"):
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.{mod}":
                raise
