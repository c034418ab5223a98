"""The optimiser and the learning-rate schedule (linear warm-up, halvings at fractions of training)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import ConfigError

__all__ = ["make_optimizer", "lr_factor", "pretraining_lr_factor"]


def make_optimizer(model: nn.Module, t: dict, *, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam or Adamax (``train.optimizer``) over the trainable parameters; ``capturable`` keeps the
    step counters on the parameters' device (CUDA), as :class:`~attnflow.training.guard.DeviceGuard`
    needs."""
    params = [p for p in model.parameters() if p.requires_grad]
    kind = t["optimizer"].lower()
    kwargs = dict(lr=float(t["lr"]), betas=tuple(float(b) for b in t.get("betas", (0.9, 0.999))),
                  weight_decay=float(t["weight_decay"]))
    if capturable:
        kwargs["capturable"] = True
    if kind == "adam":
        return torch.optim.Adam(params, **kwargs)
    if kind == "adamax":
        return torch.optim.Adamax(params, **kwargs)
    raise ConfigError(f"train.optimizer must be 'adam' or 'adamax', got {t['optimizer']!r}")


def _schedule(first: int, warmup: int, milestones: list[int]) -> Callable[[int], float]:
    """lr factor of the run's 0-based step ``step`` for a phase that starts at step ``first``:
    linear warm-up over ``warmup`` steps, then a halving at each milestone (run steps)."""

    def factor(step: int) -> float:
        s = step - first
        f = min(1.0, (s + 1) / warmup) if warmup > 0 and s >= 0 else 1.0
        return f * 0.5 ** sum(step >= m for m in milestones)

    return factor


def lr_factor(t: dict) -> Callable[[int], float]:
    """The model's schedule. It starts after ``train.pretrain_conditioner_steps`` (``P``, 0 by
    default): the warm-up runs over steps ``P .. P + warmup - 1`` and milestone fraction ``f``
    halves the rate at step ``P + int(f * (steps - P))``, as in a run of ``steps - P`` steps."""
    first = int(t.get("pretrain_conditioner_steps") or 0)
    length = int(t["steps"]) - first
    milestones = sorted(first + int(float(f) * length) for f in (t.get("lr_milestones") or []))
    return _schedule(first, int(t["warmup_steps"]), milestones)


def pretraining_lr_factor(t: dict) -> Callable[[int], float]:
    """The conditioner pretraining's schedule (steps ``0 .. P - 1``): the warm-up, then ``train.lr``."""
    return _schedule(0, int(t["warmup_steps"]), [])
