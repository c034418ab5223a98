"""The one contract every invertible layer follows, composition, and input checks.

A :class:`Flow` maps data to latent in ``forward`` and latent to data in ``inverse``. Both return
``(output, logdet)`` where ``logdet`` has shape ``[B]`` and is the log-absolute-determinant of the
Jacobian of *that* direction, so ``forward(x)[1] == -inverse(forward(x)[0])[1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "Flow",
    "Sequential",
    "Inverse",
    "check_input",
    "check_cond",
    "UpsampledConcat",
    "dense_map",
    "zeros_logdet",
    "no_logdet",
    "logdet_wanted",
    "initialize_data_dependent",
    "invertible_forward",
    "sequential_invertible",
]


class Flow(nn.Module):
    """Invertible map, data -> latent. Both directions return ``(output, logdet)``, logdet of shape [B].

    Subclasses implement :meth:`forward` and :meth:`inverse`. ``cond`` is the conditioning feature
    map for this layer, already at the layer's resolution; unconditional layers ignore it.

    Inside :func:`no_logdet` the caller discards the log-dets (sampling, decoding): a layer whose
    log-det costs work beyond its output may then return zeros instead (see
    :func:`logdet_wanted`); its output stays exactly the same.
    """

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:  # noqa: D401
        raise NotImplementedError

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Sequential(Flow):
    """Composition ``f_n o ... o f_1``; log-dets add. ``inverse`` runs the layers in reverse."""

    def __init__(self, *flows: Flow) -> None:
        super().__init__()
        if len(flows) == 1 and isinstance(flows[0], (list, tuple)):
            flows = tuple(flows[0])
        for i, f in enumerate(flows):
            if not isinstance(f, Flow):
                raise TypeError(f"Sequential: item {i} must be a Flow, got {type(f).__name__}")
        self.flows = nn.ModuleList(flows)

    def __len__(self) -> int:
        return len(self.flows)

    def __iter__(self) -> Iterator[Flow]:
        return iter(self.flows)

    def __getitem__(self, i: int) -> Flow:
        return self.flows[i]

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = zeros_logdet(x)
        for f in self.flows:
            x, ld = f(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = zeros_logdet(z)
        for f in reversed(self.flows):
            z, ld = f.inverse(z, cond)
            logdet = logdet + ld
        return z, logdet


class Inverse(Flow):
    """Swaps the directions of a flow (``forward`` runs ``flow.inverse``)."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow.inverse(x, cond)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow(z, cond)


def zeros_logdet(x: Tensor) -> Tensor:
    """A ``[B]`` zero log-det matching ``x``'s batch, dtype and device."""
    return x.new_zeros(x.shape[0])


_LOGDET_WANTED: ContextVar[bool] = ContextVar("attnflow_logdet_wanted", default=True)


@contextmanager
def no_logdet() -> Iterator[None]:
    """Within this block the log-dets that flows return are discarded by the caller, so a layer may
    return zeros where computing its log-det costs extra work (e.g. the mixture-logistic
    coupling's inverse, whose log-det needs a second pass over all components). Outputs are
    unchanged. Nests; the previous state is restored on exit."""
    token = _LOGDET_WANTED.set(False)
    try:
        yield
    finally:
        _LOGDET_WANTED.reset(token)


def logdet_wanted() -> bool:
    """False inside :func:`no_logdet`: the log-det a flow returns now will not be used."""
    return _LOGDET_WANTED.get()


def _layer_name(layer: nn.Module | str) -> str:
    return layer if isinstance(layer, str) else type(layer).__name__


def check_input(
    layer: nn.Module | str,
    x: Tensor,
    channels: int | None = None,
    *,
    divisible_by: int | tuple[int, int] | None = None,
    what: str = "input",
) -> None:
    """Raise ``ValueError`` unless ``x`` is a 4D ``[B, C, H, W]`` tensor with the expected channels.

    ``divisible_by`` asks H and W to be multiples of a number (or of ``(dh, dw)``).
    """
    name = _layer_name(layer)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name}: expected a 4D {what} [B, C, H, W], got shape {tuple(x.shape)} ({x.dim()}D)"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name}: built for {channels} channels, expected {what} [B, {channels}, H, W], "
            f"got shape {tuple(x.shape)}"
        )
    if divisible_by is not None:
        dh, dw = (divisible_by, divisible_by) if isinstance(divisible_by, int) else divisible_by
        h, w = x.shape[2], x.shape[3]
        if h % dh or w % dw:
            raise ValueError(
                f"{name}: {what} height and width must be divisible by ({dh}, {dw}), "
                f"got H={h}, W={w} (shape {tuple(x.shape)})"
            )


class UpsampledConcat:
    """A conditioning map ``cat([fine, upsample_nearest(coarse, factor)], dim=1)`` kept factored.

    SRFlow's encoder stacks features computed at the LR resolution, replicated ``factor`` times up to
    a flow level, with features computed at the level's own resolution. Kept apart, a convolution
    of the map can run its coarse part at the coarse resolution
    (:func:`attnflow.nn.conv2d_on_map`: for a 3x3 kernel and ``factor = 4`` 4x fewer
    multiply-adds than on the replicated map), with the same result up to rounding.
    :meth:`dense` builds the ordinary tensor for everything else.

    It offers what the layers and models ask of a conditioning map: ``shape``, ``dim()``,
    ``dtype``, ``device``, ``is_floating_point()``, ``to(dtype)``, ``expand(n, ...)`` and
    ``repeat_interleave(n, dim=0)`` along the batch, and :meth:`prepend` (channels in front, as a
    coupling concatenates its pass-through half).
    """

    __slots__ = ("fine", "coarse", "factor")

    def __init__(self, fine: Tensor | None, coarse: Tensor, factor: int) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"UpsampledConcat: factor must be a positive int, got {factor!r}")
        if not isinstance(coarse, Tensor) or coarse.dim() != 4:
            got = tuple(coarse.shape) if isinstance(coarse, Tensor) else type(coarse).__name__
            raise ValueError(f"UpsampledConcat: expected a 4D coarse map [B, C, h, w], got {got}")
        if fine is not None:
            b, _, h, w = coarse.shape
            expected = (b, h * factor, w * factor)
            if not isinstance(fine, Tensor) or fine.dim() != 4 or (fine.shape[0], *fine.shape[2:]) != expected:
                got = tuple(fine.shape) if isinstance(fine, Tensor) else type(fine).__name__
                raise ValueError(
                    f"UpsampledConcat: the fine map must be [{b}, C, {h * factor}, {w * factor}] "
                    f"(the coarse map {tuple(coarse.shape)} times factor={factor}), got {got}"
                )
            if (fine.dtype, fine.device) != (coarse.dtype, coarse.device):
                raise ValueError(
                    f"UpsampledConcat: fine and coarse maps differ in dtype or device "
                    f"({fine.dtype}, {fine.device} against {coarse.dtype}, {coarse.device})"
                )
        self.fine, self.coarse, self.factor = fine, coarse, factor

    @property
    def fine_channels(self) -> int:
        return 0 if self.fine is None else self.fine.shape[1]

    @property
    def shape(self) -> torch.Size:
        b, c, h, w = self.coarse.shape
        return torch.Size((b, self.fine_channels + c, h * self.factor, w * self.factor))

    def dim(self) -> int:
        return 4

    @property
    def dtype(self) -> torch.dtype:
        return self.coarse.dtype

    @property
    def device(self) -> torch.device:
        return self.coarse.device

    def is_floating_point(self) -> bool:
        return self.coarse.is_floating_point()

    def tensors(self) -> list[Tensor]:
        """The parts, fine first (what :meth:`with_tensors` takes back)."""
        return [self.coarse] if self.fine is None else [self.fine, self.coarse]

    def with_tensors(self, tensors: Sequence[Tensor]) -> UpsampledConcat:
        """The same map built from other tensors of the parts' shapes (see :meth:`tensors`)."""
        if self.fine is None:
            return UpsampledConcat(None, tensors[0], self.factor)
        return UpsampledConcat(tensors[0], tensors[1], self.factor)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> UpsampledConcat:
        return UpsampledConcat(None if self.fine is None else fn(self.fine), fn(self.coarse), self.factor)

    def dense(self) -> Tensor:
        """The ordinary ``[B, C, H, W]`` tensor."""
        up = self.coarse
        if self.factor > 1:
            up = F.interpolate(up, scale_factor=self.factor, mode="nearest")
        return up if self.fine is None else torch.cat([self.fine, up], dim=1)

    def prepend(self, x: Tensor) -> UpsampledConcat:
        """``cat([x, self], dim=1)``, still factored (``x`` joins the fine part)."""
        fine = x if self.fine is None else torch.cat([x, self.fine], dim=1)
        return UpsampledConcat(fine, self.coarse, self.factor)

    def to(self, dtype: torch.dtype) -> UpsampledConcat:
        return self._map(lambda t: t.to(dtype))

    def detach(self) -> UpsampledConcat:
        return self._map(Tensor.detach)

    def expand(self, n: int, *rest: int) -> UpsampledConcat:
        """Along the batch only (``rest`` must be this map's other sizes, as ``Tensor.expand``)."""
        if tuple(rest) != tuple(self.shape[1:]):
            raise ValueError(f"UpsampledConcat.expand: only the batch can grow, got sizes {(n, *rest)}")
        return self._map(lambda t: t.expand(n, *t.shape[1:]))

    def repeat_interleave(self, repeats: int, dim: int = 0) -> UpsampledConcat:
        if dim != 0:
            raise ValueError(f"UpsampledConcat.repeat_interleave: only along the batch (dim=0), got dim={dim}")
        return self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def __repr__(self) -> str:
        fine = None if self.fine is None else tuple(self.fine.shape)
        return f"UpsampledConcat(fine={fine}, coarse={tuple(self.coarse.shape)}, factor={self.factor})"


def dense_map(cond: Tensor | UpsampledConcat | None) -> Tensor | None:
    """``cond`` as an ordinary tensor (an :class:`UpsampledConcat` is built out)."""
    return cond.dense() if isinstance(cond, UpsampledConcat) else cond


def check_cond(
    layer: nn.Module | str,
    cond: Tensor | UpsampledConcat | None,
    x: Tensor,
    channels: int,
    *,
    keep_factored: bool = False,
) -> Tensor | UpsampledConcat:
    """Validate a conditioning map: 4D, ``channels`` channels, same batch and H, W as ``x``.

    Returns the map; an :class:`UpsampledConcat` comes back as it is with ``keep_factored`` (for a
    layer whose network can use it, see :func:`attnflow.nn.network_input`), otherwise dense."""
    name = _layer_name(layer)
    if cond is None:
        raise ValueError(
            f"{name}: this layer is conditional and needs cond [B, {channels}, H, W], got None"
        )
    if not isinstance(cond, (Tensor, UpsampledConcat)) or cond.dim() != 4:
        shape = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
        raise ValueError(f"{name}: expected a 4D cond [B, {channels}, H, W], got {shape}")
    expected = (x.shape[0], channels, x.shape[2], x.shape[3])
    if tuple(cond.shape) != expected:
        raise ValueError(
            f"{name}: expected cond of shape {expected} (batch and size of the input), "
            f"got {tuple(cond.shape)}"
        )
    return cond if keep_factored else dense_map(cond)


def initialize_data_dependent(
    module: nn.Module, run: Callable[..., object], *args, **kwargs
) -> None:
    """Data-dependent initialisation of every ActNorm-like submodule in one pass.

    Every submodule that has ``_init_pending`` (ActNorm and friends) is armed; ``run(*args)`` is then
    called once under ``no_grad``: each armed module initialises itself from the activation it sees
    and disarms. Call it once, before wrapping the model in DistributedDataParallel.
    """
    armed = [m for m in module.modules() if hasattr(m, "_init_pending")]
    for m in armed:
        m._init_pending = True
    try:
        with torch.no_grad():
            run(*args, **kwargs)
    finally:
        for m in armed:
            m._init_pending = False



# ------------------------------------------------------------------------------------------------
# invertible backpropagation: activations recomputed from the outputs on the backward pass
# ------------------------------------------------------------------------------------------------

Step = Sequence[tuple[Flow, "Tensor | UpsampledConcat | None"]]
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

    A condition is a tensor or an :class:`UpsampledConcat`, whose parts are passed as separate
    tensors: ``maps[i]`` is ``(template, tensor indices)`` of the ``i``-th distinct condition
    (``template`` ``None`` for a plain tensor)."""

    def __init__(self, steps: Sequence[Step], preserve_rng_state: bool) -> None:
        seen: dict[int, int] = {}  # id of a condition -> index into maps
        params: dict[int, int] = {}
        self.conds: list[Tensor] = []
        self.maps: list[tuple[UpsampledConcat | None, list[int]]] = []
        self.params: list[Tensor] = []
        self.steps: list[list[tuple[Flow, int, list[int]]]] = []
        for step in steps:
            layers = []
            for layer, cond in step:
                ci = -1
                if cond is not None:
                    if id(cond) not in seen:
                        parts = cond.tensors() if isinstance(cond, UpsampledConcat) else [cond]
                        idx = list(range(len(self.conds), len(self.conds) + len(parts)))
                        self.conds.extend(parts)
                        seen[id(cond)] = len(self.maps)
                        self.maps.append((cond if isinstance(cond, UpsampledConcat) else None, idx))
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

    def build(self, tensors: Sequence[Tensor]) -> list[Tensor | UpsampledConcat]:
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
      gradients are those at a slightly different point: in float32 they differ from the ordinary
      path's by about 2e-6 (relative, whole gradient) for mARFlow 3/4/96 and SRFlow 2/8 at
      initialisation, in float64 by about 1e-14. Layers with an iterative inverse (MixtureLogisticCoupling's bracketed
      Newton) are exact to a few ulps but make the backward pass slower.
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
