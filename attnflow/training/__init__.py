"""Training: the loop, the optimiser and schedule, checkpoints, run logs, benchmarks, comparisons."""

from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .loop import ResumableBatches, TrainingError, TrainingInterrupted, train
from .rundir import RunDirError

__all__ = [
    "train",
    "TrainingError",
    "TrainingInterrupted",
    "RunDirError",
    "ResumableBatches",
    "CheckpointError",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
