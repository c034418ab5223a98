"""Reading a backbone's options from a config's ``model`` section: the attention and ``model.cond``."""

from __future__ import annotations

from typing import Any

from ..config import ConfigError
from .steps import AttentionConfig

__all__ = ["attention_from_config", "cond_options"]


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


ITRANS_SCALES = ("learned", "none")


def _itrans_scale(value: str) -> bool:
    if value not in ITRANS_SCALES:
        raise ConfigError(f"model.itrans_scale must be one of {', '.join(ITRANS_SCALES)}, got {value!r}")
    return value == "learned"


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def attention_from_config(m: dict) -> AttentionConfig:
    """The :class:`AttentionConfig` of a ``model`` section (attention, position, mask, heads, ...)."""
    try:
        return AttentionConfig(
            kind=m["attention"],
            position=m["position"],
            mask=m["mask"],
            heads=int(m["heads"]),
            patches=m["patches"],
            imap_attention=m["imap_attention"],
            itrans_scale=_itrans_scale(m.get("itrans_scale", "learned")),
            itrans_init_mixing=_optional_float(m.get("itrans_init_mixing", 0.1)),
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from err
