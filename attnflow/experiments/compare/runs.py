"""One run of a comparison: train it (or continue it, or reuse it when finished) and store its numbers.

Run ``(variant, seed)`` trains in ``OUT/VARIANT/seed_S/`` (an ordinary run folder) and its final
numbers go to ``OUT/VARIANT/seed_S.json``, with the run's settings. A stored run is reused, or an
unfinished one continued, only if its settings are this comparison's (:func:`check_same_settings`):
anything else would put another experiment's number in the table.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import torch

from ...config import ConfigError, validate_config
from ...training import load_model, train
from ...training.logging import read_curve
from ...training.rundir import flatten_config, stored_config, write_text_atomic
from .metrics import task_metrics

__all__ = ["RERUN_SAFE_KEYS", "check_same_settings", "finished", "run_one"]

#: settings that may differ between a comparison's stored run and a rerun: they change where and
#: how often things are written, not a number in the table
RERUN_SAFE_KEYS = ("train.device", "train.num_workers", "train.log_every", "train.checkpoint_every")


def check_same_settings(spec: dict, stored: dict, where: Path) -> None:
    """A ConfigError naming every setting (but :data:`RERUN_SAFE_KEYS`) in which the ``stored``
    config of the run in ``where`` differs from the one the comparison asks for now."""
    a, b = flatten_config(validate_config(stored)), flatten_config(validate_config(spec["config"]))
    changed = [f"{k}: {a.get(k, '(unset)')!r} in the run, {b.get(k, '(unset)')!r} now"
               for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in RERUN_SAFE_KEYS]
    if changed:
        raise ConfigError(
            f"compare: the run {where} was made with other settings ({'; '.join(changed)}); its "
            f"numbers would not be this comparison's. Use another --out (or move {where.parent} away)"
        )


def finished(spec: dict) -> dict | None:
    """The stored result of a finished run with the same settings; None for a run not finished (a
    ConfigError for one made with other settings)."""
    path = Path(spec["result"])
    stored = stored_config(spec["dir"]) if Path(spec["dir"]).is_dir() else None
    if not path.is_file():
        if stored is not None:  # an unfinished run continues only with its own settings
            check_same_settings(spec, stored[0], Path(spec["dir"]))
        return None
    result = json.loads(path.read_text())
    if "config" not in result:
        raise ConfigError(f"compare: {path} does not store the run's settings (an older comparison); "
                          f"use another --out")
    check_same_settings(spec, result["config"], Path(spec["dir"]))
    return result


def _step_seconds(metrics_path: Path) -> float | None:
    """Median seconds per training step between consecutive train log lines (robust to the
    evaluations and restarts in between); ``None`` with fewer than two lines."""
    points = []
    for line in metrics_path.read_text().splitlines():
        r = json.loads(line)
        if r.get("split") == "train" and "time" in r:
            points.append((int(r["step"]), float(r["time"])))
    rates = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(points, points[1:]) if s1 > s0]
    return statistics.median(rates) if rates else None


def _final_test_bpd(model, config: dict, curve: list) -> float:
    """The test bits/dim at the last step: the run's own final evaluation, else computed the way
    the training loop computes it (a run killed during its final evaluation)."""
    t = config["train"]
    if curve and curve[-1][0] == t["steps"]:
        return float(curve[-1][1])
    from torch.utils.data import DataLoader

    from ...data import dataset_from_config
    from ...evaluation.likelihood import evaluate_bpd

    data = dataset_from_config(config["data"], config["data"]["test_split"], config["model"]["image_shape"])
    loader = DataLoader(data, batch_size=t["eval_batch_size"], shuffle=False, generator=torch.Generator())
    with torch.random.fork_rng():
        torch.manual_seed(t["seed"] + 54321)
        return evaluate_bpd(model, loader, t["eval_max_batches"])


def run_one(spec: dict, *, device: str | None = None, progress: bool = False) -> dict:
    """Train (or continue, or skip when finished) one run of a comparison; returns its result.

    ``spec``: ``variant``, ``config``, ``options`` (the per-task metrics' options), ``dir`` (the
    run folder) and ``result`` (its JSON)."""
    done = finished(spec)
    if done is not None:
        return done
    out, config = Path(spec["dir"]), spec["config"]
    resume = out.is_dir() and stored_config(out) is not None
    summary = train(config, out, device=device, resume=resume, progress=progress)
    with torch.random.fork_rng():
        model, run_config, _ = load_model(summary["checkpoint"], device or "cpu")
    curve = read_curve(summary["metrics"])
    result = {
        "variant": spec["variant"],
        "seed": config["train"]["seed"],
        "steps": int(summary["steps"]),
        "task": model.task,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_bpd": _final_test_bpd(model, run_config, curve),
        "best_test_bpd": summary["best_test_bpd"],
        "step_seconds": _step_seconds(Path(summary["metrics"])),
        "metrics": task_metrics(model, run_config, device or "cpu", spec["options"]),
        "curve": curve,
        "run": str(out),
        "config": run_config,
    }
    write_text_atomic(Path(spec["result"]), json.dumps(result, indent=2))
    return result
