"""The state of a run as it goes on (:class:`RunState`), where a resumed run starts from
(:func:`resume_point`), and what makes a state good to save (:func:`finite_state`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import load_checkpoint
from .rundir import RunDirError, logged_steps, resume_config, stored_config

__all__ = ["RunState", "resume_point", "finite_state", "score", "unscore"]


@dataclass
class RunState:
    """What changes as the run goes on (a checkpoint stores the first four)."""

    step: int  # steps done: the 0-based index of the next one
    best: float = math.inf  # the best test score so far: the metric, negated when higher is better
    bad_in_a_row: int = 0  # skipped (non-finite) steps in a row, as of the guard's last read
    last_test: float | None = None  # the last evaluated test metric
    last_good_step: int | None = None  # the step of the last checkpoint written (always a good state)
    last_saved: int = 0  # the step the model was last saved at (or the run started from)
    pending: bool = False  # a checkpoint was due but the state was not good: save at the next good step
    running: float | None = None  # the running training loss (progress bar)
    updating: bool = False  # inside the update: the model is between two steps and cannot be saved
    boundary_rng: dict | None = None  # the RNG of the step boundary the model is at (None: the current one)

    @classmethod
    def resumed(cls, state: dict, metric: str, higher: bool, best_path: Path) -> RunState:
        """The counters of a run resumed from checkpoint ``state``."""
        step = int(state["step"])
        run = cls(step=step, last_saved=step, last_good_step=step, bad_in_a_row=int(state.get("bad_steps", 0)),
                  best=score(state.get(f"best_test_{metric}"), higher), last_test=state.get(f"last_test_{metric}"))
        if best_path.is_file():  # a save killed between best.pt and last.pt: best.pt knows better
            try:
                run.best = min(run.best, score(load_checkpoint(best_path).get(f"best_test_{metric}"), higher))
            except Exception:  # noqa: BLE001 - an unreadable best.pt is replaced by the next best
                pass
        return run


def resume_point(config: dict, out: Path) -> tuple[dict, dict | None]:
    """The config a resumed run in ``out`` goes on with, and its last.pt's state (None: no
    checkpoint yet, the run restarts at step 0 with its config.yaml)."""
    last_path, metrics_path = out / "checkpoints" / "last.pt", out / "metrics.jsonl"
    if last_path.is_file():
        state = load_checkpoint(last_path)
        return resume_config(config, state["config"], last_path, int(state["step"])), state
    stored = stored_config(out)
    if stored is None:
        raise RunDirError(
            f"--resume: {out} holds no run to resume (no {last_path} and no config.yaml); start it without --resume"
        )
    logged = logged_steps(metrics_path)
    if logged > 0:  # resuming from step 0 would drop the logged steps
        raise RunDirError(
            f"--resume: {metrics_path} records training up to step {logged}, but {last_path} is missing, "
            f"so the run would restart at step 0 and discard them; restore {last_path}, or start afresh "
            f"with --overwrite (the folder is moved aside)"
        )
    return resume_config(config, stored[0], stored[1], 0), None


def finite_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether every floating tensor of the model and the optimiser's state is finite."""
    tensors = [*model.state_dict().values(), *(v for s in optimizer.state.values() for v in s.values())]
    return all(bool(torch.isfinite(v).all()) for v in tensors
               if isinstance(v, Tensor) and (v.is_floating_point() or v.is_complex()))


def score(value, higher: bool) -> float:
    """The metric as a score to minimise (``inf`` for none or a non-finite value)."""
    v = math.inf if value is None else float(value)
    if not math.isfinite(v):
        return math.inf
    return -v if higher else v


def unscore(score: float, higher: bool) -> float:
    """The metric of a score (:func:`score`'s inverse)."""
    return -score if higher and math.isfinite(score) else score
