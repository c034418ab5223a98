"""``attnflow compare``: train variants of one config over several seeds, paired; a table and a plot.

* **Variants** (:mod:`.variants`) are lists of ``--set``-style overrides on one config: the cross
  product of axes or named variants. One of them is the baseline.
* **Paired seeds**: seed ``i`` (``train.seed + i``) is trained for every variant. The data order
  depends only on ``train.seed`` (:class:`~attnflow.training.ResumableBatches`), and the training
  loop re-seeds the global RNG (dequantisation noise, random flips) once the model is built, so
  every variant of seed ``i`` sees the same batches and the same noise; only the model (and its
  initialisation) differs. The difference to the baseline is taken seed by seed, with its 95% t
  interval (:mod:`.statistics`).
* **Runs** (:mod:`.runs`): each in its own run folder under ``OUT/VARIANT/``; a finished run is
  reused and an unfinished one continued, only with the settings it was made with, so a killed
  ``compare`` goes on where it stopped and rerunning a finished one rebuilds the table only.
* **Parallel runs** (:mod:`.pool`): ``jobs=K`` trains K runs at once, each in a subprocess with
  ``cores // K`` threads (K is capped at the number of cores).
* **Per-task metrics** (:mod:`.metrics`): every task reports the final test bits/dim (conditional
  for super-resolution and translation); super-resolution adds PSNR, SSIM and LR-PSNR averaged over
  temperatures and a bicubic-upscaling row.

Writes ``OUT/comparison.md``, ``OUT/comparison.json`` and ``OUT/comparison.png`` (:mod:`.report`).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ...config import ConfigError, apply_overrides, validate_config
from ...data import run_data_config
from ...models import build_model
from ...training import TrainingError
from .metrics import TASK_METRICS, bicubic_metrics
from .pool import cores, run_parallel
from .report import data_used, rows, write_report
from .runs import finished, run_one
from .statistics import paired_difference
from .variants import AXES, Variant, cross_variants, parse_variant

__all__ = ["AXES", "TASK_METRICS", "compare", "cross_variants", "paired_difference", "parse_variant"]


def _specs(config: dict, out: Path, variants: list[Variant], seeds: list[int], options: dict) -> list[dict]:
    """One run per variant and seed: its complete config (data root absolute, as the run stores
    it), folder and result file."""
    specs = []
    for name, overrides in variants:
        for seed in seeds:
            cfg = apply_overrides(copy.deepcopy(config), [*overrides, f"train.seed={seed}"])
            cfg["name"] = f"{config.get('name', 'run')}-{name}"
            cfg = validate_config(cfg)
            cfg["data"] = run_data_config(cfg["data"])
            specs.append({
                "variant": name, "label": f"{name} seed {seed}", "config": cfg, "options": options,
                "dir": str(out / name / f"seed_{seed}"), "result": str(out / name / f"seed_{seed}.json"),
            })
    return specs


def _checked_variants(variants: Sequence[Variant], baseline: str | None, seeds: int) -> tuple[list[Variant], str]:
    variants = [(str(n), list(o)) for n, o in variants]
    names = [n for n, _ in variants]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"compare: variant names must differ, {', '.join(dup)} given twice")
    baseline = names[0] if baseline is None else baseline
    if baseline not in names:
        raise ValueError(f"--baseline {baseline!r} is not a variant; the variants are {', '.join(names)}")
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"compare: seeds must be a positive int, got {seeds!r}")
    return variants, baseline


def _train_missing(specs: list[dict], jobs: int, device: str | None, out: Path, progress: bool) -> None:
    """Train the runs of ``specs`` that have no result yet, one by one or ``jobs`` at a time."""

    def say(text: str) -> None:
        if progress or jobs > 1:
            print(text, file=sys.stderr, flush=True)

    todo = [s for s in specs if finished(s) is None]
    if not todo:
        return
    jobs = max(1, min(int(jobs), cores(), len(todo)))
    if jobs > 1:
        run_parallel(todo, jobs, device, out, say)
        return
    for spec in todo:
        say(f"compare: {spec['label']}")
        run_one(spec, device=device, progress=progress)


def compare(
    config: dict,
    out: str | Path,
    *,
    variants: Sequence[Variant] | None = None,
    attentions: Sequence[str] = ("none", "imap", "itrans"),
    baseline: str | None = None,
    seeds: int = 1,
    jobs: int = 1,
    sr_temperatures: Sequence[float] | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Train every variant with ``seeds`` paired seeds; write the table, JSON and plot.

    ``variants``: ``[(name, ["KEY=VALUE", ...])]`` (default: one per kind of ``attentions``).
    ``baseline``: the name of the variant the others are compared with (default: the first).
    Returns ``{"table", "json", "plot", "results": [per-variant row]}``.
    """
    from ...evaluation import DEFAULT_TEMPERATURES

    out, config = Path(out), validate_config(config)
    if variants is None:
        variants = cross_variants([("model.attention", list(attentions))])
    variants, baseline = _checked_variants(variants, baseline, seeds)
    seed_list = [config["train"]["seed"] + i for i in range(seeds)]
    options = {"sr_temperatures": [float(x) for x in (sr_temperatures or DEFAULT_TEMPERATURES)]}
    specs = _specs(config, out, variants, seed_list, options)
    with torch.random.fork_rng():  # every variant builds before anything trains
        for spec in specs[:: len(seed_list)]:
            try:
                build_model(spec["config"])
            except (ValueError, TypeError) as err:
                raise ConfigError(f"variant {spec['variant']}: {err}") from err
    out.mkdir(parents=True, exist_ok=True)
    _train_missing(specs, jobs, device, out, progress)
    results = {(s["variant"], s["config"]["train"]["seed"]): finished(s) for s in specs}
    if any(r is None for r in results.values()):  # pragma: no cover - a run that wrote no result
        missing = [f"{v} seed {s}" for (v, s), r in results.items() if r is None]
        raise TrainingError(f"no result for {', '.join(missing)}")
    task = next(iter(results.values()))["task"]
    variant_rows = rows(variants, baseline, seed_list, results)
    extra = {}
    if task == "super_resolution":
        extra = {"bicubic": bicubic_metrics(specs[0]["config"]), "sr_temperatures": options["sr_temperatures"]}
    summary = {
        "name": config.get("name", "run"), "task": task, "baseline": baseline, "seeds": seed_list,
        "steps": config["train"]["steps"], **data_used(specs[0]["config"]), "variants": variant_rows, **extra,
    }
    paths = write_report(summary, config, out)
    return {**paths, "results": [{k: v for k, v in r.items() if k not in ("runs", "curve")} for r in variant_rows]}
