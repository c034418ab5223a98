"""The configuration schema: every key of every section, with its type, default and allowed values,
declared once here and checked once, by :func:`validate_config`, when a config is loaded.

A section is a dict ``name -> Key``. The ``model`` section holds the keys every backbone shares
(:data:`MODEL`) plus the keys of the chosen backbone (:data:`BACKBONES`), which may also narrow a
shared key (``fullglow`` allows only the Gaussian prior). ``model.cond`` is a backbone's own nested
section. After :func:`validate_config` every value has its declared type (``int``, ``float``,
``bool``, ``str``, lists of them), so the code reads ``config["train"]["seed"]`` without re-casting.
Choices that the layers themselves check (``model.attention``, ``position``, ``mask``, ...) are
typed here and checked by the layer that takes them.
"""

from __future__ import annotations

import copy
import math
from typing import Any

__all__ = [
    "ConfigError", "Key", "Int", "Float", "Bool", "Str", "Path", "Choice", "List", "IntOrList", "Mapping",
    "Section", "REMOVED_KEYS", "check_removed", "TOP", "MODEL", "DATA", "TRAIN", "BACKBONES", "defaults", "validate_config", "validate_model",
]


class ConfigError(ValueError):
    """A bad preset name, config file, key or value."""


class Key:
    """One config key: its default and the values it accepts (``None`` too when ``optional``).

    :meth:`parse` returns the value with its declared type, or raises a one-line ConfigError:
    ``"<name> must be <what>, got <value>"``."""

    what = "a value"

    def __init__(self, default: Any, *, optional: bool = False, what: str | None = None, note: str = "") -> None:
        self.default, self.optional, self.note = default, optional, note
        if what is not None:
            self.what = what

    def convert(self, value: Any) -> Any:
        """The typed value, or raise ValueError / TypeError."""
        raise NotImplementedError

    def parse(self, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        try:
            return self.convert(value)
        except (TypeError, ValueError) as err:
            text = f"{name} must be {self.what}{' or null' if self.optional else ''}, got {value!r}"
            raise ConfigError(text + (f"; {self.note}" if self.note else "")) from err


def _bounds(low: Any, high: Any, *, integer: bool, open_high: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {low}..{high}" if integer else f" in [{low:g}, {high:g}{')' if open_high else ']'}"
    return f" >= {low:g}" if low is not None else (f" <= {high:g}" if high is not None else "")


class Int(Key):
    """An integer (not a bool, not 2.0) in ``[low, high]``."""

    def __init__(self, default: Any, low: int | None = None, high: int | None = None, **kw: Any) -> None:
        self.low, self.high = low, high
        super().__init__(default, what=kw.pop("what", "an integer" + _bounds(low, high, integer=True)), **kw)

    def convert(self, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(value)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(value)
        return value


class Float(Key):
    """A finite number in ``[low, high]`` (``(low, ...`` with ``above``, ``..., high)`` with
    ``below``); YAML's ``1e-3`` (read as a string) is accepted."""

    def __init__(self, default: Any, low: float | None = None, high: float | None = None, *,
                 above: bool = False, below: bool = False, **kw: Any) -> None:
        self.low, self.high, self.above, self.below = low, high, above, below
        if above:
            what = f"a finite number > {low:g}"
        elif low is not None and high is not None:
            what = "a number" + _bounds(low, high, integer=False, open_high=below)
        else:
            what = "a finite number" + _bounds(low, high, integer=False)
        super().__init__(default, what=kw.pop("what", what), **kw)

    def convert(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(value)
        out = float(value)
        if not math.isfinite(out):
            raise ValueError(value)
        if self.low is not None and (out <= self.low if self.above else out < self.low):
            raise ValueError(value)
        if self.high is not None and (out >= self.high if self.below else out > self.high):
            raise ValueError(value)
        return out


class Bool(Key):
    what = "true or false"

    def convert(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise TypeError(value)
        return value


class Str(Key):
    what = "a string"

    def convert(self, value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value


class Path(Str):
    """A file or folder path; an empty string is null."""

    what = "a path"

    def parse(self, name: str, value: Any) -> Any:
        return super().parse(name, None if value == "" else value)


class Choice(Str):
    """One of ``choices`` (compared without case; the stored value is the declared spelling)."""

    def __init__(self, default: Any, choices: tuple[str, ...], **kw: Any) -> None:
        self.choices = choices
        quoted = [repr(c) for c in choices]
        listed = ", ".join(quoted) if kw.get("optional") or len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        super().__init__(default, what=kw.pop("what", listed), **kw)

    def convert(self, value: Any) -> str:
        lowered = {c.lower(): c for c in self.choices}
        key = super().convert(value).lower()
        if key not in lowered:
            raise ValueError(value)
        return lowered[key]


class List(Key):
    """A list of ``item`` values, of ``length`` items (or at least ``min_length``)."""

    def __init__(self, item: Key, default: Any, *, length: int | None = None, min_length: int = 0, **kw: Any) -> None:
        self.item, self.length, self.min_length = item, length, min_length
        super().__init__(default, what=kw.pop("what", f"a list, each item {item.what}"), **kw)

    def convert(self, value: Any) -> list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(value)
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_length:
            raise ValueError(value)
        return [self.item.convert(v) for v in value]


class IntOrList(Int):
    """An integer, or a list of them (one per level)."""

    def __init__(self, default: Any, low: int | None = None, **kw: Any) -> None:
        super().__init__(default, low, what=f"an integer{_bounds(low, None, integer=True)} or a list of them", **kw)

    def convert(self, value: Any) -> int | list[int]:
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(value)
            return [super(IntOrList, self).convert(v) for v in value]
        return super().convert(value)


class Mapping(Key):
    """A free-form mapping (its keys are checked by whoever reads them)."""

    what = "a mapping of keys to values"

    def convert(self, value: Any) -> dict:
        if not isinstance(value, dict):
            raise TypeError(value)
        return copy.deepcopy(value)


class Section(Key):
    """A nested section with its own keys (a backbone's ``model.cond``); unknown keys are errors."""

    what = "a mapping of keys to values"

    def __init__(self, keys: dict[str, Key], owner: str = "") -> None:
        self.keys, self.owner = keys, owner
        super().__init__({k: key.default for k, key in keys.items()})

    def parse(self, name: str, value: Any) -> dict:
        given = {} if value is None else value
        if not isinstance(given, dict):
            raise ConfigError(f"{name} must be {self.what}, got {value!r}")
        unknown = sorted(set(given) - set(self.keys))
        if unknown:
            owner = f" for backbone {self.owner!r}" if self.owner else ""
            raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}{owner}; valid keys: {', '.join(self.keys)}")
        return {k: key.parse(f"{name}.{k}", copy.deepcopy(given.get(k, key.default))) for k, key in self.keys.items()}


# ------------------------------------------------------------------------------------------------
# the sections
# ------------------------------------------------------------------------------------------------

TOP: dict[str, Key] = {
    "name": Str("custom"),
    # a paper row's parameter count (millions), shown by `attnflow presets --params`
    "paper_params_M": Float(None, 0, optional=True),
}

#: ``model`` keys every backbone shares.
MODEL: dict[str, Key] = {
    "backbone": Str("marflow"),  # marflow | glow | srflow | fullglow | rrdb (L1 SR network): BACKBONES
    "image_shape": List(Int(1, 1), [1, 28, 28], length=3, what="[channels, height, width] of integers >= 1"),
    "n_bins": Int(256, 2, 256, what="an integer in 2..256 (the data are 8-bit images)"),
    "levels": Int(3, 1),
    "steps": Int(4, 1),
    "hidden": Int(96, 1),  # coupling network width (the paper's C)
    # the paper's attention (the layers check the names)
    "attention": Str("none"),  # none | imap | itrans
    "position": Str("pos3"),  # pos1 | pos2 | pos3 | pos4
    "mask": Str("spatial_channel"),
    "heads": Int(4, 1),
    "patches": IntOrList(4, 1),  # one per level, or the same for all
    "imap_attention": Str("spatial"),
    # learned: W's free positive scale; none: rows sum to 1 (contracts)
    "itrans_scale": Choice("learned", ("learned", "none")),
    # iTrans: the attention's weight m in W = s((1-m)I + mA) at the start; 0.1 starts near the
    # identity (null: theta = 0, m = 0.371, which starts SRFlow 2/8 3 bits/dim worse; docs/results.md)
    "itrans_init_mixing": Float(0.1, optional=True),
}

# prior_geometry: the ConvLSTM kernel/dilation per level; "reference" is the official mARFlow code's
# (5/2, 5/1, then 3/1), "uniform" 5/1 everywhere
_PRIOR = {
    "prior": Choice("ar", ("ar", "gaussian")),
    "prior_hidden": Int(32, 1),
    "prior_layers": Int(3, 0),
    "prior_geometry": Str("reference"),
}
# the RRDB's width (nf), depth (nb) and dense-block growth channels (gc)
_RRDB = {"features": Int(64, 1), "blocks": Int(8, 1), "growth": Int(32, 1)}

#: each backbone's own ``model`` keys (with ``model.cond`` where it has one).
BACKBONES: dict[str, dict[str, Key]] = {
    "glow": _PRIOR,
    "marflow": {
        "components": Int(32, 1),
        "blocks": Int(10, 1),
        "coupling_heads": Int(4, 1),
        "dropout": Float(0.2, 0, 1, below=True),
        # attention dropout on the output: test bits/dim indistinguishable from the reference's (on
        # the weights) over 3 seeds, and the CPU step is faster (docs/results.md, section 2)
        "attention_dropout": Str("output"),  # output | weights
        **_PRIOR,
    },
    "srflow": {
        "scale": Int(8, 1),
        "steps": IntOrList(4, 1),  # flow steps per level: one for all, or a list
        "cond": Section({
            **_RRDB,
            "taps": List(Int(0, 0), [1, 3, 5, 7]),  # 0-based RRDB blocks whose outputs feed the flow (stackRRDB)
            "unconditional_steps": Int(2, 0),  # actnorm + 1x1 conv steps after each squeeze (additionalFlowNoAffine)
            "split": Bool(True),  # split at levels l < L - 1 (SRFlow's rule); false: never split
            "top_prior": Choice("standard", ("standard", "conditional")),  # N(0, I) | Gaussian from LR features
            "eps": Float(1.0e-4, 0, above=True),  # lower bound of the affine scales
            # a pretrained RRDB (an rrdb run's checkpoint or SRFlow's RRDB weights) to start the encoder from
            "pretrained": Path(None, optional=True, what="the path of a weights file"),
        }, "srflow"),
    },
    "fullglow": {
        "prior": Choice("gaussian", ("gaussian",), note="fullglow uses Glow's learned Gaussian priors"),
        "cond": Section({
            "label_mode": Choice("color", ("color", "onehot")),  # uint8 RGB label maps | float [classes, H, W]
            "classes": Int(34, 1),  # one-hot channels (Cityscapes label ids 0..33); ignored for color
            "lambda": Float(1.0e-4, 0),  # weight of log p(labels) in the training objective
            "cond_hidden": Int(128, 1),  # width of the coupling's conditioning convs (reference: 128)
            "cond_mlp": List(Int(1, 1), [32, 64, 48]),  # MLP of the actnorm / 1x1-conv conditioning nets
            "cond_grid": Int(None, 1, optional=True),  # null: flatten the H x W map (reference); g: pool to g x g
            "max_log_scale": Float(3.0, 0, above=True),  # bound of the condition-dependent log-scales
        }, "fullglow"),
    },
    # the plain L1-trained RRDB SR network that SRFlow's encoder is pretrained as (not a flow)
    "rrdb": {
        "scale": Int(8, 1),
        "attention": Choice("none", ("none",), note="backbone 'rrdb' has no attention (it is not a flow)"),
        "cond": Section(dict(_RRDB), "rrdb"),
    },
}

DATA: dict[str, Key] = {
    "name": Str("mnist"),
    "root": Path(None, optional=True, what="a folder path"),
    "pad_to": Int(None, 1, optional=True),
    "grey_to_rgb": Bool(False),
    "flip": Bool(False),
    "test_split": Str("test"),  # the split evaluated during training (Cityscapes: val)
    "options": Mapping({}),  # the dataset's own options (checked by the dataset)
}

TRAIN: dict[str, Key] = {
    "steps": Int(2000, 1),
    "batch_size": Int(32, 1),
    "eval_batch_size": Int(128, 1),
    "optimizer": Choice("adamax", ("adam", "adamax")),
    "lr": Float(8.0e-4, 0, above=True),
    "betas": List(Float(0.9, 0, 1, below=True), [0.9, 0.999], length=2, what="two numbers in [0, 1)"),
    "weight_decay": Float(0.0, 0),
    "warmup_steps": Int(200, 0),
    # fractions of training at which the lr halves (SRFlow)
    "lr_milestones": List(Float(0.5, 0, 1), [], what="a list of fractions in [0, 1]"),
    # fraction of training during which the model's conditioner (SRFlow's RRDB encoder) is frozen;
    # SRFlow's train_RRDB_delay (0.5 with a pretrained RRDB); 0: trains from the start
    "freeze_conditioner_until": Float(0.0, 0, 1, optional=True, what="a fraction of training in [0, 1]"),
    "grad_clip": Float(100.0, 0, optional=True),
    "max_bad_steps": Int(25, 0),
    "log_every": Int(10, 1),
    "eval_every": Int(500, 1),
    "eval_max_batches": Int(None, 1, optional=True),
    "checkpoint_every": Int(500, 1),
    "sample_temperatures": List(Float(1.0, 0), [0.5, 0.7, 1.0], min_length=1,
                                what="a non-empty list of numbers >= 0"),
    "n_samples": Int(64, 1),
    "seed": Int(0),
    "num_workers": Int(0, 0),
    "device": Str("cpu"),  # checked against the machine when the run starts
    "tf32": Bool(True),  # CUDA: TensorFloat-32 matmuls and convolutions (cuDNN's default for convs)
    "compile": Bool(False),  # torch.compile the model's training forward
    # bf16 | fp16: the conditioner networks (coupling, injector, encoder networks) of the training
    # step run under autocast in that precision; log-dets, the mixture CDF, the priors and
    # evaluation stay in float32 (null: off). Faster on GPUs and on CPUs with bf16 units.
    "autocast": Choice(None, ("bf16", "fp16"), optional=True),
    # recompute each step's activations from its output on the backward pass (inverse + re-run):
    # memory that does not grow with depth, for about one more forward per step
    "invertible_backprop": Bool(False),
    # decide the non-finite guard's skip on the device, without a host read inside the step (for
    # GPUs; its counters are read at the log, evaluation and checkpoint points)
    "device_guard": Bool(False),
}

_SECTIONS = {"model": MODEL, "data": DATA, "train": TRAIN}


def defaults() -> dict[str, Any]:
    """The default config: every top-level, data and train key, and the shared model keys."""
    out = {k: copy.deepcopy(key.default) for k, key in TOP.items()}
    for section, keys in _SECTIONS.items():
        out[section] = {k: copy.deepcopy(key.default) for k, key in keys.items()}
    return out


def _parse_section(name: str, keys: dict[str, Key], given: dict) -> dict:
    unknown = sorted(set(given) - set(keys))
    if unknown:
        valid = ", ".join(sorted(f"{name}.{k}" for k in keys))
        raise ConfigError(f"unknown config key '{name}.{unknown[0]}'; valid keys here: {valid}")
    return {k: key.parse(f"{name}.{k}", copy.deepcopy(given.get(k, key.default))) for k, key in keys.items()}


def validate_model(model: dict) -> dict:
    """A checked, typed copy of a ``model`` section, its backbone's defaults filled in.

    A key that neither every backbone shares nor the chosen backbone adds is a ConfigError naming
    the backbone and its keys (and the backbones that do use it)."""
    if not isinstance(model, dict):
        raise ConfigError(f"config section 'model' must be a mapping of keys, got {model!r}")
    name = model.get("backbone", MODEL["backbone"].default)
    if name not in BACKBONES:
        raise ConfigError(f"unknown model.backbone {name!r}; available: {', '.join(sorted(BACKBONES))}")
    keys = {**MODEL, **BACKBONES[name]}
    unknown = sorted(set(model) - set(keys))
    if unknown:
        key, valid = unknown[0], ", ".join(sorted(keys))
        owners = sorted(b for b, own in BACKBONES.items() if key in own)
        if not owners:
            raise ConfigError(f"unknown config key 'model.{key}' (backbone {name!r}); valid keys here: {valid}")
        raise ConfigError(
            f"model.{key}: backbone {name!r} does not use this key (it belongs to {', '.join(owners)}); "
            f"the keys of {name!r} are: {valid}"
        )
    out = _parse_section("model", keys, model)
    if out["n_bins"] != 256 and name not in ("marflow", "glow"):
        raise ConfigError(
            f"model.n_bins={out['n_bins']}: fewer bins are applied to the unconditional backbones "
            f"(marflow, glow) only; the {name!r} backbone's conditions and metrics are 8-bit: use n_bins 256"
        )
    return out


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


def check_removed(dotted: str, value: Any) -> None:
    """Refuse a :data:`REMOVED_KEYS` setting that is switched on (not 0 or null)."""
    if value not in (0, None):
        raise ConfigError(f"{dotted}={value!r}: {REMOVED_KEYS[dotted]}")


def validate_config(config: dict) -> dict:
    """A checked, typed copy of a config: each section's missing keys filled from its defaults,
    unknown keys and bad values refused with a one-line :class:`ConfigError`, and the settings of
    :data:`REMOVED_KEYS` dropped when switched off.

    It is idempotent: a validated config validates to itself."""
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {config!r}")
    config = copy.deepcopy(config)
    for section in _SECTIONS:
        if not isinstance(config.setdefault(section, {}), dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys, got {config[section]!r}")
    for dotted in REMOVED_KEYS:
        section, key = dotted.split(".")
        if key in config[section]:
            check_removed(dotted, config[section].pop(key))
    top = {k: v for k, v in config.items() if k not in _SECTIONS}
    unknown = sorted(set(top) - set(TOP))
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]!r}; valid keys here: {', '.join(sorted([*TOP, *_SECTIONS]))}")
    out = {k: key.parse(k, copy.deepcopy(top.get(k, key.default))) for k, key in TOP.items()}
    out["model"] = validate_model(config["model"])
    out["data"] = _parse_section("data", DATA, config["data"])
    out["train"] = _parse_section("train", TRAIN, config["train"])
    return out
