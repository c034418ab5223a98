"""The conditioner's pretraining inside a run (``train.pretrain_conditioner_steps: P``).

SRFlow does not train its RRDB encoder from scratch with the flow: the encoder is first trained as
a plain SR network with an L1 loss, then the flow starts from it. ``train.pretrain_conditioner_steps``
does both in one ``attnflow train`` run: steps ``0 .. P - 1`` train the network that
:func:`~attnflow.models.conditioner_pretraining_network` returns (the encoder, shared with the model, plus a
head of its own) on its objective, with its own optimiser (``train.optimizer``, ``train.lr``,
the warm-up, no halvings); the rest of the model gets no gradient. At the end of step ``P - 1`` the
model gets its data-dependent initialisation (with the pretrained encoder), the head and its
optimiser are dropped, and steps ``P ..`` train the model as an ordinary run of ``steps - P`` steps
would (:func:`~attnflow.training.optim.lr_factor`; the model's optimiser has no state yet).

A checkpoint written during the pretraining holds the head and its optimiser and schedule under
``"pretraining"``, so ``--resume`` continues it exactly; one written after it does not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ConfigError
from ..models import TrainableModel, conditioner_pretraining_network
from .optim import make_optimizer, pretraining_lr_factor

__all__ = ["ConditionerPretraining", "HEAD_SEED"]

#: the head is built from this seed (offset by the run's seed), not from the global RNG: building it
#: again on ``--resume`` must not move the run's random streams
HEAD_SEED = 7_919


class ConditionerPretraining:
    """The pretraining phase: ``network`` (the conditioner plus a head), its optimiser and schedule.

    Args:
        model: the run's model; :func:`~attnflow.models.conditioner_pretraining_network` must give
            it a network (not ``None``).
        t: the ``train`` section (``pretrain_conditioner_steps``, the optimiser settings, ``seed``).
        device: where the model lives.
    """

    def __init__(self, model: TrainableModel, t: dict, device: torch.device) -> None:
        self.steps = int(t["pretrain_conditioner_steps"])
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(t["seed"]) + HEAD_SEED)
            network = conditioner_pretraining_network(model)
        if network is None:
            raise ConfigError(
                f"train.pretrain_conditioner_steps={self.steps}: the model ({type(model).__name__}) has no "
                f"conditioner to pretrain; use 0"
            )
        self.network: TrainableModel = network.to(device)
        shared = {id(p) for p in model.parameters()}
        self.head_names = [k for k, p in network.named_parameters() if id(p) not in shared]
        if len(self.head_names) == len(list(network.parameters())):
            raise ValueError("conditioner_pretraining_network must share the model's conditioner")
        # on CUDA the device guard restores the step counters on the device (see DeviceGuard)
        capturable = bool(t.get("device_guard")) and torch.device(device).type == "cuda"
        self.optimizer = make_optimizer(self.network, t, capturable=capturable)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, pretraining_lr_factor(t))
        self.loss_name = f"pretrain_{network.loss_name}"
        self.metric_name = f"pretrain_{network.metric_name}"

    def active(self, step: int) -> bool:
        """Whether 0-based step ``step`` belongs to the pretraining."""
        return step < self.steps

    def parameters(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """The head's weights (the shared conditioner is in the model's state), the optimiser and
        the schedule."""
        own = set(self.head_names)
        head = {k: v for k, v in self.network.state_dict().items() if k in own}
        return {"head": head, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        if not isinstance(state, dict) or set(state) != {"head", "optimizer", "scheduler"}:
            raise ValueError(f"{source}: the checkpoint's pretraining state is not one this run wrote")
        missing = sorted(set(self.head_names) - set(state["head"]))
        unexpected = sorted(set(state["head"]) - set(self.head_names))
        if missing or unexpected:
            raise ValueError(f"{source}: the pretraining head does not fit this run's (missing "
                             f"{missing or 'none'}, unexpected {unexpected or 'none'})")
        self.network.load_state_dict(state["head"], strict=False)  # the rest is the model's
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
