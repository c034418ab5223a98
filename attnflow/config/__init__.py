"""Configurations: defaults, YAML presets shipped in the package, and ``--set a.b=value`` overrides.

A config is a nested dict with three sections, ``model``, ``data`` and ``train``. A preset names
only what differs from :data:`DEFAULTS`. Every key's type, default and allowed values are declared
once, in :mod:`attnflow.config.schema`; :func:`validate_config` (which :func:`resolve_config` ends
with) fills in the defaults, including the chosen backbone's own ``model`` keys, and refuses an
unknown key or a bad value with a one-line :class:`ConfigError` (a typo must not be silently ignored).

Presets are composed (``presets/``): a file may ``extends:`` another (a path without ``.yaml``,
relative to ``presets/``) and override it, and a file that lists ``variants:`` (e.g.
``[none, imap, itrans]``) stands for one preset per variant, ``NAME-VARIANT``, made by applying the
overlay ``presets/attention/VARIANT.yaml``. Files under ``bases/`` and ``attention/`` are building
blocks, not presets.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .schema import REMOVED_KEYS, ConfigError, defaults, validate_config, validate_model

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "list_presets",
    "load_preset",
    "load_config",
    "merge",
    "apply_overrides",
    "resolve_config",
    "REMOVED_KEYS",
    "validate_config",
    "validate_model",
]


#: the default config: every top-level, data and train key, and the model keys all backbones share
DEFAULTS: dict[str, Any] = defaults()


PRESET_VARIANTS_DIR = "attention"


def _preset_dir():
    return resources.files("attnflow.config") / "presets"


def _preset_files() -> list[str]:
    """Top-level preset files (without ``.yaml``); ``bases/`` and ``attention/`` are not presets."""
    return sorted(p.name[: -len(".yaml")] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _read_preset_file(name: str, seen: tuple[str, ...] = ()) -> dict:
    """A preset file with its ``extends:`` chain applied (not merged with :data:`DEFAULTS`)."""
    if name in seen:
        raise ConfigError(f"preset {seen[0]}: 'extends' loops: {' -> '.join((*seen, name))}")
    path = _preset_dir().joinpath(*f"{name}.yaml".split("/"))
    if not path.is_file():
        raise ConfigError(f"preset {seen[-1] if seen else name}: extends {name!r}, which does not exist")
    data = _read_yaml(path.read_text(), f"preset file {name}.yaml")
    parent = data.pop("extends", None)
    data.pop("variants", None)
    if parent is None:
        return data
    return merge(_read_preset_file(str(parent), (*seen, name)), data)


def _presets() -> dict[str, tuple[str, str | None]]:
    """Preset name -> (file, attention variant or None)."""
    names: dict[str, tuple[str, str | None]] = {}
    for stem in _preset_files():
        text = (_preset_dir() / f"{stem}.yaml").read_text()
        variants = _read_yaml(text, f"preset file {stem}.yaml").get("variants")
        if variants:
            for v in variants:
                names[f"{stem}-{v}"] = (stem, str(v))
        else:
            names[stem] = (stem, None)
    return names


def list_presets() -> list[str]:
    """Names of the shipped presets (a file with ``variants`` gives one name per variant)."""
    return sorted(_presets())


def load_preset(name: str) -> dict:
    """The full config (defaults merged) of a shipped preset."""
    presets = _presets()
    if name not in presets:
        raise ConfigError(f"unknown preset {name!r}; available presets: {', '.join(sorted(presets))}")
    stem, variant = presets[name]
    data = _read_preset_file(stem)
    if variant is not None:
        data = merge(data, _read_preset_file(f"{PRESET_VARIANTS_DIR}/{variant}"))
    cfg = merge(DEFAULTS, data)
    cfg["name"] = name
    return cfg


def load_config(path: str | Path) -> dict:
    """The full config (defaults merged) from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    return merge(DEFAULTS, _read_yaml(path.read_text(), str(path)))


def merge(base: dict, update: dict, *, prefix: str = "") -> dict:
    """Deep-merge ``update`` into a copy of ``base`` (keys are checked by :func:`validate_config`).

    A plain value given for a top-level section (``train=5``) is an error naming its keys."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = merge(out[key], value, prefix=f"{path}.")
        elif isinstance(out.get(key), dict) and out[key] and not prefix:
            keys = ", ".join(sorted(out[key]))
            raise ConfigError(
                f"{path!r} is a config section, not a value; set one of its keys "
                f"({path}.KEY=VALUE with KEY one of: {keys}), got {path}={value!r}"
            )
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML: ``2``, ``1e-3``, ``[4, 49]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        update: dict = {}
        node = update
        keys = dotted.strip().split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        cfg = merge(cfg, update)
    return cfg


def resolve_config(
    preset: str | None = None, config_file: str | None = None, overrides: Iterable[str] = ()
) -> dict:
    """The validated config of a preset or file (not both; neither means the ``mnist`` preset),
    with the overrides applied."""
    if preset and config_file:
        raise ConfigError("give either --preset or --config, not both")
    if config_file:
        cfg = load_config(config_file)
    else:
        cfg = load_preset(preset or "mnist")
    return validate_config(apply_overrides(cfg, overrides))
