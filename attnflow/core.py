"""The one contract every invertible layer follows, composition, and input checks.

A :class:`Flow` maps data to latent in ``forward`` and latent to data in ``inverse``. Both return
``(output, logdet)`` where ``logdet`` has shape ``[B]`` and is the log-absolute-determinant of the
Jacobian of *that* direction, so ``forward(x)[1] == -inverse(forward(x)[0])[1]``.

Here: :class:`Flow`, :class:`Sequential`, :class:`Inverse`, the log-det switch
(:func:`no_logdet`), the input checks (:func:`check_input`, :func:`check_cond`) and the
data-dependent initialisation (:func:`initialize_data_dependent`). Training with activations
recomputed from the outputs lives in :mod:`attnflow.invertible_backprop`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn

__all__ = [
    "Flow",
    "Sequential",
    "Inverse",
    "check_input",
    "check_cond",
    "check_cond_shape",
    "zeros_logdet",
    "no_logdet",
    "logdet_wanted",
    "initialize_data_dependent",
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


def check_cond(layer: nn.Module | str, cond: Tensor | None, x: Tensor, channels: int) -> Tensor:
    """Validate a conditioning map: 4D, ``channels`` channels, same batch and H, W as ``x``.

    Returns the map."""
    name = _layer_name(layer)
    if cond is None:
        raise ValueError(
            f"{name}: this layer is conditional and needs cond [B, {channels}, H, W], got None"
        )
    if not isinstance(cond, Tensor) or cond.dim() != 4:
        shape = tuple(cond.shape) if isinstance(cond, Tensor) else type(cond).__name__
        raise ValueError(f"{name}: expected a 4D cond [B, {channels}, H, W], got {shape}")
    check_cond_shape(layer, tuple(cond.shape), x, channels)
    return cond


def check_cond_shape(layer: nn.Module | str, shape: tuple[int, ...], x: Tensor, channels: int) -> None:
    """Refuse a conditioning ``shape`` other than ``[B, channels, H, W]`` with ``x``'s B, H and W."""
    expected = (x.shape[0], channels, x.shape[2], x.shape[3])
    if tuple(shape) != expected:
        raise ValueError(
            f"{_layer_name(layer)}: expected cond of shape {expected} (batch and size of the input), "
            f"got {tuple(shape)}"
        )


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
