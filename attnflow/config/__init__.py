"""Configurations: defaults, YAML presets shipped in the package, and ``--set a.b=value`` overrides.

A config is a nested dict with three sections, ``model``, ``data`` and ``train``. A preset names
only what differs from :data:`DEFAULTS`; unknown keys are errors (a typo must not be silently
ignored). The ``model`` section holds the keys every backbone shares here; the keys of one backbone
(and their defaults) belong to that backbone and are checked by
:func:`attnflow.models.complete_config`, which names the backbone when a key is not its own.

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
    "drop_removed_keys",
]


class ConfigError(ValueError):
    """A bad preset name, config file, key or value."""


DEFAULTS: dict[str, Any] = {
    "name": "custom",
    "paper_params_M": None,  # a paper row's parameter count (millions), shown by `attnflow presets --params`
    "model": {  # shared keys; each backbone adds its own (attnflow.models.complete_config)
        "backbone": "marflow",  # marflow | glow | srflow | fullglow | rrdb (L1 SR network)
        "image_shape": [1, 28, 28],
        "n_bins": 256,
        "levels": 3,
        "steps": 4,
        "hidden": 96,  # coupling network width (the paper's C)
        # the paper's attention
        "attention": "none",  # none | imap | itrans
        "position": "pos3",  # pos1 | pos2 | pos3 | pos4
        "mask": "spatial_channel",
        "heads": 4,
        "patches": 4,  # an int, or one per level
        "imap_attention": "spatial",
        "itrans_scale": "learned",  # learned: W's free positive scale; none: rows sum to 1 (contracts)
        # iTrans: the attention's weight m in W = s((1-m)I + mA) at the start; 0.1 starts near the
        # identity (None: theta = 0, m = 0.371, which starts SRFlow 2/8 3 bits/dim worse; docs/results.md)
        "itrans_init_mixing": 0.1,
    },
    "data": {
        "name": "mnist",
        "root": None,
        "pad_to": None,
        "grey_to_rgb": False,
        "flip": False,
        "test_split": "test",  # the split evaluated during training (Cityscapes: val)
        "options": {},
    },
    "train": {
        "steps": 2000,
        "batch_size": 32,
        "eval_batch_size": 128,
        "optimizer": "adamax",  # adam | adamax
        "lr": 8.0e-4,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "warmup_steps": 200,
        "lr_milestones": [],  # fractions of training at which the lr halves (SRFlow)
        # fraction of training during which the model's conditioner (SRFlow's RRDB encoder) is
        # frozen; SRFlow's train_RRDB_delay (0.5 with a pretrained RRDB); 0: trains from the start
        "freeze_conditioner_until": 0.0,
        "grad_clip": 100.0,
        "max_bad_steps": 25,
        "log_every": 10,
        "eval_every": 500,
        "eval_max_batches": None,
        "checkpoint_every": 500,
        "sample_temperatures": [0.5, 0.7, 1.0],
        "n_samples": 64,
        "seed": 0,
        "num_workers": 0,
        "device": "cpu",
        "tf32": True,  # CUDA: TensorFloat-32 matmuls and convolutions (cuDNN's default for convs)
        "compile": False,  # torch.compile the model's training forward
        # bf16 | fp16: the conditioner networks (coupling, injector, encoder networks) of the
        # training step run under autocast in that precision; log-dets, the mixture CDF, the priors
        # and evaluation stay in float32 (null: off). Faster on GPUs and on CPUs with bf16 units.
        "autocast": None,
        # recompute each step's activations from its output on the backward pass (inverse + re-run):
        # memory that does not grow with depth, for about one more forward per step
        "invertible_backprop": False,
        # decide the non-finite guard's skip on the device, without a host read inside the step
        # (for GPUs; its counters are read at the log, evaluation and checkpoint points)
        "device_guard": False,
    },
}


#: settings of removed features, with how to get the same result now. A stored run's config (an
#: old checkpoint or config.yaml) may still hold one switched off (0 or null): it is dropped; a
#: setting switched on is a ConfigError saying what to do instead.
REMOVED_KEYS: dict[str, str] = {
    "train.pretrain_conditioner_steps": (
        "the conditioner pretraining inside a run was removed (0.17 dB lower PSNR at equal time); do it "
        "in two runs: train the conditioner alone (e.g. attnflow train --preset sr-demo-rrdb --out RUN), "
        "then start this model from it with --set model.cond.pretrained=RUN/checkpoints/last.pt"
    ),
}


def _check_removed(dotted: str, value: Any) -> None:
    if value not in (0, None):
        raise ConfigError(f"{dotted}={value!r}: {REMOVED_KEYS[dotted]}")


def drop_removed_keys(config: dict) -> dict:
    """``config``, changed in place, without the :data:`REMOVED_KEYS` it holds switched off."""
    for dotted in REMOVED_KEYS:
        section, key = dotted.split(".")
        node = config.get(section)
        if isinstance(node, dict) and key in node:
            _check_removed(dotted, node.pop(key))
    return config


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
    return _deep_update(_read_preset_file(str(parent), (*seen, name)), data)


def _deep_update(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
        data = _deep_update(data, _read_preset_file(f"{PRESET_VARIANTS_DIR}/{variant}"))
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
    """Deep-merge ``update`` into a copy of ``base``; keys missing from ``base`` are errors.

    Free-form sections (``model.cond``, ``data.options``) accept any keys.
    """
    out = copy.deepcopy(base)
    free = {"model", "model.cond", "data.options"}  # model keys: checked per backbone
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in out and path in REMOVED_KEYS:  # an old run's config: dropped when switched off
            _check_removed(path, value)
            continue
        if key not in out and prefix.rstrip(".") not in free:
            valid = ", ".join(sorted(f"{prefix}{k}" for k in out))
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {valid}")
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
    """Preset or file (not both; neither means the ``mnist`` preset), then overrides."""
    if preset and config_file:
        raise ConfigError("give either --preset or --config, not both")
    if config_file:
        cfg = load_config(config_file)
    else:
        cfg = load_preset(preset or "mnist")
    return apply_overrides(cfg, overrides)
