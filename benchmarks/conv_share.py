"""How much of a training step its convolutions take when run alone: the floor of exact speed-ups.

    python benchmarks/conv_share.py --preset mnist-3-2-48-none --batch 32 --repeats 7

Records every convolution of one training step (each ``aten.convolution`` of the forward pass and
each ``aten.convolution_backward`` of the backward pass, with its shapes, strides, dtype, geometry
and output mask) and replays them, in the same order and layouts, on random tensors of the same
shapes. Full training steps (forward, backward, clipping, Adamax) and replays alternate round by
round, so the machine's drift hits both alike. It prints one Markdown row: the step, the replay,
their median per-round ratio (the convolutions' share of the step) and the per-round range.

A change that leaves the convolutions as they are (same shapes, same kernels, exact float32) can at
best remove the rest of the step: with a share ``s``, at most ``1 / s`` times faster. The replay
runs each convolution on its own, without the element-wise work around it, so it slightly
underestimates what the convolutions cost inside the step (the caches are not warmed by the
neighbouring work, but neither are they disturbed by it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnflow.nn import AUTOCAST_DTYPES, network_autocast
from attnflow.training.bench import training_step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arprior import _timer_rounds  # noqa: E402  (interleaved rounds)
from flops import add_model_arguments, initialised_model  # noqa: E402  (the same model set-up)

aten = torch.ops.aten


@dataclass(frozen=True)
class TensorSpec:
    """Shape, strides and dtype of a recorded argument (its layout, e.g. channels-last)."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, t: torch.Tensor) -> TensorSpec:
        return cls(tuple(t.shape), tuple(t.stride()), t.dtype)

    def make(self, device: torch.device) -> torch.Tensor:
        """A random tensor with exactly this layout."""
        t = torch.empty_strided(self.size, self.stride, dtype=self.dtype, device=device)
        return t.normal_()


@dataclass(frozen=True)
class ConvCall:
    """One recorded convolution: ``backward`` is None for a forward call, else its output mask."""

    tensors: tuple[TensorSpec | None, ...]  # forward: x, w, bias; backward: grad_out, x, w
    geometry: tuple  # stride, padding, dilation, transposed, output_padding, groups
    backward: tuple[bool, bool, bool] | None = None
    bias_sizes: tuple[int, ...] | None = None  # backward only; (0,) when the conv has no bias


class _Recorder(TorchDispatchMode):
    """Records the convolutions dispatched while active (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ConvCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten.convolution.default:
            x, w, b, *geometry = args
            self.calls.append(ConvCall((TensorSpec.of(x), TensorSpec.of(w),
                                        None if b is None else TensorSpec.of(b)), tuple(geometry)))
        elif func is aten.convolution_backward.default:
            grad_out, x, w, bias_sizes, *geometry, mask = args
            self.calls.append(ConvCall((TensorSpec.of(grad_out), TensorSpec.of(x), TensorSpec.of(w)),
                                       tuple(geometry), tuple(bool(m) for m in mask),
                                       None if bias_sizes is None else tuple(bias_sizes)))
        return func(*args, **(kwargs or {}))


def record_convolutions(fn: Callable[[], object]) -> list[ConvCall]:
    """The convolutions that ``fn()`` runs (a forward and its ``backward()``), in order."""
    recorder = _Recorder()
    with recorder:
        fn()
    return recorder.calls


def replayer(calls: list[ConvCall], device: torch.device) -> Callable[[], None]:
    """A function that runs every recorded convolution once, in order, on fixed random inputs."""
    thunks: list[Callable[[], object]] = []
    for call in calls:
        tensors = [None if s is None else s.make(device) for s in call.tensors]
        if call.backward is None:
            x, w, b = tensors
            thunks.append(lambda x=x, w=w, b=b, g=call.geometry: aten.convolution(x, w, b, *g))
        else:
            grad_out, x, w = tensors
            bias = None if call.bias_sizes is None else list(call.bias_sizes)
            thunks.append(lambda go=grad_out, x=x, w=w, b=bias, g=call.geometry, m=list(call.backward):
                          aten.convolution_backward(go, x, w, b, *g, m))

    def replay() -> None:
        for thunk in thunks:
            thunk()

    return replay


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    config, model, batch = initialised_model(args, p)
    device = torch.device(args.device)
    low = AUTOCAST_DTYPES.get(config["train"].get("autocast"))
    step = training_step(model, batch, torch.optim.Adamax(model.parameters(), lr=1e-4), low)
    step()  # lazily built state (buffers, optimiser moments) before recording

    def forward_backward() -> None:
        with network_autocast(low):
            loss = model(batch)
        loss.backward()

    calls = record_convolutions(forward_backward)
    model.zero_grad(set_to_none=True)
    n_fwd = sum(c.backward is None for c in calls)
    times = _timer_rounds({"step": step, "convs": replayer(calls, device)}, device, args.warmup,
                          args.repeats)
    shares = [c / s for s, c in zip(times["step"], times["convs"])]
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print("| preset | batch | threads | conv calls (fwd + bwd) | step ms | convs alone ms | share | "
          "share range |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.preset} {' '.join(args.overrides)} | {args.batch} | {threads} | "
          f"{n_fwd} + {len(calls) - n_fwd} | {statistics.median(times['step']):.1f} | "
          f"{statistics.median(times['convs']):.1f} | {statistics.median(shares):.3f} | "
          f"{min(shares):.3f}-{max(shares):.3f} |")


if __name__ == "__main__":
    main()
