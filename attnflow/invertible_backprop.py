"""Invertible backpropagation: the activations of a chain of flows are recomputed from its output
on the backward pass (each layer's input by its ``inverse``), instead of being stored.

:func:`invertible_forward` runs a list of steps that way, :func:`sequential_invertible` the steps of
a multi-scale level. A step's condition is a tensor or a :class:`SplitCondition`, an object made of
several tensors (SRFlow's factored maps, :class:`attnflow.models.upsampled_concat.UpsampledConcat`),
whose parts each get their own gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .core import Flow, Sequential, zeros_logdet

__all__ = ["Step", "SplitCondition", "invertible_forward", "sequential_invertible"]


class SplitCondition(Protocol):
    """A condition made of several tensors, passed to :func:`invertible_forward` part by part."""

    def tensors(self) -> list[Tensor]:
        """The parts (what :meth:`with_tensors` takes back)."""
        ...

    def with_tensors(self, tensors: Sequence[Tensor]) -> SplitCondition:
        """The same condition made of other tensors of the parts' shapes."""
        ...

    def detach(self) -> SplitCondition:
        """The same condition made of the parts' detached tensors."""
        ...


Step = Sequence[tuple[Flow, "Tensor | SplitCondition | None"]]
"""One step of flow for :func:`invertible_forward`: its layers in order, each with its ``cond``."""


def _rng_devices(tensors: Sequence[Tensor]) -> list[torch.device]:
    return sorted({t.device for t in tensors if t.device.type == "cuda"}, key=str)


def _rng_snapshot(devices: list[torch.device]) -> tuple[Tensor, list[Tensor]]:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


class _RestoredRNG:
    """Run a block with the RNG states of a snapshot; the global RNG is left as it was."""

    def __init__(self, snapshot, devices: list[torch.device]) -> None:
        self.snapshot, self.devices = snapshot, devices

    def __enter__(self) -> None:
        self.fork = torch.random.fork_rng(devices=self.devices, enabled=self.snapshot is not None)
        self.fork.__enter__()
        if self.snapshot is not None:
            cpu, cuda = self.snapshot
            torch.set_rng_state(cpu)
            for d, state in zip(self.devices, cuda):
                torch.cuda.set_rng_state(state, d)

    def __exit__(self, *exc) -> None:
        self.fork.__exit__(*exc)


class _Plan:
    """What :class:`_InvertibleSteps` runs: the layers of every step, with indices into its
    tensor arguments (the conditions' tensors, parameters).

    A condition is a tensor or a :class:`SplitCondition`, whose parts are passed as separate
    tensors: ``maps[i]`` is ``(template, tensor indices)`` of the ``i``-th distinct condition
    (``template`` ``None`` for a plain tensor)."""

    def __init__(self, steps: Sequence[Step], preserve_rng_state: bool) -> None:
        seen: dict[int, int] = {}  # id of a condition -> index into maps
        params: dict[int, int] = {}
        self.conds: list[Tensor] = []
        self.maps: list[tuple[SplitCondition | None, list[int]]] = []
        self.params: list[Tensor] = []
        self.steps: list[list[tuple[Flow, int, list[int]]]] = []
        for step in steps:
            layers = []
            for layer, cond in step:
                ci = -1
                if cond is not None:
                    if id(cond) not in seen:
                        template = None if isinstance(cond, Tensor) else cond
                        parts = [cond] if template is None else template.tensors()
                        idx = list(range(len(self.conds), len(self.conds) + len(parts)))
                        self.conds.extend(parts)
                        seen[id(cond)] = len(self.maps)
                        self.maps.append((template, idx))
                    ci = seen[id(cond)]
                pidx = []
                for p in layer.parameters():
                    if p.requires_grad:
                        if id(p) not in params:
                            params[id(p)] = len(self.params)
                            self.params.append(p)
                        pidx.append(params[id(p)])
                layers.append((layer, ci, pidx))
            self.steps.append(layers)
        self.preserve_rng_state = preserve_rng_state

    def build(self, tensors: Sequence[Tensor]) -> list[Tensor | SplitCondition]:
        """The conditions, made of ``tensors`` (the flattened ones, or leaves standing for them)."""
        return [
            tensors[idx[0]] if template is None else template.with_tensors([tensors[i] for i in idx])
            for template, idx in self.maps
        ]


class _InvertibleSteps(torch.autograd.Function):
    """Forward keeping only the output; backward inverts one layer at a time, re-runs its forward
    under autograd and backpropagates through it."""

    @staticmethod
    def forward(ctx, plan: _Plan, x: Tensor, logdet: Tensor, *tensors: Tensor):
        conds = tensors[: len(plan.conds)]
        devices = _rng_devices([x, *conds]) if plan.preserve_rng_state else []
        # Each layer runs under autograd on inputs that require grad exactly where they do on the
        # ordinary path, and its graph is dropped as soon as it returns: some kernels (matmul's
        # batch folding) depend on requires_grad, so this keeps the values bit for bit those of the
        # ordinary path, while only one layer's activations are alive at a time.
        needs = ctx.needs_input_grad
        leaves = plan.build(
            [c.detach().requires_grad_(bool(n)) for c, n in zip(conds, needs[3 : 3 + len(conds)])]
        )
        h = x.detach().requires_grad_(bool(needs[1]))
        states = []
        for step in plan.steps:
            step_logdet = zeros_logdet(h)  # the arithmetic of Sequential.forward, exactly
            for layer, ci, _ in step:
                states.append(_rng_snapshot(devices) if plan.preserve_rng_state else None)
                with torch.enable_grad():
                    out, ld = layer(h, None if ci < 0 else leaves[ci])
                h = out.detach().requires_grad_(out.requires_grad)
                step_logdet = step_logdet + ld.detach()
                del out, ld
            logdet = logdet + step_logdet
        h = h.detach()
        ctx.plan, ctx.states, ctx.devices = plan, states, devices
        ctx.save_for_backward(h, *conds)
        return h, logdet

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_h: Tensor, grad_logdet: Tensor):
        plan: _Plan = ctx.plan
        h, *conds = ctx.saved_tensors
        n_conds = len(conds)
        cond_needs = ctx.needs_input_grad[3 : 3 + n_conds]
        cond_leaves = [c.detach().requires_grad_(bool(need)) for c, need in zip(conds, cond_needs)]
        cond_maps = plan.build(cond_leaves)
        cond_grads: list[Tensor | None] = [None] * n_conds
        param_grads: list[Tensor | None] = [None] * len(plan.params)
        layers = [item for step in plan.steps for item in step]
        h = h.detach()
        for j in reversed(range(len(layers))):
            layer, ci, pidx = layers[j]
            cond = None if ci < 0 else cond_maps[ci]
            with _RestoredRNG(ctx.states[j], ctx.devices), torch.no_grad():
                x, _ = layer.inverse(h, None if cond is None else cond.detach())
            with _RestoredRNG(ctx.states[j], ctx.devices), torch.enable_grad():
                x_leaf = x.detach().requires_grad_(True)
                y, ld = layer(x_leaf, cond)
                pairs = [(t, g) for t, g in ((y, grad_h), (ld, grad_logdet)) if t.requires_grad]
                # the condition's tensors that need a gradient, by index into the flattened ones
                cis = [] if ci < 0 else [i for i in plan.maps[ci][1] if cond_leaves[i].requires_grad]
                wrt = [x_leaf, *(cond_leaves[i] for i in cis), *(plan.params[i] for i in pidx)]
                grads = torch.autograd.grad(
                    [t for t, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True
                )
            grad_h = grads[0] if grads[0] is not None else torch.zeros_like(x)
            for i, g in zip(cis, grads[1 : 1 + len(cis)]):
                if g is not None:
                    cond_grads[i] = g if cond_grads[i] is None else cond_grads[i] + g
            for i, g in zip(pidx, grads[1 + len(cis) :]):
                if g is not None:
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
            h = x.detach()
        return None, grad_h, grad_logdet, *cond_grads, *param_grads


def invertible_forward(
    steps: Sequence[Step], x: Tensor, logdet: Tensor, *, preserve_rng_state: bool = True
) -> tuple[Tensor, Tensor]:
    """Run ``steps`` on ``x`` with *invertible backpropagation*; returns ``(output, logdet)``.

    Each step is a list of ``(layer, cond)`` pairs, run in order; a step's log-dets are summed
    from zero and added to ``logdet`` (the arithmetic of :class:`Sequential`, so the values are
    bit-for-bit those of the ordinary forward). The forward pass keeps no activation but the
    output (each layer's graph is dropped as soon as the layer returns); the backward pass
    reconstructs each layer's input from its output with ``layer.inverse``, re-runs the layer's
    forward under autograd and backpropagates through it, one layer at a time, so the memory of the
    activations does not grow with the number of steps (one layer's at a time, plus each chain's
    output).
    Gradients reach ``x``, ``logdet``, every ``cond`` and every parameter of the layers, as on the
    ordinary path.

    Points to know:

    * ``preserve_rng_state`` (default): the CPU (and CUDA) RNG state before every layer is saved and
      restored for its inverse and its re-run forward (as ``torch.utils.checkpoint`` does), so
      dropout draws the same masks. This needs a layer's inverse to draw the same random numbers as
      its forward, which holds for couplings whose network runs once on the pass-through half;
      the global RNG after the step is the one of the ordinary path.
    * The reconstructed inputs carry the inverse's rounding error, which grows with depth, so the
      gradients are those at a slightly different point (rounding level of the dtype, times the
      depth). Layers with an iterative inverse (MixtureLogisticCoupling's bracketed Newton) are
      exact to a few ulps but make the backward pass slower.
    * Call it after data-dependent initialisation (ActNorm's ``initialize``): it is meant for
      training steps, under ``torch.enable_grad()``. Double backward (``create_graph``) is not
      supported.
    * Cost: one more forward and one inverse of every layer per training step.
    """
    steps = [list(step) for step in steps if len(step)]
    if not steps:
        return x, logdet
    plan = _Plan(steps, preserve_rng_state)
    return _InvertibleSteps.apply(plan, x, logdet, *plan.conds, *plan.params)


def sequential_invertible(
    flow: Sequential, x: Tensor, cond: Tensor | None = None, *, preserve_rng_state: bool = True
) -> tuple[Tensor, Tensor]:
    """``flow(x, cond)`` with its steps of flow (the items that are themselves a :class:`Sequential`,
    as in a multi-scale level ``Sequential(Squeeze, step, ..., step)``) run by
    :func:`invertible_forward`; the other items (a squeeze) run as usual. Same values as
    ``flow(x, cond)``; see :func:`invertible_forward` for the memory it saves and its cost."""
    logdet = zeros_logdet(x)
    pending: list[Step] = []
    for f in flow:
        if isinstance(f, Sequential):
            pending.append([(layer, cond) for layer in f])
            continue
        if pending:
            x, logdet = invertible_forward(pending, x, logdet, preserve_rng_state=preserve_rng_state)
            pending = []
        x, ld = f(x, cond)
        logdet = logdet + ld
    if pending:
        x, logdet = invertible_forward(pending, x, logdet, preserve_rng_state=preserve_rng_state)
    return x, logdet
