"""Full-Glow's conditional layers: actnorm, LU 1x1 conv and affine coupling driven by a feature map.

Each layer is a :class:`~attnflow.core.Flow` whose ``cond`` is a feature map with the input's batch
and spatial size (in Full-Glow: the matching activation of the source flow). A small network turns
``cond`` into the layer's parameters, *per sample*, so every log-det is per sample and no sample's
result depends on the rest of the batch (the reference averages the log-dets over the batch and only
runs at batch size 1).

* :class:`CondVectorNet`: the reference's conditioning network for actnorm and 1x1 conv: a small conv
  stack, then (flatten or pool) and an MLP to one vector per sample. Its last linear layer starts at
  zero, so a conditional layer starts as its unconditional counterpart (same data-dependent
  actnorm init, same random-rotation 1x1 conv).
* :class:`ConditionalActNorm`: ``y = (x + b + t(c)) * exp(logs + s(c))``.
* :class:`ConditionalInvConv1x1`: ``W(c) = P L(c) (U(c) + diag(sign * exp(log_s(c))))``.
* :class:`CondNetAffineCoupling`: ``y_tr = (x_tr + t) * s``, ``(t, s_raw) = NN([x_id, E(c)])``.

The condition-dependent log-scales ``s(c)`` and ``log_s(c)`` are offsets from learned base values,
soft-clamped to ``(-max_log_scale, max_log_scale)``: a runaway conditioning network cannot overflow
a scale (the design rule "bounded scales, never a raw exp" for anything a network predicts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, check_cond, check_input
from ..nn import ActNormParams, run_network, soft_clamp
from .conv import lu_inverse_weight, lu_weight, register_lu_factors
from .coupling import ConditionalAffineCoupling

__all__ = [
    "CondVectorNet",
    "ConditionalActNorm",
    "ConditionalInvConv1x1",
    "CondNetAffineCoupling",
]


class CondVectorNet(nn.Module):
    """Feature map ``[B, C, H, W]`` -> vector ``[B, out_features]`` (Full-Glow's ActCondNet/WCondNet).

    conv1x1 (C -> 8), ReLU, conv3x3 (8 -> 4), ReLU, conv3x3 (4 -> 2), ReLU (3x3 convs padded, so the
    map keeps its size), then either ``flatten`` (``size=(H, W)`` given: ``2 H W`` features, the
    reference's choice, which ties the layer to one resolution) or an adaptive average pool to a
    ``grid x grid`` map (``2 grid^2`` features, any resolution), then an MLP (``hidden``, ReLUs) and
    a final bias-free linear layer initialised to zero (the layer's base parameters are the bias).
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        *,
        size: Sequence[int] | None = None,
        grid: int | None = None,
        hidden: Sequence[int] = (32, 64, 48),
    ) -> None:
        super().__init__()
        if (size is None) == (grid is None):
            raise ValueError("CondVectorNet: give exactly one of size=(H, W) (flatten) or grid=g (pool)")
        if grid is not None and (not isinstance(grid, int) or grid < 1):
            raise ValueError(f"CondVectorNet: grid must be a positive int, got {grid!r}")
        self.in_channels = in_channels
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.grid = grid
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 8, 1),
            nn.ReLU(),
            nn.Conv2d(8, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 2, 3, padding=1),
            nn.ReLU(),
        )
        spatial = self.size[0] * self.size[1] if self.size is not None else grid * grid
        layers: list[nn.Module] = []
        width = 2 * spatial
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, out_features, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, cond: Tensor) -> Tensor:
        h = self.convs(cond)
        if self.size is not None:
            if tuple(h.shape[2:]) != self.size:
                raise ValueError(
                    f"CondVectorNet: built for {self.size[0]}x{self.size[1]} conditions (flattened), "
                    f"got shape {tuple(cond.shape)}; build it for this size or use grid= pooling"
                )
        else:
            h = F.adaptive_avg_pool2d(h, self.grid)
        return self.out(self.mlp(h.flatten(1)))


class _CondVectorLayer(Flow):
    """Shared checks: input ``[B, channels, H, W]``, cond ``[B, cond_channels, H, W]``."""

    channels: int
    cond_channels: int

    def _check(self, x: Tensor, cond: Tensor | None) -> Tensor:
        check_input(self, x, self.channels)
        return check_cond(self, cond, x, self.cond_channels)


class ConditionalActNorm(ActNormParams, _CondVectorLayer):
    """Conditional actnorm: ``y = (x + b + t(c)) * exp(logs + s(c))`` per sample and channel.

    ``(t, s_raw) = CondVectorNet(c)``, ``s = soft_clamp(s_raw, max_log_scale)``; log-det
    ``H W sum_c (logs + s(c))_c`` for each sample. ``b, logs`` get ActNorm's data-dependent
    initialisation (:meth:`initialize` or :func:`attnflow.core.initialize_data_dependent`); the net's
    output starts at zero, so at initialisation this is a plain ActNorm (as in the reference, whose
    last linear layer has zero weights and a data-initialised bias).
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        *,
        size: Sequence[int] | None = None,
        grid: int | None = None,
        hidden: Sequence[int] = (32, 64, 48),
        max_log_scale: float = 3.0,
        min_std: float = 1e-6,
    ) -> None:
        super().__init__(channels, min_std=min_std)
        self.cond_channels = cond_channels
        self.max_log_scale = max_log_scale
        self.net = CondVectorNet(cond_channels, 2 * channels, size=size, grid=grid, hidden=hidden)

    def _shift_logscale(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        cond = self._check(x, cond)
        self._maybe_initialize(x)
        h = run_network(self.net, cond).view(x.shape[0], 2, self.channels, 1, 1)
        shift = self.bias + h[:, 0]
        logs = self.logs + soft_clamp(h[:, 1], self.max_log_scale)
        return shift, logs

    def _logdet(self, logs: Tensor, x: Tensor) -> Tensor:
        return (x.shape[2] * x.shape[3]) * logs.flatten(1).sum(1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, logs = self._shift_logscale(x, cond)
        return (x + shift) * logs.exp(), self._logdet(logs, x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, logs = self._shift_logscale(z, cond)
        return z * torch.exp(-logs) - shift, -self._logdet(logs, z)


class ConditionalInvConv1x1(_CondVectorLayer):
    """Conditional LU 1x1 convolution: ``y_b = W(c_b) x_b`` with a per-sample weight

    ``W(c) = P (I + L + dL(c)) (U + dU(c) + diag(sign * exp(log_s + ds(c))))``,

    ``L``/``U`` strictly lower/upper, ``(dL, dU, ds_raw) = CondVectorNet(c)`` (only the
    ``C(C-1)/2`` free entries of each triangle and the ``C`` diagonal entries are predicted, so
    every parameter is used), ``ds = soft_clamp(ds_raw, max_log_scale)``. ``W(c)`` is invertible
    for every ``c`` (triangular factors with non-zero diagonals). Log-det per sample:
    ``H W sum(log_s + ds(c))``. Initialised at a random rotation with the net's output at zero
    (the reference initialises its last linear bias with the rotation's LU factors).
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        *,
        size: Sequence[int] | None = None,
        grid: int | None = None,
        hidden: Sequence[int] = (32, 64, 48),
        max_log_scale: float = 3.0,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.cond_channels = cond_channels
        self.max_log_scale = max_log_scale
        register_lu_factors(self, channels)
        rows, cols = torch.tril_indices(channels, channels, -1)
        # flat positions of the strictly lower / upper entries of a C x C matrix
        self.register_buffer("_tril", rows * channels + cols, persistent=False)
        self.register_buffer("_triu", cols * channels + rows, persistent=False)
        self.n_tri = rows.numel()
        self.net = CondVectorNet(
            cond_channels, 2 * self.n_tri + channels, size=size, grid=grid, hidden=hidden
        )

    def factors(self, cond: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-sample LU factors ``(perm, lower [B,C,C], upper [B,C,C], sign, log_s [B,C])``."""
        h = run_network(self.net, cond)
        b, c, n = h.shape[0], self.channels, self.n_tri
        zeros = h.new_zeros(b, c * c)
        d_lower = zeros.index_copy(1, self._tril, h[:, :n]).view(b, c, c)
        d_upper = zeros.index_copy(1, self._triu, h[:, n : 2 * n]).view(b, c, c)
        log_s = self.log_s + soft_clamp(h[:, 2 * n :], self.max_log_scale)
        return self.perm, self.lower + d_lower, self.upper + d_upper, self.sign, log_s

    def _mix(self, w: Tensor, x: Tensor) -> Tensor:
        b, c, h, wd = x.shape
        return torch.bmm(w.to(x.dtype), x.reshape(b, c, h * wd)).view(b, c, h, wd)

    def _logdet(self, log_s: Tensor, x: Tensor) -> Tensor:
        return (x.shape[2] * x.shape[3]) * log_s.sum(1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cond = self._check(x, cond)
        factors = self.factors(cond)
        return self._mix(lu_weight(*factors), x), self._logdet(factors[-1], x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cond = self._check(z, cond)
        factors = self.factors(cond)
        return self._mix(lu_inverse_weight(*factors), z), -self._logdet(factors[-1], z)

    def extra_repr(self) -> str:
        return f"{self.channels}, cond_channels={self.cond_channels}"


class CondNetAffineCoupling(_CondVectorLayer):
    """Full-Glow's conditional affine coupling: ``y_tr = (x_tr + t) * s`` with

    ``(t, s_raw) = NN([x_id, E(c)])``, ``s = sigmoid(s_raw + 2) + eps``, log-det ``sum(log s)``,

    ``E`` = conv3x3 (``cond_channels -> cond_hidden``), ReLU, conv3x3 (``-> features``), ReLU (the
    reference's CouplingCondNet; ``features`` defaults to ``channels``) and ``NN`` Glow's coupling
    network of width ``hidden`` (512 in Full-Glow). ``x_id`` are the first ``C // 2`` channels.
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        *,
        hidden: int = 512,
        cond_hidden: int = 128,
        features: int | None = None,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.cond_channels = cond_channels
        features = features or channels
        self.cond_net = nn.Sequential(
            nn.Conv2d(cond_channels, cond_hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(cond_hidden, features, 3, padding=1),
            nn.ReLU(),
        )
        self.coupling = ConditionalAffineCoupling(channels, features, hidden=hidden, eps=eps)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cond = self._check(x, cond)
        return self.coupling(x, self.cond_net(cond))

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cond = self._check(z, cond)
        return self.coupling.inverse(z, self.cond_net(cond))
