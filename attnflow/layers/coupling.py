"""Coupling layers: affine (Glow / SRFlow), conditional affine, affine injector, mixture-logistic.

Every coupling splits the channels into a conditioning part ``x_id`` (the first ``C // 2``
channels, left unchanged) and a transformed part ``x_tr`` (the other ``C - C // 2``), so odd channel
counts work. Scales are bounded (``sigmoid(h + 2) + eps`` or ``exp(g * tanh(s))``), never a raw exp.
The mixture's CDF and its inverse are in :mod:`.mixture_logistic`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import Flow, check_cond, check_input, logdet_wanted, zeros_logdet
from ..nn import FlowPPNet, GlowNet, bounded_scale, interleaved_halves, run_network
from .mixture_logistic import mixture_logistic_inverse, mixture_logistic_logcdf

__all__ = [
    "AffineCoupling",
    "ConditionalAffineCoupling",
    "AffineInjector",
    "MixtureLogisticCoupling",
]


class _Coupling(Flow):
    """Shared split / merge and input checks of the coupling layers."""

    def __init__(self, channels: int, cond_channels: int) -> None:
        super().__init__()
        if channels < 2 and cond_channels == 0:
            raise ValueError(
                f"{type(self).__name__}: needs at least 2 channels to split (or a condition), "
                f"got channels={channels}"
            )
        self.channels = channels
        self.cond_channels = cond_channels
        self.id_channels = channels // 2
        self.tr_channels = channels - channels // 2

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_id, x_tr)``, after checking ``x``."""
        check_input(self, x, self.channels)
        x_id, x_tr = x.split([self.id_channels, self.tr_channels], dim=1)  # one gradient in backward
        return x_id, x_tr

    def _net_input(self, x_id: Tensor, cond: Tensor | None) -> Tensor:
        """The network's input ``[x_id, cond]`` (``x_id`` alone for an unconditional coupling);
        ``cond`` is checked against ``x_id``'s batch and size."""
        if not self.cond_channels:
            return x_id
        return torch.cat([x_id, check_cond(self, cond, x_id, self.cond_channels)], dim=1)


class AffineCoupling(_Coupling):
    """``y_tr = (x_tr + t) * s``, ``(t, s_raw) = NN([x_id, cond])``, ``s = sigmoid(s_raw + 2) + eps``.

    The network is Glow's (conv3x3, actnorm, ReLU, conv1x1, actnorm, ReLU, zero-initialised conv3x3)
    unless ``net`` is given (any module mapping ``id_channels + cond_channels`` to
    ``2 * tr_channels`` channels). Log-det: ``sum(log s)``.
    """

    def __init__(
        self,
        channels: int,
        *,
        hidden: int = 512,
        cond_channels: int = 0,
        eps: float = 1e-4,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__(channels, cond_channels)
        self.eps = eps
        self.net = net or GlowNet(self.id_channels + cond_channels, 2 * self.tr_channels, hidden)

    def _shift_scale(self, x_id: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        h = run_network(self.net, self._net_input(x_id, cond))
        shift, raw_scale = interleaved_halves(h)
        return shift, bounded_scale(raw_scale, self.eps)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_id, x_tr = self._split(x)
        shift, scale = self._shift_scale(x_id, cond)
        y_tr = (x_tr + shift) * scale
        return torch.cat([x_id, y_tr], dim=1), scale.log().flatten(1).sum(1)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z_id, z_tr = self._split(z)
        shift, scale = self._shift_scale(z_id, cond)
        x_tr = z_tr / scale - shift
        return torch.cat([z_id, x_tr], dim=1), -scale.log().flatten(1).sum(1)


class ConditionalAffineCoupling(AffineCoupling):
    """SRFlow's conditional affine coupling: the network sees ``[x_id, cond]``; ``cond`` is required."""

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        *,
        hidden: int = 64,
        eps: float = 1e-4,
        net: nn.Module | None = None,
    ) -> None:
        if cond_channels < 1:
            raise ValueError(
                f"ConditionalAffineCoupling: cond_channels must be >= 1, got {cond_channels}"
            )
        super().__init__(channels, hidden=hidden, cond_channels=cond_channels, eps=eps, net=net)


class AffineInjector(Flow):
    """SRFlow's affine injector: ``y = (x + t) * s`` on all channels, ``(t, s_raw) = NN(cond)``.

    Log-det ``sum(log s)``; the transform does not depend on ``x``, so the inverse is exact.
    """

    def __init__(
        self,
        channels: int,
        cond_channels: int,
        *,
        hidden: int = 64,
        eps: float = 1e-4,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if cond_channels < 1:
            raise ValueError(f"AffineInjector: cond_channels must be >= 1, got {cond_channels}")
        self.channels = channels
        self.cond_channels = cond_channels
        self.eps = eps
        self.net = net or GlowNet(cond_channels, 2 * channels, hidden)

    def _net_input(self, x: Tensor, cond: Tensor | None) -> Tensor:
        """The network's input: ``cond``, checked against ``x``'s batch and size."""
        return check_cond(self, cond, x, self.cond_channels)

    def _shift_scale(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        check_input(self, x, self.channels)
        h = run_network(self.net, self._net_input(x, cond))
        shift, raw_scale = interleaved_halves(h)
        return shift, bounded_scale(raw_scale, self.eps)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, scale = self._shift_scale(x, cond)
        return (x + shift) * scale, scale.log().flatten(1).sum(1)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, scale = self._shift_scale(z, cond)
        return z / scale - shift, -scale.log().flatten(1).sum(1)


class MixtureLogisticCoupling(_Coupling):
    """Flow++ / mARFlow mixture-of-logistics CDF coupling.

    ``(s, t, pi, mu, log s_hat) = NN([x_id, cond])`` with ``K`` logistic components,
    ``log s_hat >= -7``, ``a = g * tanh(s)`` (``g`` learned per channel):

    ``y_tr = (logit(F_mix(x_tr)) + t) * exp(a)``,
    ``log-det = sum(log f_mix - log F - log(1 - F) + a)``.

    The inverse solves ``F_mix(x) = sigmoid(y * exp(-a) - t)`` by bracketed Newton
    (:func:`mixture_logistic_inverse`). ``net`` defaults to the Flow++ network
    (:class:`attnflow.nn.FlowPPNet`); any module mapping ``id_channels + cond_channels`` to
    ``tr_channels * (2 + 3K)`` channels works.
    """

    def __init__(
        self,
        channels: int,
        *,
        hidden: int = 96,
        components: int = 32,
        blocks: int = 10,
        heads: int = 4,
        dropout: float = 0.2,
        attention_dropout: str = "output",
        cond_channels: int = 0,
        min_log_scale: float = -7.0,
        net: nn.Module | None = None,
    ) -> None:
        super().__init__(channels, cond_channels)
        if components < 1:
            raise ValueError(f"MixtureLogisticCoupling: components must be >= 1, got {components}")
        self.components = components
        self.min_log_scale = min_log_scale
        out_channels = self.tr_channels * (2 + 3 * components)
        if net is None:
            net = FlowPPNet(
                self.id_channels + cond_channels,
                out_channels,
                hidden=hidden,
                blocks=blocks,
                heads=heads,
                dropout=dropout,
                attention_dropout=attention_dropout,
            )
        self.net = net
        self.rescale = nn.Parameter(torch.ones(1, self.tr_channels, 1, 1))

    def _params(self, x_id: Tensor, cond: Tensor | None) -> tuple[Tensor, ...]:
        h = run_network(self.net, self._net_input(x_id, cond))
        b, _, height, width = h.shape
        k = self.components
        # [B, 2 + 3K, C, H, W] as the network lays it out; the mixture's components stay on axis 1
        # (split, not indexing: its backward concatenates instead of zero-filling per piece)
        raw_a, t, logit_pi, mu, raw_log_s = h.view(b, 2 + 3 * k, self.tr_channels, height, width).split(
            [1, 1, k, k, k], dim=1)
        a = self.rescale * torch.tanh(raw_a.squeeze(1))
        log_pi = torch.log_softmax(logit_pi, dim=1)
        log_s = raw_log_s.clamp_min(self.min_log_scale)
        return a, t.squeeze(1), log_pi, mu, log_s

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_id, x_tr = self._split(x)
        a, t, log_pi, mu, log_s = self._params(x_id, cond)
        log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x_tr, log_pi, mu, log_s, dim=1)
        y_tr = (log_cdf - log_sf + t) * torch.exp(a)
        logdet = (log_pdf - log_cdf - log_sf + a).flatten(1).sum(1)
        return torch.cat([x_id, y_tr], dim=1), logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z_id, z_tr = self._split(z)
        a, t, log_pi, mu, log_s = self._params(z_id, cond)
        target = z_tr * torch.exp(-a) - t
        x_tr = mixture_logistic_inverse(target, log_pi, mu, log_s, dim=1)
        if not logdet_wanted():  # inside core.no_logdet (sampling): skip the second mixture pass
            return torch.cat([z_id, x_tr], dim=1), zeros_logdet(z)
        log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x_tr, log_pi, mu, log_s, dim=1)
        logdet = (log_pdf - log_cdf - log_sf + a).flatten(1).sum(1)
        return torch.cat([z_id, x_tr], dim=1), -logdet
