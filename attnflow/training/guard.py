"""The training step's non-finite guard: a step whose loss or gradient norm is not finite is
skipped (no optimiser update), and too many skipped steps in a row stop the run.

Two guards with one interface, so the training step does not care which it has:

* :class:`HostGuard` (``train.device_guard: false``) reads the decision back to the host every
  step and steps the optimiser or not;
* :class:`DeviceGuard` (``true``) never reads inside the step, which would stall a GPU pipeline:
  it applies the step unconditionally and puts every tensor the step touched back where the
  decision (a 0-dim bool tensor on the device) says "skip"; its counters stay on the device.

Both keep the number of skipped steps in a row and a running loss; the loop reads them with
:meth:`read` (for the device guard, only at its log, evaluation and checkpoint points:
``read_every_step`` is false).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["HostGuard", "DeviceGuard", "make_guard"]


class HostGuard:
    """Skip a non-finite step, decided on the host (one read of the decision per step).

    :meth:`step` applies ``optimizer.step()`` when ``finite`` holds and drops the gradients
    otherwise; :meth:`record` keeps the number of skipped steps in a row, the running loss
    (``0.98 r + 0.02 loss`` over finite steps) and the last step's loss and decision.
    """

    #: reading the counters costs nothing: the loop reads them (and stops on too many skipped
    #: steps) after every step
    read_every_step = True

    def __init__(self, device: torch.device | None = None, bad_steps: int = 0) -> None:
        self.bad = int(bad_steps)
        self.running: float | None = None
        self.last_value = 0.0
        self.last_finite = True

    def step(self, optimizer: torch.optim.Optimizer, finite: Tensor) -> None:
        """``optimizer.step()`` if ``finite`` (0-dim bool) holds, else no change."""
        if bool(finite):
            optimizer.step()
        else:
            optimizer.zero_grad(set_to_none=True)

    def record(self, loss: Tensor, finite: Tensor) -> None:
        """Update the counters with this step's loss and decision."""
        self.last_finite = bool(finite)
        if not self.last_finite:
            self.bad += 1
            return
        self.bad = 0
        self.last_value = float(loss.detach())
        self.running = self.last_value if self.running is None else 0.98 * self.running + 0.02 * self.last_value

    def read(self) -> tuple[int, float | None, float, bool]:
        """``(skipped steps in a row, running loss or None, last loss, last step finite)``."""
        return self.bad, self.running, self.last_value, self.last_finite


class DeviceGuard:
    """Skip a non-finite step on the device, with the host guard's semantics.

    :meth:`step` copies the parameters that have a gradient and their optimiser state tensors
    (``step``, the moments) into buffers, runs ``optimizer.step()`` and sets every one back with
    ``torch.where(finite, new, saved)``: a skipped step leaves them bit for bit as they were, as
    the host guard does by not stepping. The state of a parameter exists only after its first
    update (the first step, or the first after its freeze): until then the decision is read on the
    host (one read) and the step is taken or not as on the host path.

    :meth:`record` keeps, on the device, the number of skipped steps in a row, the running loss
    (``0.98 r + 0.02 loss`` over finite steps) and the last step's loss and decision; :meth:`read`
    returns them with one transfer.

    On CUDA the optimiser's step counters must live on the device (``capturable=True``), or the
    restore would read them back; on CPU nothing is ever a transfer.
    """

    #: a read is a host synchronisation: the loop reads only where it logs, evaluates or saves
    read_every_step = False

    def __init__(self, device: torch.device, bad_steps: int = 0) -> None:
        self.device = torch.device(device)
        self.bad = torch.tensor(int(bad_steps), dtype=torch.long, device=self.device)
        self.running = torch.zeros((), dtype=torch.float64, device=self.device)
        self.has_running = torch.zeros((), dtype=torch.bool, device=self.device)
        self.last_value = torch.zeros((), dtype=torch.float64, device=self.device)
        self.last_finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._buffers: dict[int, Tensor] = {}
        self._optimizer: torch.optim.Optimizer | None = None

    def _tensors(self, optimizer: torch.optim.Optimizer) -> list[Tensor] | None:
        """What ``optimizer.step()`` writes, or ``None`` while a stepped parameter has no state yet."""
        tensors: list[Tensor] = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = optimizer.state.get(p)
                if not state:
                    return None
                tensors.append(p)
                tensors.extend(v for v in state.values() if isinstance(v, Tensor))
        return tensors

    def step(self, optimizer: torch.optim.Optimizer, finite: Tensor) -> None:
        """``optimizer.step()`` where ``finite`` (0-dim bool, on the device) holds, else no change."""
        if optimizer is not self._optimizer:  # the buffers belong to one optimiser's tensors
            self._buffers, self._optimizer = {}, optimizer
        tensors = self._tensors(optimizer)
        if tensors is None:  # its state is created by this step: decide on the host, once
            if bool(finite):
                optimizer.step()
            return
        saved = []
        for t in tensors:
            buf = self._buffers.get(id(t))
            if buf is None or buf.shape != t.shape or buf.dtype != t.dtype or buf.device != t.device:
                buf = self._buffers[id(t)] = torch.empty_like(t)
            saved.append(buf)
        with torch.no_grad():
            torch._foreach_copy_(saved, tensors)
            optimizer.step()
            for t, old in zip(tensors, saved):
                t.copy_(torch.where(finite.to(t.device), t, old))

    def record(self, loss: Tensor, finite: Tensor) -> None:
        """Update the device counters with this step's loss and decision."""
        with torch.no_grad():
            value = loss.detach().to(torch.float64)
            self.bad = torch.where(finite, torch.zeros_like(self.bad), self.bad + 1)
            ema = torch.where(self.has_running, 0.98 * self.running + 0.02 * value, value)
            self.running = torch.where(finite, ema, self.running)
            self.has_running = self.has_running | finite
            self.last_value, self.last_finite = value, finite.clone()

    def read(self) -> tuple[int, float | None, float, bool]:
        """``(skipped steps in a row, running loss or None, last loss, last step finite)``, one
        transfer to the host."""
        bad, running, has, last, finite = torch.stack([
            self.bad.to(torch.float64), self.running, self.has_running.to(torch.float64),
            self.last_value, self.last_finite.to(torch.float64),
        ]).tolist()
        return int(bad), (running if has else None), last, bool(finite)


def make_guard(device: torch.device, bad_steps: int = 0, *, on_device: bool = False) -> HostGuard | DeviceGuard:
    """The guard ``train.device_guard`` (``on_device``) asks for, starting at ``bad_steps``
    skipped steps in a row (a resumed run's count)."""
    return DeviceGuard(device, bad_steps) if on_device else HostGuard(device, bad_steps)
