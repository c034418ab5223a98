"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of tensors and plain Python values (model, optimiser and scheduler state,
step, RNG states, config). ``save_checkpoint`` writes to a temporary file in the same folder,
fsyncs and renames, so a crash or Ctrl-C mid-write leaves the previous checkpoint intact.
``load_checkpoint`` uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import validate_config
from ..models import FlowModel, build_model

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "rng_state",
    "set_rng_state",
    "CheckpointError",
]


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not an attnflow checkpoint."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomically write ``state`` to ``path`` (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    if path.is_dir():
        hint = next((c for c in (path / "checkpoints" / "last.pt", path / "last.pt") if c.is_file()), None)
        raise CheckpointError(
            f"checkpoint {path} is a directory, not a checkpoint file"
            + (f"; did you mean {hint}?" if hint else " (give a .pt file, e.g. RUN/checkpoints/last.pt)")
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: not a readable checkpoint
        raise CheckpointError(
            f"checkpoint {path} could not be read as an attnflow checkpoint "
            f"(tensors and plain values only): {type(err).__name__}: {err}"
        ) from err
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"checkpoint {path} is not an attnflow checkpoint (no model/config)")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches, as tensors and plain values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def load_model(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[FlowModel, dict, dict]:
    """``(model in eval mode, config, checkpoint dict)`` from a checkpoint file; the config is the
    stored one, checked and completed (a key added since the run was stored gets its default)."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    config = validate_config(state["config"])
    model = build_model(config)
    load_weights(model, state["model"], checkpoint)
    model.to(device).eval()
    return model, config, state


def load_weights(model: torch.nn.Module, weights: dict, where: str | Path) -> None:
    """``model.load_state_dict(weights)``; a mismatch is a one-line :class:`CheckpointError`."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError) as err:
        text = str(err)
        counts = {"missing": 0, "unexpected": 0, "of another shape": 0}
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("Missing key(s)"):
                counts["missing"] += len(re.findall(r'"[^"]*"', line))
            elif line.startswith("Unexpected key(s)"):
                counts["unexpected"] += len(re.findall(r'"[^"]*"', line))
            elif line.startswith("size mismatch for"):
                counts["of another shape"] += 1
        parts = [f"{n} {what}" for what, n in counts.items() if n]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else (lines[0] if lines else type(err).__name__)
        raise CheckpointError(
            f"checkpoint {where}: its weights do not fit the model its config describes "
            f"(parameters: {', '.join(parts) or 'mismatch'}; e.g. {first[:160]}...); "
            f"the file was edited, or its config does not belong to these weights"
        ) from err

