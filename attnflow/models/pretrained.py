"""Reading pretrained weights from a file (``torch.load(weights_only=True)``: tensors and plain
values only, never arbitrary objects).

Two kinds of file are understood: an attnflow training checkpoint (a dict with ``"model"``, the
state dict, and ``"config"``) and a plain PyTorch state dict (name -> tensor), e.g. the reference
implementation's ``RRDB_CelebA_8X.pth``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..config import ConfigError

__all__ = ["read_state_dict"]


def read_state_dict(path: str | Path, what: str) -> tuple[dict[str, Tensor], dict | None]:
    """``(state dict, config or None)`` of the weights file ``path``; ``what`` names the setting
    that gave the path (for the one-line :class:`~attnflow.config.ConfigError` on a bad file)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a directory; give a weights file (e.g. RUN/checkpoints/last.pt)")
    if not path.is_file():
        raise ConfigError(f"{what}: {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: not a readable weights file
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ConfigError(
            f"{what}: {path} could not be read as a PyTorch weights file (tensors and plain values "
            f"only): {type(err).__name__}: {first}"
        ) from err
    if isinstance(data, dict) and "model" in data and "config" in data:  # an attnflow checkpoint
        if not isinstance(data["model"], dict) or not isinstance(data["config"], dict):
            raise ConfigError(f"{what}: {path} is not an attnflow checkpoint (no model/config)")
        return dict(data["model"]), data["config"]  # may hold extra states (masks): the caller checks
    if not isinstance(data, dict) or not data or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items()
    ):
        raise ConfigError(
            f"{what}: {path} is neither an attnflow checkpoint nor a state dict (name -> tensor)"
        )
    return dict(data), None
