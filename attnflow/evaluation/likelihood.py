"""Likelihood metrics: bits/dim of a log-density, and the mean bits/dim of a model over a loader.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["bits_per_dim", "evaluate_bpd", "evaluate_metric"]

def bits_per_dim(log_px: Tensor | float, num_dims: int, n_bins: int = 256) -> Tensor | float:
    r"""Bits per dimension of discrete data from the log-density of its dequantised version.

    ``log_px`` is the log-density (nats, summed over all ``D = num_dims`` dimensions of one sample) of
    the uniformly dequantised data on the *unit* scale, i.e. pixel values ``k / n_bins`` plus
    ``U[0, 1/n_bins)`` noise. Rescaling to the integer grid (bin width 1) divides the density by
    ``n_bins^D``, so the discrete negative log-likelihood in bits per dimension is

    .. math:: \mathrm{bpd} = -\frac{\log p(x) - D \log n_\mathrm{bins}}{D \ln 2}.

    This is an upper bound on the true discrete NLL (variational dequantisation bound). A uniform
    density on the unit cube (``log_px = 0``) gives exactly ``log2(n_bins)`` bits/dim (8 for 256
    bins). Conditional bits/dim is the same function applied to ``log p(x | c)``. Works elementwise on
    a tensor of per-sample log-densities (e.g. shape ``[B]``) or on a Python float.
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims <= 0:
        raise ValueError(f"bits_per_dim: num_dims must be a positive int, got {num_dims!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(f"bits_per_dim: n_bins must be an int >= 2, got {n_bins!r}")
    d = float(num_dims)
    return -(log_px - d * math.log(n_bins)) / (d * math.log(2.0))


@torch.no_grad()
def evaluate_bpd(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> float:
    """Mean bits/dim over a loader: ``model.bits_per_dim(batch)`` of every batch, in eval mode.

    ``model`` is any model of the :class:`attnflow.models.FlowModel` contract (uniform
    dequantisation noise from the global RNG: seed it for a reproducible figure).
    """
    return _mean_per_image(model, loader, model.bits_per_dim, max_batches)


@torch.no_grad()
def evaluate_metric(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> float:
    """Mean of ``model.evaluation_metric(batch)`` (per image) over a loader, in eval mode: test
    bits/dim for a flow (the same as :func:`evaluate_bpd`), PSNR for the rrdb SR network."""
    return _mean_per_image(model, loader, model.evaluation_metric, max_batches)


def _mean_per_image(model: nn.Module, loader: Iterable, per_image, max_batches: int | None) -> float:
    """The mean of ``per_image(batch)`` (a ``[B]`` tensor) over the images of ``loader``."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            value = per_image(batch)
            total += float(value.sum())
            count += value.numel()
    finally:
        model.train(was)
    if count == 0:
        raise ValueError("evaluation set is empty")
    return total / count
