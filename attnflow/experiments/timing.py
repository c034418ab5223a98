"""The one timer of the project: functions run in turn, round by round, the device synchronised.

Interleaving (``a, b, c, a, b, c, ...``) puts every function through the same phases of a machine
whose speed drifts, so the ratios of their times hold even on a busy or shared machine.

Why not ``torch.utils.benchmark.Timer``: it times one statement at a time (``timeit`` and
``blocked_autorange`` repeat the same statement back to back, with no way to alternate several),
every ``timeit(n)`` call first runs ``max(n // 100, 2)`` untimed calls of its own (a training
step would be run three times per timed one, and its optimiser moved each time), and it sets the
torch thread count to its ``num_threads`` (default 1) while it measures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

__all__ = ["synchronize", "time_rounds"]


def synchronize(device: torch.device | str) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_rounds(
    fns: Mapping[str, Callable[[], object]],
    device: torch.device | str = "cpu",
    *,
    warmup: int = 0,
    repeats: int = 5,
) -> dict[str, list[float]]:
    """Milliseconds per call of each function, one entry per timed round.

    ``warmup`` untimed rounds come first; each round calls every function once, in the order of
    ``fns``, the device synchronised before and after each call.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            if i >= warmup:
                times[name].append(1e3 * (time.perf_counter() - t0))
    return times

