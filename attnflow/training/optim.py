"""The optimiser and the learning-rate schedule (linear warm-up, halvings at fractions of training)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["make_optimizer", "lr_factor"]


def make_optimizer(model: nn.Module, t: dict, *, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam or Adamax (``train.optimizer``) over the trainable parameters; ``capturable`` keeps the
    step counters on the parameters' device (CUDA), as :class:`~attnflow.training.guard.DeviceGuard`
    needs."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[t["optimizer"]]
    extra = {"capturable": True} if capturable else {}
    return optimizer(params, lr=t["lr"], betas=tuple(t["betas"]), weight_decay=t["weight_decay"], **extra)


def lr_factor(t: dict) -> Callable[[int], float]:
    """The lr factor of 0-based step ``step``: a linear warm-up over ``train.warmup_steps``, then
    a halving at each ``train.lr_milestones`` fraction ``f`` of training (from step ``int(f * steps)``)."""
    warmup = t["warmup_steps"]
    milestones = sorted(int(f * t["steps"]) for f in t["lr_milestones"])

    def factor(step: int) -> float:
        f = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return f * 0.5 ** sum(step >= m for m in milestones)

    return factor
