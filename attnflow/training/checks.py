"""Whether a device named in a config or on the command line can be used on this machine."""

from __future__ import annotations

from typing import Any

from ..config import ConfigError

__all__ = ["check_device"]


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
