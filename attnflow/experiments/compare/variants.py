"""The variants of a comparison: lists of ``--set``-style overrides on one config, each named.

Either the cross product of axes (:func:`cross_variants`: attention kind, mask, position, heads,
patches, any key) or named variants given one by one (:func:`parse_variant`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["AXES", "Variant", "cross_variants", "parse_variant", "safe_name"]

#: axis name -> config key (the CLI's --attentions, --masks, --positions, --heads, --patches)
AXES = {
    "attention": "model.attention",
    "mask": "model.mask",
    "position": "model.position",
    "heads": "model.heads",
    "patches": "model.patches",
}
_WORDS = ("model.attention", "model.mask", "model.position")  # values that name themselves

Variant = tuple[str, list[str]]  # (name, overrides "KEY=VALUE")


def safe_name(name: str) -> str:
    """``name`` with every character that does not belong in a folder name replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)


def cross_variants(axes: Sequence[tuple[str, Sequence[Any]]]) -> list[Variant]:
    """The cross product of ``axes`` (``[(config key, values)]``, in order) as named variants.

    A name joins one part per axis with ``-``: the value itself for attention, mask and position
    (``imap-channel-pos2``), else the key's last part and the value (``heads2``, ``patches16``).
    """
    if not axes:
        raise ValueError("compare: give at least one axis or variant")
    for key, values in axes:
        if not values:
            raise ValueError(f"compare: the axis {key} has no values")
    variants = []
    for combo in itertools.product(*[[(key, v) for v in values] for key, values in axes]):
        parts = [str(v) if key in _WORDS else f"{key.split('.')[-1]}{v}" for key, v in combo]
        variants.append((safe_name("-".join(parts)), [f"{key}={v}" for key, v in combo]))
    return variants


def parse_variant(text: str) -> Variant:
    """``NAME=KEY=VALUE,KEY=VALUE`` -> ``(NAME, ["KEY=VALUE", ...])``. A key without a dot is a
    ``model`` key (``attention=imap`` = ``model.attention=imap``); ``NAME=`` is the config as is.
    Commas inside brackets (``patches=[4,49]``) belong to the value."""
    name, sep, rest = text.partition("=")
    if not sep or not name or safe_name(name) != name:
        raise ValueError(
            f"--variants: expected NAME=KEY=VALUE,KEY=VALUE (NAME of letters, digits, . _ + -), got {text!r}"
        )
    overrides = []
    for item in (p for p in re.split(r",(?=[A-Za-z_][\w.]*=)", rest) if p):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--variants {name}: expected KEY=VALUE, got {item!r}")
        overrides.append(f"{key if '.' in key else 'model.' + key}={value}")
    return name, overrides
