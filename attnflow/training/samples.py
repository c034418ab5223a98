"""The sample grids a run writes at each evaluation (``OUT/samples/step_XXXXXXX_tT.png``)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset, default_collate

from ..images import save_grid, temperature_label
from ..models import TrainableModel

__all__ = ["save_samples"]


def save_samples(model: TrainableModel, test_set: Dataset, t: dict, folder: Path, step: int) -> None:
    """One grid of ``train.n_samples`` samples per ``train.sample_temperatures`` (conditional
    models: condition | sample | target of the first test items), drawn from the global RNG."""
    cond, targets = _sample_conditions(model, test_set, t["n_samples"])
    # a deterministic model (the rrdb network) gives the same grid at every temperature
    temps = t["sample_temperatures"] if model.stochastic else t["sample_temperatures"][:1]
    for temp in temps:
        n = t["n_samples"] if cond is None else cond.shape[0]
        imgs = model.visualize(cond, model.sample(n, cond, temperature=float(temp)), targets)
        save_grid(imgs, folder / f"step_{step:07d}_t{temperature_label(float(temp))}.png", header=model.panel_titles)


def _sample_conditions(model: TrainableModel, dataset: Dataset, n: int) -> tuple[Tensor | None, Tensor | None]:
    """For conditional models, the conditions and targets of the first ``n`` (at most 16) test
    items (the grids show condition | sample | target); ``(None, None)`` otherwise."""
    if not model.conditional:
        return None, None
    n = min(n, len(dataset), 16)
    batch = default_collate([dataset[i] for i in range(n)])
    return model.sample_conditions(batch), model.unpack(batch)[0]
