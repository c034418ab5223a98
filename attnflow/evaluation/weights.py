"""Pretrained weights are never downloaded: a user-given path, checked with a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["MissingWeightsError", "require_file", "load_state_dict"]

class MissingWeightsError(FileNotFoundError):
    """A pretrained network's weights were not given or the given file does not exist."""



def require_file(path: str | os.PathLike | None, help_text: str) -> Path:
    if path is None:
        raise MissingWeightsError(help_text)
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeightsError(f"weights file not found: '{p}'. {help_text}")
    return p


def load_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, TorchScript archive, pickled module ...
        raise ValueError(f"could not read {what} from '{path}' as a state dict: {e}") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{what} file '{path}' does not hold a state dict of tensors (got {type(obj).__name__})")
    return obj


