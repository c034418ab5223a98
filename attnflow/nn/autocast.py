"""Conditioner networks in lower precision: :func:`network_autocast` switches it on for a block,
:func:`run_network` is how every layer calls its network."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn

__all__ = ["AUTOCAST_DTYPES", "network_autocast", "run_network"]

#: ``train.autocast`` values: the lower precision a conditioner network may run in
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_network_dtype: ContextVar[torch.dtype | None] = ContextVar("attnflow_network_autocast", default=None)


@contextmanager
def network_autocast(dtype: torch.dtype | None) -> Iterator[None]:
    """Within the block, :func:`run_network` runs the conditioner networks (coupling, injector and
    encoder networks) under ``torch.autocast(dtype)``; everything else (log-dets, the mixture CDF,
    the priors, the invertible maps themselves) stays in the input's precision. ``None``: off."""
    token = _network_dtype.set(dtype)
    try:
        yield
    finally:
        _network_dtype.reset(token)


def run_network(net: nn.Module, x: Tensor):
    """``net(x)``, under autocast inside :func:`network_autocast`, returned in ``x``'s dtype (a
    tensor, or a list of tensors as an encoder's per-level maps)."""
    dtype = _network_dtype.get()
    if dtype is None or not x.is_floating_point():
        return net(x)
    with torch.autocast(x.device.type, dtype=dtype):
        out = net(x)
    return out.to(x.dtype) if isinstance(out, Tensor) else [o.to(x.dtype) for o in out]
