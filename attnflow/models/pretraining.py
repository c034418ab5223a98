"""The network that pretrains a model's conditioner on a task of its own (SRFlow's RRDB encoder as a
plain L1 SR network), for ``train.pretrain_conditioner_steps``.

It lives above both :mod:`~attnflow.models.srflow` (the encoder) and :mod:`~attnflow.models.rrdb`
(the SR network built on that encoder), so neither imports the other's user.
"""

from __future__ import annotations

from .base import TrainableModel
from .rrdb import RRDBNet
from .srflow import SRFlow

__all__ = ["conditioner_pretraining_network"]


def conditioner_pretraining_network(model: TrainableModel) -> TrainableModel | None:
    """A fresh network around ``model``'s conditioner (sharing its parameters) whose own objective
    pretrains it, or ``None`` when the model has none.

    SRFlow: :class:`~attnflow.models.rrdb.RRDBNet` around ``model.conditioner`` plus a fresh SR
    head (the upsampling convs the encoder lacks, ``hr_conv``, ``conv_last``), trained with the L1
    loss: the in-run form of SRFlow's RRDB pretraining. The head is not part of ``model``.
    """
    if isinstance(model, SRFlow):
        return RRDBNet(scale=model.scale, image_shape=model.image_shape, n_bins=model.n_bins,
                       encoder=model.conditioner)
    return None
