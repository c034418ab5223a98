"""Ctrl-C while training: the first one finishes the current step and saves a checkpoint, a
second one stops at once (the last good checkpoint stays)."""

from __future__ import annotations

import signal
import sys
import threading

__all__ = ["TrainingInterrupted", "StopNow", "StopAtStepBoundary"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by Ctrl-C; the message says which checkpoint to ``--resume`` from."""


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once, without saving."""


class StopAtStepBoundary:
    """SIGINT handler while training (a context manager): the first Ctrl-C only sets
    :attr:`requested`, which the loop checks once a step is finished; a second one raises
    :class:`StopNow`. Installed only in the main thread (signals go nowhere else)."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None
        self.installed = False

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise StopNow()
        self.requested = True
        print("\ninterrupt: finishing the current step and saving a checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopAtStepBoundary:
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.signal(signal.SIGINT, self)
                self.installed = True
            except (ValueError, OSError):  # pragma: no cover - e.g. embedded interpreters
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            self.installed = False
