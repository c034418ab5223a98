"""Training: the loop, the optimiser and schedule, checkpoints, run logs, benchmarks, comparisons."""

from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .loop import ResumableBatches, TrainingError, train

__all__ = [
    "train",
    "TrainingError",
    "ResumableBatches",
    "CheckpointError",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
