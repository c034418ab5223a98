"""``train.freeze_conditioner_until``: the model's conditioner (SRFlow's RRDB encoder) is frozen
for the first part of training, as SRFlow's ``train_RRDB: false`` / ``train_RRDB_delay: 0.5``."""

from __future__ import annotations

from ..config import ConfigError
from ..models import TrainableModel

__all__ = ["ConditionerSchedule"]


class ConditionerSchedule:
    """``model.conditioner_parameters()`` are frozen for 0-based steps ``step < until =
    int(f * total)`` (``f = train.freeze_conditioner_until``, 0: never); then they train.

    Frozen parameters get no gradient (``requires_grad`` off: the encoder's backward is skipped;
    under DDP, whose reducer fixes the trainable set, their gradients are dropped after the
    backward instead), so the optimiser leaves them and their state untouched (Adam's state for
    them starts when they start training). The state is a function of the step alone, which keeps
    ``--resume`` exact.
    """

    def __init__(self, model: TrainableModel, t: dict, total: int, *, ddp: bool = False) -> None:
        fraction = t["freeze_conditioner_until"] or 0.0
        self.params = model.conditioner_parameters() if fraction > 0 else []
        if fraction > 0 and not self.params:
            raise ConfigError(
                f"train.freeze_conditioner_until={fraction:g}: the model ({type(model).__name__}) has "
                f"no conditioner to freeze; use 0"
            )
        self.until = int(fraction * total)
        self.ddp = ddp
        self.state: bool | None = None

    def frozen(self, step: int) -> bool:
        return step < self.until

    def apply(self, step: int) -> None:
        """Before the forward of 0-based step ``step``."""
        frozen = self.frozen(step)
        if not self.params or self.ddp or frozen == self.state:
            return
        for p in self.params:
            p.requires_grad_(not frozen)
        self.state = frozen

    def drop_grads(self, step: int) -> None:
        """After the backward (DDP only: the gradients of frozen parameters are dropped)."""
        if self.ddp and self.params and self.frozen(step):
            for p in self.params:
                p.grad = None
