"""The mixture of logistics that Flow++ / mARFlow couplings transform with: its log-CDF, log-survival
and log-density in log space (:func:`mixture_logistic_logcdf`) and the inverse of its logit-CDF by
bracketed Newton (:func:`mixture_logistic_inverse`).

``F(x) = sum_k pi_k sigmoid((x - mu_k) / s_k)``; the parameters hold the ``K`` components along one
axis (``dim``), ``x`` has their shape without that axis. Plain numerics: no layer, no network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mixture_logistic_logcdf", "mixture_logistic_inverse"]


def _component_dim(dim: int, params: Tensor) -> int:
    """The components' axis ``dim`` of the mixture parameters as a negative index (so that
    ``x.unsqueeze(d)`` puts ``x``'s new axis at the same place)."""
    n = params.dim()
    if not -n <= dim < n:
        raise ValueError(f"mixture: dim {dim} is not an axis of the parameters (shape {tuple(params.shape)})")
    return dim - n if dim >= 0 else dim


def mixture_logistic_logcdf(
    x: Tensor, log_pi: Tensor, mu: Tensor, log_s: Tensor, dim: int = -1
) -> tuple[Tensor, Tensor, Tensor]:
    """``(log F, log(1 - F), log f)`` of a logistic mixture at ``x``.

    ``log_pi``, ``mu``, ``log_s`` hold the ``K`` components along axis ``dim`` (default the last:
    ``[..., K]``; normalised ``log_pi``) and ``x`` has their shape without that axis.
    ``F(x) = sum_k pi_k sigmoid((x - mu_k) / s_k)``; all three are computed in log space with
    logsumexp, so they stay finite where ``F`` rounds to 0 or 1. The coupling keeps the components
    on axis 1 of ``[B, K, C, H, W]``, the layout its network produces: no transposed copy.
    """
    return _log_terms(x, log_pi, mu, log_s, _component_dim(dim, log_pi))


def _log_terms(x: Tensor, log_pi: Tensor, mu: Tensor, log_s: Tensor, d: int) -> tuple[Tensor, Tensor, Tensor]:
    """The log-space sums of :func:`mixture_logistic_logcdf` (components on axis ``d < 0``)."""
    z = (x.unsqueeze(d) - mu) * torch.exp(-log_s)
    log_sig_pos = F.logsigmoid(z)
    log_sig_neg = F.logsigmoid(-z)
    log_cdf = torch.logsumexp(log_pi + log_sig_pos, dim=d)
    log_sf = torch.logsumexp(log_pi + log_sig_neg, dim=d)
    log_pdf = torch.logsumexp(log_pi + log_sig_pos + log_sig_neg - log_s, dim=d)
    return log_cdf, log_sf, log_pdf


def mixture_logistic_inverse(
    target_logit: Tensor,
    log_pi: Tensor,
    mu: Tensor,
    log_s: Tensor,
    *,
    dim: int = -1,
    max_iter: int = 100,
) -> Tensor:
    """Solve ``logit(F(x)) = target_logit`` for ``x`` by safeguarded Newton inside a bracket.

    The parameters hold the components along axis ``dim``, as in :func:`mixture_logistic_logcdf`.

    The bracket is exact: every component's own solution ``mu_k + s_k * target_logit`` lies on the
    same side of ``x`` for the smallest and largest ``k``, so ``x`` is in ``[min_k, max_k]``. The
    start is the ``pi``-weighted mean of those solutions (inside the bracket, and close to ``x``
    when the components agree). Each iteration (``rtsafe``) takes the Newton step when it stays
    inside the bracket and at least halves the step before it, bisects otherwise, and shrinks the
    bracket by the sign of the residual; so it converges at worst like bisection and usually
    quadratically. It stops when every entry's step is a few ulps.

    The iterations evaluate ``F``, ``1 - F`` and the density as plain sums of
    ``pi_k sigmoid(+-z_k)`` (:func:`_logit_residual`: no logarithm or logsumexp per component,
    unlike the log-space :func:`mixture_logistic_logcdf`, and exact to rounding), which is safe wherever the root's
    ``F`` and ``1 - F`` are normal numbers: an underflow at an iterate only makes the residual
    infinite with the right sign (a bisection step). Entries whose target is too extreme for that
    (``|logit| > -log(tiny) - 10``: about 77 in float32, 698 in float64) are solved in log space
    instead. A float16/bfloat16/float32 solve is polished by a Newton step in float64 (a second one
    where the first moved x by more than 1e-6).
    Non-finite targets give NaN. Differentiable in the parameters via one last Newton step
    (implicit-function gradient), taken only when a gradient is needed.
    """
    finfo = torch.finfo(target_logit.dtype)
    d = _component_dim(dim, log_pi)
    with torch.no_grad():
        t = target_logit.detach()
        finite = torch.isfinite(t)
        t_safe = torch.where(finite, t, torch.zeros_like(t))
        extreme = t_safe.abs() > -math.log(finfo.tiny) - 10
        # the full shape of the parameters (components on axis d), contiguous for the iterations
        full = torch.broadcast_shapes(t.unsqueeze(d).shape, log_pi.shape, mu.shape, log_s.shape)
        lp, m, ls = (v.detach().expand(full).contiguous() for v in (log_pi, mu, log_s))
        # the extreme entries are solved again below; 0 lets them converge at once here
        lead = full[:d] + full[d:][1:]  # the full shape without the components' axis
        t_prob = torch.where(extreme, 0.0, t_safe).expand(lead).contiguous()
        x = _solve_probability_space(t_prob, lp, m, ls, d, max_iter=max_iter)
        if bool(extreme.any()):
            where = extreme.expand_as(x).nonzero(as_tuple=True)
            pick = [v.movedim(d, -1)[where] for v in (lp, m, ls)]
            x = x.clone()
            x[where] = _solve_log_space(t_safe.expand_as(x)[where], *pick, max_iter=max_iter)
    needs_grad = torch.is_grad_enabled() and any(
        v.requires_grad for v in (target_logit, log_pi, mu, log_s))
    if needs_grad:
        # One differentiable Newton step at the root: value unchanged, gradient of the implicit solution.
        log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x, log_pi, mu, log_s, d)
        g = log_cdf - log_sf - target_logit
        slope = torch.exp(log_pdf - log_cdf - log_sf)
        x = x - (g - g.detach()) / slope.detach()
    return torch.where(finite, x, torch.full_like(x, float("nan")))


def _logit_residual(
    x: Tensor, t: Tensor, offset: Tensor, inv_s: Tensor, pi: Tensor, pi_inv_s: Tensor, d: int
) -> tuple[Tensor, Tensor]:
    """``(logit F(x) - t, d logit F / dx)`` of the mixture in probability space.

    With ``z_k = (x - mu_k) / s_k`` (``offset = -mu / s``, ``inv_s = 1 / s``):
    ``F = sum_k pi_k sigmoid(z_k)``, ``1 - F = sum_k pi_k sigmoid(-z_k)`` (summed directly, so
    neither is the difference of nearly equal numbers), ``f = sum_k (pi_k / s_k) sigmoid(z_k)
    sigmoid(-z_k)``, and ``d logit F / dx = f / (F (1 - F))``; the components are on axis ``d``.
    """
    return _residual(*_mixture_sums(x, offset, inv_s, pi, pi_inv_s, d), t)


def _residual(cdf: Tensor, sf: Tensor, pdf: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """``(log F - log(1 - F) - t, f / (F (1 - F)))`` from the sums of :func:`_mixture_sums`."""
    return torch.log(cdf) - torch.log(sf) - t, pdf / (cdf * sf)


def _mixture_sums(
    x: Tensor, offset: Tensor, inv_s: Tensor, pi: Tensor, pi_inv_s: Tensor, d: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(F, 1 - F, f)`` of :func:`_logit_residual` (each summed over the components)."""
    z = torch.addcmul(offset, x.unsqueeze(d), inv_s)
    pos = torch.sigmoid(z)
    neg = torch.sigmoid(z.neg_())
    cdf = torch.linalg.vecdot(pi, pos, dim=d)
    sf = torch.linalg.vecdot(pi, neg, dim=d)
    pdf = torch.linalg.vecdot(pi_inv_s, pos.mul_(neg), dim=d)
    return cdf, sf, pdf


def _bracket(t: Tensor, pi: Tensor, mu: Tensor, log_s: Tensor, d: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(min_k, max_k, sum_k pi_k r_k clamped to them)`` of the components' own solutions
    ``r_k = mu_k + s_k t``: the exact bracket and the start of :func:`_solve_probability_space`."""
    roots = torch.exp(log_s).mul_(t.unsqueeze(d)).add_(mu)
    lo, hi = roots.amin(dim=d), roots.amax(dim=d)
    return lo, hi, torch.linalg.vecdot(pi, roots, dim=d).clamp(lo, hi)


def _float64_sums(
    x: Tensor, log_pi: Tensor, mu: Tensor, log_s: Tensor, d: int
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_mixture_sums` in float64 at float64 ``x`` from low-precision raw parameters."""
    f64 = torch.float64
    inv_s = log_s.to(f64).neg_().exp_()
    pi = log_pi.to(f64).exp_()
    offset = mu.to(f64).mul_(inv_s).neg_()
    return _mixture_sums(x, offset, inv_s, pi, pi * inv_s, d)


def _rtsafe(
    residual, x: Tensor, lo: Tensor, hi: Tensor, max_iter: int, ulps: float = 4, noise: Tensor | None = None
) -> Tensor:
    """Safeguarded Newton (``rtsafe``) from ``x`` inside the bracket ``[lo, hi]`` of an increasing
    function whose ``residual(x)`` is ``(value, slope)``: the Newton step when it stays inside the
    bracket and at least halves the step before it, bisection otherwise; the bracket shrinks by
    the residual's sign. An entry stops when its step is at most ``ulps`` ulps (relative to
    ``1 + |x|``) or its residual is within ``noise`` (its rounding level, when the result is
    polished afterwards); all stop after ``max_iter``."""
    step_old = hi - lo
    step = step_old.clone()
    tol = ulps * torch.finfo(x.dtype).eps
    done = torch.zeros_like(x, dtype=torch.bool)
    for _ in range(max_iter):
        g, slope = residual(x)
        below = g < 0
        lo = torch.where(below, x, lo)
        hi = torch.where(below, hi, x)
        newton_step = g / slope
        newton = x - newton_step
        use_newton = (
            (newton > lo) & (newton < hi) & torch.isfinite(newton)
            & ((2 * newton_step).abs() <= step_old.abs())
        )
        half = 0.5 * (hi - lo)
        step_old, step = step, torch.where(use_newton, newton_step, x - (lo + half))
        # an entry stops once its step is small: with a noisy residual, the next step of a
        # converged entry can fail the halving test and bisect back across a wide bracket
        if noise is not None:  # at the root to rounding: x stays where it is
            done |= g.abs() <= noise
        x = torch.where(done, x, torch.where(use_newton, newton, lo + half))
        done |= step.abs() <= tol * (1 + x.abs())
        if bool(done.all()):
            break
    return x


def _solve_probability_space(
    t: Tensor, log_pi: Tensor, mu: Tensor, log_s: Tensor, d: int, *, max_iter: int
) -> Tensor:
    """The bracketed Newton solve of :func:`mixture_logistic_inverse` (no gradient; finite ``t``;
    parameters of the full shape, components on axis ``d``)."""
    pi = torch.exp(log_pi)
    inv_s = torch.neg(log_s).exp_()  # in place where it is exact: fewer full-size buffers
    offset = torch.mul(mu, inv_s).neg_()
    pi_inv_s = pi * inv_s
    lo, hi, x = _bracket(t, pi, mu, log_s, d)
    lo0, hi0 = lo, hi
    low = x.dtype in (torch.float16, torch.bfloat16, torch.float32)
    # A low-precision solve is polished in float64 below. Near the root its residual is rounding
    # noise (log F and log(1 - F) of K-term sums: ~K ulps), where Newton steps stop shrinking and
    # the safeguard bisects a wide bracket down to the tolerance (~15 more iterations for a few
    # entries): it stops there instead, and the float64 Newton steps finish.
    eps = torch.finfo(x.dtype).eps
    noise = 2 * log_pi.shape[d] * eps * (1 + t.abs()) if low else None
    x = _rtsafe(lambda x: _logit_residual(x, t, offset, inv_s, pi, pi_inv_s, d), x, lo, hi, max_iter,
                ulps=64 if low else 4, noise=noise)
    if low:
        # Polish in float64: near the root the float32 residual is rounding noise (its sign too,
        # so the shrunk bracket may miss the root); Newton steps in double, kept inside the
        # exact initial bracket, bring x to the float32 rounding of the exact solution.
        f64 = torch.float64
        x, t, lo0, hi0 = x.to(f64), t.to(f64), lo0.to(f64), hi0.to(f64)
        g, slope = _residual(*_float64_sums(x, log_pi, mu, log_s, d), t)
        newton = x - g / slope
        ok = torch.isfinite(newton) & (newton >= lo0) & (newton <= hi0)
        # Newton converges quadratically here: after a step of at most 1e-6 (relative to 1 + |x|)
        # the next one is below float32's resolution, so a second step is taken only where the
        # first was larger (a small share of the entries; the rest is not evaluated again)
        again = ok & ((newton - x).abs() > 1e-6 * (1 + x.abs()))
        x = torch.where(ok, newton, x)
        if bool(again.any()):
            where = again.nonzero(as_tuple=True)
            pick = [v.movedim(d, -1)[where] for v in (log_pi, mu, log_s)]
            xs = x[where]
            g, slope = _residual(*_float64_sums(xs, *pick, -1), t[where])
            newton = xs - g / slope
            ok = torch.isfinite(newton) & (newton >= lo0[where]) & (newton <= hi0[where])
            x[where] = torch.where(ok, newton, xs)
        x = x.to(log_s.dtype)
    return x


def _solve_log_space(t: Tensor, log_pi: Tensor, mu: Tensor, log_s: Tensor, *, max_iter: int) -> Tensor:
    """The same bracketed Newton solve with every quantity in log space
    (:func:`mixture_logistic_logcdf`): for targets whose ``F`` or ``1 - F`` underflows."""
    dtype = t.dtype
    if dtype in (torch.float16, torch.bfloat16, torch.float32):
        t, log_pi, mu, log_s = (v.double() for v in (t, log_pi, mu, log_s))
    roots = mu + torch.exp(log_s) * t.unsqueeze(-1)
    lo = roots.amin(dim=-1)
    hi = roots.amax(dim=-1)

    def residual(x: Tensor) -> tuple[Tensor, Tensor]:
        log_cdf, log_sf, log_pdf = mixture_logistic_logcdf(x, log_pi, mu, log_s)
        return log_cdf - log_sf - t, torch.exp(log_pdf - log_cdf - log_sf)

    x = _rtsafe(residual, 0.5 * (lo + hi), lo, hi, max_iter)
    return x.to(dtype)
