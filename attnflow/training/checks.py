"""Value checks of a complete config, run before any work starts: each bad value is a
:class:`~attnflow.config.ConfigError` naming the key, the value and what is allowed."""

from __future__ import annotations

import math
from typing import Any

from ..config import DEFAULTS, ConfigError, drop_removed_keys

__all__ = ["check_config", "check_device"]

# train keys: (minimum, allow None)
_TRAIN_INTS = {
    "steps": (1, False),
    "batch_size": (1, False),
    "eval_batch_size": (1, False),
    "eval_every": (1, False),
    "checkpoint_every": (1, False),
    "log_every": (1, False),
    "n_samples": (1, False),
    "eval_max_batches": (1, True),
    "warmup_steps": (0, False),
    "max_bad_steps": (0, False),
    "num_workers": (0, False),
    "seed": (None, False),
}
# model keys that count something (must be >= 1); other int-valued model keys must be >= 0
_MODEL_POSITIVE = {"levels", "steps", "hidden", "heads", "patches", "components", "blocks",
                   "coupling_heads", "prior_hidden", "scale"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(key: str, value: Any, minimum: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not _is_int(value) or (minimum is not None and value < minimum):
        what = "an integer" if minimum is None else f"an integer >= {minimum}"
        if allow_none:
            what += " or null"
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def _number(key: str, value: Any, minimum: float, *, strict: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string; float() takes it
        try:
            value = float(value)
        except ValueError:
            pass
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        raise ConfigError(
            f"{key} must be a finite number {'>' if strict else '>='} {minimum:g}"
            f"{' or null' if allow_none else ''}, got {value!r}"
        )


def check_config(config: dict) -> dict:
    """Check the values of a complete config (``complete_config``'s output); returns it, without
    the settings of removed features (:data:`~attnflow.config.REMOVED_KEYS`) it held switched off."""
    from ..models.registry import BACKBONES

    for section in ("model", "data", "train"):
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"config section {section!r} must be a mapping of keys, got {config.get(section)!r}")
    drop_removed_keys(config)  # a stored run's config may still hold them, switched off
    t = config["train"]
    for key, (minimum, allow_none) in _TRAIN_INTS.items():
        if key in t:
            _int(f"train.{key}", t[key], minimum, allow_none)
    _number("train.lr", t.get("lr"), 0, strict=True)
    _number("train.weight_decay", t.get("weight_decay", 0), 0)
    _number("train.grad_clip", t.get("grad_clip"), 0, allow_none=True)
    for key in ("invertible_backprop", "device_guard"):
        if key in t and not isinstance(t[key], bool):
            raise ConfigError(f"train.{key} must be true or false, got {t[key]!r}")
    if t.get("autocast") is not None and t["autocast"] not in ("bf16", "fp16"):
        raise ConfigError(f"train.autocast must be bf16, fp16 or null (off), got {t['autocast']!r}")
    temps = t.get("sample_temperatures")
    if not isinstance(temps, list) or not temps:
        raise ConfigError(f"train.sample_temperatures must be a non-empty list of numbers >= 0, got {temps!r}")
    for v in temps:
        _number("train.sample_temperatures", v, 0)
    f = t.get("freeze_conditioner_until", 0)
    _number("train.freeze_conditioner_until", f, 0, allow_none=True)
    if f is not None and float(f) > 1:
        raise ConfigError(f"train.freeze_conditioner_until must be a fraction of training in [0, 1], got {f!r}")
    for v in t.get("lr_milestones") or []:
        _number("train.lr_milestones", v, 0)
        if float(v) > 1:
            raise ConfigError(f"train.lr_milestones must be fractions in [0, 1], got {v!r}")

    m = config["model"]
    spec = BACKBONES.get(m.get("backbone"))
    defaults = {**DEFAULTS["model"], **(spec.keys if spec else {})}
    for key, default in defaults.items():
        if not _is_int(default) or key not in m:
            continue
        minimum = 1 if key in _MODEL_POSITIVE else 0
        if key == "n_bins":
            minimum = 2
        value = m[key]
        if key == "patches" and isinstance(value, list):
            for v in value:
                _int("model.patches", v, minimum)
            continue
        _int(f"model.{key}", value, minimum)
    if m.get("n_bins", 256) > 256:
        raise ConfigError(f"model.n_bins must be in 2..256 (the data are 8-bit images), got {m['n_bins']!r}")
    if m.get("n_bins", 256) != 256 and m.get("backbone") not in ("marflow", "glow"):
        raise ConfigError(
            f"model.n_bins={m['n_bins']}: fewer bins are applied to the unconditional backbones "
            f"(marflow, glow) only; the {m.get('backbone')!r} backbone's conditions and metrics are "
            f"8-bit: use n_bins 256"
        )
    if "dropout" in m:
        d = m["dropout"]
        _number("model.dropout", d, 0)
        if float(d) >= 1:
            raise ConfigError(f"model.dropout must be a number in [0, 1), got {d!r}")
    shape = m.get("image_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(s) and s >= 1 for s in shape)):
        raise ConfigError(f"model.image_shape must be [channels, height, width] of integers >= 1, got {shape!r}")
    return config


def check_device(name: Any, what: str = "--device") -> str:
    """``name`` if it is a device torch can use here; else a ConfigError saying what is allowed."""
    import torch

    text = str(name)
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"{what} {text!r} is not a device; use cpu, cuda or cuda:N") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {text!r}: CUDA is not available on this machine; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{what} {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 ... cuda:{torch.cuda.device_count() - 1})"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"{what} {text!r}: MPS is not available on this machine; use cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"{what} {text!r}: not supported; use cpu, cuda or cuda:N")
    return text
