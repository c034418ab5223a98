"""Coupling layers: affine (Glow / SRFlow), conditional affine, affine injector, mixture-logistic.

Every coupling splits the channels into a conditioning part ``x_id`` (the first ``C // 2``
channels, left unchanged) and a transformed part ``x_tr`` (the other ``C - C // 2``), so odd channel
counts work. Scales are bounded (``sigmoid(h + 2) + eps`` or ``exp(g * tanh(s))``), never a raw exp.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, check_cond, check_input
from ..nn import GlowNet, bounded_scale

__all__ = [
    "AffineCoupling",
    "ConditionalAffineCoupling",
    "AffineInjector",
    "MixtureLogisticCoupling",
    "mixture_logistic_logcdf",
    "mixture_logistic_inverse",
]


def _net_input(x_id: Tensor, cond: Tensor | None) -> Tensor:
    return x_id if cond is None else torch.cat([x_id, cond], dim=1)


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

    def _split(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        check_input(self, x, self.channels)
        if self.cond_channels:
            cond = check_cond(self, cond, x, self.cond_channels)
        else:
            cond = None
        return x[:, : self.id_channels], x[:, self.id_channels :], cond


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
        h = self.net(_net_input(x_id, cond))
        return h[:, 0::2], bounded_scale(h[:, 1::2], self.eps)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_id, x_tr, cond = self._split(x, cond)
        shift, scale = self._shift_scale(x_id, cond)
        y_tr = (x_tr + shift) * scale
        return torch.cat([x_id, y_tr], dim=1), scale.log().flatten(1).sum(1)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z_id, z_tr, cond = self._split(z, cond)
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

    def _shift_scale(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        check_input(self, x, self.channels)
        cond = check_cond(self, cond, x, self.cond_channels)
        h = self.net(cond)
        return h[:, 0::2], bounded_scale(h[:, 1::2], self.eps)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, scale = self._shift_scale(x, cond)
        return (x + shift) * scale, scale.log().flatten(1).sum(1)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift, scale = self._shift_scale(z, cond)
        return z / scale - shift, -scale.log().flatten(1).sum(1)


# --------------------------------------------------------------------------------------------
# Mixture of logistics (Flow++ / mARFlow)
# --------------------------------------------------------------------------------------------


def mixture_logistic_logcdf(
    x: Tensor, log_pi: Tensor, mu: Tensor, log_s: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(log F, log(1 - F), log f)`` of a logistic mixture at ``x``.

    ``x`` has shape ``[...]``; ``log_pi``, ``mu``, ``log_s`` have shape ``[..., K]`` (normalised
    ``log_pi``). ``F(x) = sum_k pi_k sigmoid((x - mu_k) / s_k)``; all three are computed in log space
    with logsumexp, so they stay finite where ``F`` rounds to 0 or 1.
    """
    z = (x.unsqueeze(-1) - mu) * torch.exp(-log_s)
    log_sig_pos = F.logsigmoid(z)
    log_sig_neg = F.logsigmoid(-z)
    log_cdf = torch.logsumexp(log_pi + log_sig_pos, dim=-1)
    log_sf = torch.logsumexp(log_pi + log_sig_neg, dim=-1)
    log_pdf = torch.logsumexp(log_pi + log_sig_pos + log_sig_neg - log_s, dim=-1)
    return log_cdf, log_sf, log_pdf


def mixture_logistic_inverse(
    target_logit: Tensor,
    log_pi: Tensor,
    mu: Tensor,
    log_s: Tensor,
    *,
    max_iter: int = 100,
) -> Tensor:
    """Solve ``logit(F(x)) = target_logit`` for ``x`` by safeguarded Newton inside a bracket.

    The bracket is exact: every component's own solution ``mu_k + s_k * target_logit`` lies on the
    same side of ``x`` for the smallest and largest ``k``, so ``x`` is in ``[min_k, max_k]``. Each
    iteration (``rtsafe``) takes the Newton step when it stays inside the bracket and at least
    halves the step before it, bisects otherwise, and shrinks the bracket by the sign of the
    residual; so it converges at worst like bisection and usually quadratically. It stops when every
    entry's step is a few ulps. Non-finite targets give NaN. Differentiable in the parameters via
    one last Newton step (implicit-function gradient).
    """
    finfo = torch.finfo(target_logit.dtype)
    with torch.no_grad():
        t = target_logit.detach()
        lp, m, ls = log_pi.detach(), mu.detach(), log_s.detach()
        finite = torch.isfinite(t)
        t_safe = torch.where(finite, t, torch.zeros_like(t))
        roots = m + torch.exp(ls) * t_safe.unsqueeze(-1)
        lo = lo0 = roots.amin(dim=-1)
        hi = hi0 = roots.amax(dim=-1)
        x = 0.5 * (lo + hi)
        step_old = hi - lo
        step = step_old.clone()
        tol = 4 * finfo.eps
        for it in range(max_iter):
            log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x, lp, m, ls)
            g = log_cdf - log_sf - t_safe
            below = g < 0
            lo = torch.where(below, x, lo)
            hi = torch.where(below, hi, x)
            slope = torch.exp(log_pdf - log_cdf - log_sf)
            newton_step = g / slope
            newton = x - newton_step
            use_newton = (
                (newton > lo) & (newton < hi) & torch.isfinite(newton)
                & ((2 * newton_step).abs() <= step_old.abs())
            )
            half = 0.5 * (hi - lo)
            new_step = torch.where(use_newton, newton_step, x - (lo + half))
            step_old = step
            step = new_step
            x = torch.where(use_newton, newton, lo + half)
            if it % 4 == 3 and bool((step.abs() <= tol * (1 + x.abs())).all()):
                break
        if x.dtype in (torch.float16, torch.bfloat16, torch.float32):
            # Polish in float64: near the root the float32 residual is rounding noise (its sign too,
            # so the shrunk bracket may miss the root); Newton steps in double, kept inside the
            # exact initial bracket, bring x to the float32 rounding of the exact solution.
            x = _newton_polish(x, t_safe, lp, m, ls, lo0, hi0).to(x.dtype)
    # One differentiable Newton step at the root: value unchanged, gradient of the implicit solution.
    log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x, log_pi, mu, log_s)
    g = log_cdf - log_sf - target_logit
    slope = torch.exp(log_pdf - log_cdf - log_sf)
    x = x - (g - g.detach()) / slope.detach()
    return torch.where(torch.isfinite(target_logit), x, torch.full_like(x, float("nan")))


def _newton_polish(
    x: Tensor, t: Tensor, log_pi: Tensor, mu: Tensor, log_s: Tensor, lo: Tensor, hi: Tensor, steps: int = 3
) -> Tensor:
    """A few bracketed Newton steps in float64 (used after a lower-precision solve)."""
    d = torch.float64
    x, t, lo, hi = x.to(d), t.to(d), lo.to(d), hi.to(d)
    log_pi, mu, log_s = log_pi.to(d), mu.to(d), log_s.to(d)
    for _ in range(steps):
        log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x, log_pi, mu, log_s)
        newton = x - (log_cdf - log_sf - t) / torch.exp(log_pdf - log_cdf - log_sf)
        ok = torch.isfinite(newton) & (newton >= lo) & (newton <= hi)
        x = torch.where(ok, newton, x)
    return x


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
            from ..nn import FlowPPNet

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
        h = self.net(_net_input(x_id, cond))
        b, _, height, width = h.shape
        k = self.components
        h = h.view(b, 2 + 3 * k, self.tr_channels, height, width)
        a = self.rescale * torch.tanh(h[:, 0])
        t = h[:, 1]
        # Mixture parameters last-dim-major: [B, C, H, W, K].
        mix = h[:, 2:].view(b, 3, k, self.tr_channels, height, width).permute(1, 0, 3, 4, 5, 2)
        log_pi = torch.log_softmax(mix[0], dim=-1)
        mu = mix[1]
        log_s = mix[2].clamp_min(self.min_log_scale)
        return a, t, log_pi, mu, log_s

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_id, x_tr, cond = self._split(x, cond)
        a, t, log_pi, mu, log_s = self._params(x_id, cond)
        log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x_tr, log_pi, mu, log_s)
        y_tr = (log_cdf - log_sf + t) * torch.exp(a)
        logdet = (log_pdf - log_cdf - log_sf + a).flatten(1).sum(1)
        return torch.cat([x_id, y_tr], dim=1), logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z_id, z_tr, cond = self._split(z, cond)
        a, t, log_pi, mu, log_s = self._params(z_id, cond)
        target = z_tr * torch.exp(-a) - t
        x_tr = mixture_logistic_inverse(target, log_pi, mu, log_s)
        log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x_tr, log_pi, mu, log_s)
        logdet = (log_pdf - log_cdf - log_sf + a).flatten(1).sum(1)
        return torch.cat([z_id, x_tr], dim=1), -logdet

