"""Public correctness checks for flows: invertibility and log-dets verified by brute force.

``check_flow(flow, shape)`` runs, in float64 by default:

1. ``forward`` then ``inverse`` returns the input (round trip), in eval and in train mode;
2. the forward and inverse log-dets have shape ``[B]`` and cancel;
3. the log-det equals ``slogdet`` of the full autograd Jacobian, sample by sample, and every
   sample's output does not depend on the rest of the batch;
4. every parameter receives a finite, non-zero gradient;
5. eval-mode output equals train-mode output (dropout switched off for the comparison);
6. a ``state_dict`` round trip into a fresh (or scrambled) copy reproduces the outputs;
7. non-finite input does not give all-finite output.

It raises :class:`FlowCheckError` listing every failed property, and returns the measured errors.
``check_model`` does the same for a multi-scale model's ``encode``/``decode``/``log_prob``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = [
    "FlowCheckError",
    "FlowCheckReport",
    "check_flow",
    "check_model",
    "perturb_parameters",
    "train_steps",
    "brute_force_logdet",
]


class FlowCheckError(AssertionError):
    """A flow failed one or more checks; the message lists each failure with its measured error."""


@dataclass
class FlowCheckReport:
    roundtrip_error: float = 0.0
    logdet_cancel_error: float = 0.0
    jacobian_logdet_error: float = 0.0
    batch_independence_error: float = 0.0
    train_eval_error: float = 0.0
    state_dict_error: float = 0.0
    failures: list[str] = field(default_factory=list)


def _rel(err: Tensor, ref: Tensor) -> float:
    return float((err.abs() / ref.abs().clamp_min(1.0)).max()) if err.numel() else 0.0


@contextlib.contextmanager
def _dropout_off(module: nn.Module) -> Iterator[None]:
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            saved.append((m, m.p))
            m.p = 0.0
        elif hasattr(m, "dropout") and isinstance(m.dropout, float):
            saved.append((m, m.dropout))
            m.dropout = 0.0
    try:
        yield
    finally:
        for m, p in saved:
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.p = p
            else:
                m.dropout = p


def _slice(t: Tensor | None, b: int) -> Tensor | None:
    return None if t is None else t[b : b + 1]


def brute_force_logdet(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``log|det J|`` of ``fn`` at each sample of ``x`` (``fn`` maps ``[1, ...] -> [1, ...]``)."""
    out = []
    for b in range(x.shape[0]):
        xb = x[b : b + 1]
        jac = torch.autograd.functional.jacobian(fn, xb)
        d = xb.numel()
        sign, logabs = torch.linalg.slogdet(jac.reshape(d, d))
        out.append(logabs if sign != 0 else torch.full_like(logabs, float("-inf")))
    return torch.stack(out)


def perturb_parameters(module: nn.Module, scale: float = 0.05, *, seed: int = 0) -> nn.Module:
    """Add ``N(0, scale^2)`` noise to every floating-point parameter (moves them off their init)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                p.add_(scale * noise.to(p.dtype).to(p.device))
    return module


def train_steps(
    flow: nn.Module,
    shape: Sequence[int],
    *,
    cond: Tensor | None = None,
    steps: int = 5,
    lr: float = 1e-2,
    seed: int = 0,
) -> nn.Module:
    """A few Adam steps of maximum likelihood (standard-normal base) on random data.

    Moves the parameters the way training does (including the zero-initialised output convolutions
    and weight-norm gains that random perturbation of a single tensor may leave degenerate).
    """
    params = [p for p in flow.parameters() if p.requires_grad]
    if not params:
        return flow
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(params[0])
    opt = torch.optim.Adam(params, lr=lr)
    was_training = flow.training
    flow.train()
    for _ in range(steps):
        y, logdet = flow(x, cond) if cond is not None else flow(x)
        loss = (0.5 * y.flatten(1).pow(2).sum(1) - logdet).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.train(was_training)
    return flow


def _call(flow: nn.Module, x: Tensor, cond: Tensor | None, inverse: bool = False):
    fn = flow.inverse if inverse else flow
    return fn(x, cond)


def check_flow(
    flow: nn.Module,
    shape: Sequence[int],
    cond: Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    rtol: float = 1e-8,
    roundtrip_tol: float = 1e-10,
    jacobian_samples: int | None = None,
    factory: Callable[[], nn.Module] | None = None,
    allow_zero_grad: Sequence[str] = (),
    check_grads: bool = True,
    check_nonfinite: bool = True,
    x: Tensor | None = None,
    seed: int = 0,
) -> FlowCheckReport:
    """Verify a :class:`attnflow.core.Flow` by brute force; raise :class:`FlowCheckError` on failure.

    ``shape`` is the full input shape ``[B, C, H, W]``. The flow is converted to ``dtype``/``device``
    in place. ``factory`` builds a fresh instance for the state-dict check (default: a deep copy
    whose parameters and buffers are scrambled before loading). ``jacobian_samples`` limits the
    samples whose full Jacobian is built (default: all). ``x`` overrides the random input (useful
    for layers with a restricted domain, e.g. :class:`~attnflow.layers.Logit`).
    """
    report = FlowCheckReport()
    device = torch.device(device) if device is not None else next(
        (p.device for p in flow.parameters()), torch.device("cpu")
    )
    flow.to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    if x is None:
        x = torch.randn(tuple(shape), generator=gen, dtype=torch.float64)
    x = x.to(device=device, dtype=dtype)
    if cond is not None:
        cond = cond.to(device=device, dtype=dtype)
    was_training = flow.training
    with _dropout_off(flow):
        flow.eval()
        y, ld, x_rec = _check_round_trip(flow, x, cond, report, rtol, roundtrip_tol)
        _check_jacobian(flow, x, cond, y, ld, report, rtol, jacobian_samples)
        _check_train_mode(flow, x, cond, y, ld, report, rtol, roundtrip_tol)
        if check_grads and any(p.requires_grad for p in flow.parameters()):
            _check_gradients(flow, x, cond, gen, report, allow_zero_grad)
        flow.eval()
        _check_state_dict(flow, factory, x, cond, y, ld, x_rec, report, rtol, device, dtype)
        if check_nonfinite:
            _check_nonfinite(flow, x, cond, report)
    flow.train(was_training)
    if report.failures:
        raise FlowCheckError(
            f"{type(flow).__name__} failed {len(report.failures)} check(s) on shape "
            f"{tuple(shape)} ({dtype}):\n  - " + "\n  - ".join(report.failures)
        )
    return report


def _roundtrip_error(x_rec: Tensor, x: Tensor) -> float:
    return float((x_rec - x).abs().max()) / max(1.0, float(x.abs().max()))


@torch.no_grad()
def _check_round_trip(flow, x, cond, report: FlowCheckReport, rtol: float, roundtrip_tol: float):
    """Eval mode: ``[B]`` log-dets, finite output, ``inverse(forward(x)) == x``, log-dets cancel.
    Returns ``(y, logdet, x_reconstructed)`` for the other checks."""
    fail, batch = report.failures.append, x.shape[0]
    y, ld = _call(flow, x, cond)
    x_rec, ld_inv = _call(flow, y, cond, inverse=True)
    for name, t in (("forward", ld), ("inverse", ld_inv)):
        if not isinstance(t, Tensor) or t.shape != (batch,):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            fail(f"{name} log-det must have shape [B]=({batch},), got {got}")
    if not (torch.isfinite(y).all() and torch.isfinite(ld).all()):
        fail("forward produced non-finite values on finite input")
    report.roundtrip_error = _roundtrip_error(x_rec, x)
    if not report.roundtrip_error <= roundtrip_tol:
        fail(f"round trip error {report.roundtrip_error:.3e} > {roundtrip_tol:.1e}")
    if ld.shape == ld_inv.shape:
        report.logdet_cancel_error = _rel(ld + ld_inv, ld)
        if not report.logdet_cancel_error <= rtol:
            fail(f"forward and inverse log-dets do not cancel: {report.logdet_cancel_error:.3e}")
    return y, ld, x_rec


def _check_jacobian(flow, x, cond, y, ld, report: FlowCheckReport, rtol: float, samples: int | None) -> None:
    """Per sample: the log-det equals slogdet of the full autograd Jacobian, and a sample alone
    gives what it gave in the batch."""
    fail, batch = report.failures.append, x.shape[0]
    errs, indep = [], []
    for b in range(batch if samples is None else min(batch, samples)):
        cb = _slice(cond, b)
        with torch.no_grad():
            yb, ldb = _call(flow, x[b : b + 1], cb)
        indep.append(_rel(yb - y[b : b + 1], y[b : b + 1]))
        indep.append(_rel(ldb - ld[b : b + 1], ld[b : b + 1]))
        bf = brute_force_logdet(lambda t, cb=cb: _call(flow, t, cb)[0], x[b : b + 1])
        errs.append(_rel(bf - ld[b : b + 1], ld[b : b + 1]))
    report.jacobian_logdet_error = max(errs) if errs else 0.0
    report.batch_independence_error = max(indep) if indep else 0.0
    if not report.jacobian_logdet_error <= rtol:
        fail(
            f"log-det differs from slogdet of the autograd Jacobian: relative error "
            f"{report.jacobian_logdet_error:.3e} > {rtol:.1e}"
        )
    if not report.batch_independence_error <= rtol:
        fail(f"a sample's output depends on the rest of the batch: {report.batch_independence_error:.3e}")


@torch.no_grad()
def _check_train_mode(flow, x, cond, y, ld, report: FlowCheckReport, rtol: float, roundtrip_tol: float) -> None:
    """Train mode gives eval mode's output and log-det, and inverts too."""
    fail = report.failures.append
    flow.train()
    y_t, ld_t = _call(flow, x, cond)
    x_t, _ = _call(flow, y_t, cond, inverse=True)
    report.train_eval_error = max(_rel(y_t - y, y), _rel(ld_t - ld, ld))
    if not report.train_eval_error <= rtol:
        fail(f"train-mode output differs from eval-mode output: {report.train_eval_error:.3e}")
    err_t = _roundtrip_error(x_t, x)
    if not err_t <= roundtrip_tol:
        fail(f"round trip error in train mode {err_t:.3e} > {roundtrip_tol:.1e}")


def _check_gradients(flow, x, cond, gen: torch.Generator, report: FlowCheckReport, allow_zero: Sequence[str]) -> None:
    """Every trainable parameter gets a finite, non-zero gradient of a random projection of the
    output and log-det (``allow_zero`` names the ones whose gradient may be zero)."""
    fail = report.failures.append
    flow.zero_grad(set_to_none=True)
    y_g, ld_g = _call(flow, x, cond)
    w_y = torch.randn(y_g.shape, generator=gen, dtype=torch.float64).to(y_g)
    w_ld = torch.randn(ld_g.shape, generator=gen, dtype=torch.float64).to(ld_g)
    ((y_g * w_y).sum() + (ld_g * w_ld).sum()).backward()
    for name, p in flow.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            fail(f"parameter {name} received no gradient")
        elif not torch.isfinite(p.grad).all():
            fail(f"parameter {name} has a non-finite gradient")
        elif not p.grad.abs().max() > 0 and name not in allow_zero:
            fail(f"parameter {name} received an all-zero gradient")
    flow.zero_grad(set_to_none=True)


def _check_state_dict(flow, factory, x, cond, y, ld, x_rec, report: FlowCheckReport, rtol: float, device,
                      dtype) -> None:
    """A fresh (or scrambled) instance loaded with the state dict reproduces both directions."""
    clone = factory() if factory is not None else copy.deepcopy(flow)
    clone.to(device=device, dtype=dtype)
    with torch.no_grad():
        for t in list(clone.parameters()) + list(clone.buffers()):
            if t.is_floating_point():
                t.add_(torch.randn_like(t))
    clone.load_state_dict(flow.state_dict())
    clone.eval()
    with torch.no_grad():
        y_c, ld_c = _call(clone, x, cond)
        x_c, _ = _call(clone, y, cond, inverse=True)
    report.state_dict_error = max(_rel(y_c - y, y), _rel(ld_c - ld, ld), _rel(x_c - x_rec, x))
    if not report.state_dict_error <= rtol:
        report.failures.append(f"state_dict round trip changes the outputs: {report.state_dict_error:.3e}")


@torch.no_grad()
def _check_nonfinite(flow, x, cond, report: FlowCheckReport) -> None:
    """A NaN in the input must show in the output or log-det, not vanish."""
    bad = x.clone()
    bad.view(-1)[bad.numel() // 2] = float("nan")
    y_n, ld_n = _call(flow, bad, cond)
    if torch.isfinite(y_n).all() and torch.isfinite(ld_n).all():
        report.failures.append("NaN in the input gave an all-finite output and log-det")


def check_model(
    model: nn.Module,
    x: Tensor,
    cond: Tensor | None = None,
    *,
    rtol: float = 1e-8,
    roundtrip_tol: float = 1e-10,
    jacobian_samples: int | None = 1,
) -> FlowCheckReport:
    """Verify a multi-scale model: exact ``decode(encode(x))`` and brute-force log-det.

    ``model`` needs ``encode(x, cond) -> (latents, logdet)``, ``decode(latents, cond) -> x`` and
    ``log_prob(x, cond) -> [B]``. The log-det of the map ``x -> concat(flattened latents)`` is
    compared against ``slogdet`` of its autograd Jacobian, and ``log_prob`` against
    ``logdet + sum of the priors' log-densities`` recomputed by ``model.prior_log_prob``.
    Runs in eval mode in the dtype of ``x``.
    """
    report = FlowCheckReport()
    fail = report.failures.append
    was_training = model.training
    model.eval()
    batch = x.shape[0]
    with torch.no_grad():
        latents, logdet = model.encode(x, cond)
        x_rec = model.decode(latents, cond)
        logp = model.log_prob(x, cond)
    if logdet.shape != (batch,) or logp.shape != (batch,):
        fail(f"logdet/log_prob must have shape [B]=({batch},), got {tuple(logdet.shape)}, {tuple(logp.shape)}")
    report.roundtrip_error = float((x_rec - x).abs().max()) / max(1.0, float(x.abs().max()))
    if not report.roundtrip_error <= roundtrip_tol:
        fail(f"decode(encode(x)) error {report.roundtrip_error:.3e} > {roundtrip_tol:.1e}")

    def flat_latents(t: Tensor, cb: Tensor | None) -> Tensor:
        zs, _ = model.encode(t, cb)
        return torch.cat([z.flatten(1) for z in zs], dim=1)

    errs = []
    n = batch if jacobian_samples is None else min(batch, jacobian_samples)
    for b in range(n):
        cb = _slice(cond, b)
        bf = brute_force_logdet(lambda t: flat_latents(t, cb), x[b : b + 1])
        errs.append(_rel(bf - logdet[b : b + 1], logdet[b : b + 1]))
    report.jacobian_logdet_error = max(errs) if errs else 0.0
    if not report.jacobian_logdet_error <= rtol:
        fail(f"model log-det differs from the autograd Jacobian: {report.jacobian_logdet_error:.3e}")
    if hasattr(model, "prior_log_prob"):
        with torch.no_grad():
            expected = logdet + model.prior_log_prob(latents, cond)
        err = _rel(logp - expected, expected)
        if not err <= rtol:
            fail(f"log_prob != logdet + prior log-density: {err:.3e}")
    model.train(was_training)
    if report.failures:
        raise FlowCheckError(
            f"{type(model).__name__} failed {len(report.failures)} check(s):\n  - "
            + "\n  - ".join(report.failures)
        )
    return report
