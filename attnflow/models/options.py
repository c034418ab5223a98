"""The :class:`AttentionConfig` of a checked ``model`` section (attention, position, mask, heads, ...)."""

from __future__ import annotations

from ..config import ConfigError
from .steps import AttentionConfig

__all__ = ["attention_from_config"]


def attention_from_config(m: dict) -> AttentionConfig:
    """The attention a ``model`` section asks for; a name the layers do not know is a ConfigError."""
    try:
        return AttentionConfig(
            kind=m["attention"],
            position=m["position"],
            mask=m["mask"],
            heads=m["heads"],
            patches=m["patches"],
            imap_attention=m["imap_attention"],
            itrans_scale=m["itrans_scale"] == "learned",
            itrans_init_mixing=m["itrans_init_mixing"],
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from err
