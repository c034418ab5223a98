"""``attnflow compare``: train variants of one config over several seeds, paired; a table and a plot.

Design:

* **Variants** are lists of ``--set``-style overrides on one config: the cross product of axes
  (:func:`cross_variants`: attention kind, mask, position, heads, patches, any key) or named
  variants (:func:`parse_variant`: ``NAME=KEY=VALUE,KEY=VALUE``). One of them is the baseline.
* **Paired seeds**: seed ``i`` (``train.seed + i``) is trained for every variant. The data order
  depends only on ``train.seed`` (:class:`~attnflow.training.ResumableBatches`), and the training
  loop re-seeds the global RNG (dequantisation noise, random flips) from
  :func:`~attnflow.training.loop.data_noise_seed` once the model is built, so every variant of
  seed ``i`` sees the same batches and the same noise; only the model (and its initialisation)
  differs. The difference to the baseline is taken seed by seed, and its 95% confidence interval
  comes from the t distribution with ``n - 1`` degrees of freedom.
* **Layout and resume**: run ``(variant, seed)`` trains in ``OUT/VARIANT/seed_S/`` (an ordinary
  run folder) and its final numbers go to ``OUT/VARIANT/seed_S.json``. A run with that file (for
  the configured ``train.steps``) is finished and not touched again; a run folder without it is
  continued with ``train(..., resume=True)``; so a killed ``compare`` goes on where it stopped, and
  rerunning a finished one rebuilds the table only.
* **Parallel runs**: ``jobs=K`` trains K runs at once, each in a subprocess with
  ``cores // K`` threads (at least 1; K is capped at the number of cores).
* **Per-task metrics** (dispatch on ``model.task``, :data:`TASK_METRICS`): every task reports the
  final test bits/dim (conditional for super-resolution and translation); super-resolution adds
  PSNR, SSIM and LR-PSNR averaged over temperatures (:func:`attnflow.evaluation.evaluate_sr`) and a
  bicubic-upscaling row.

Writes ``OUT/comparison.md``, ``OUT/comparison.json`` and ``OUT/comparison.png``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, apply_overrides
from ..data import with_absolute_root
from ..models import build_model, complete_config
from .checks import check_config
from .logging import read_curve
from .loop import TrainingError, train
from .rundir import flatten_config, stored_config, with_defaults, write_text_atomic

__all__ = [
    "AXES",
    "compare",
    "cross_variants",
    "parse_variant",
    "paired_difference",
    "t_quantile",
    "TASK_METRICS",
]

#: axis name -> config key (the CLI's --attentions, --masks, --positions, --heads, --patches)
AXES = {
    "attention": "model.attention",
    "mask": "model.mask",
    "position": "model.position",
    "heads": "model.heads",
    "patches": "model.patches",
}
_WORDS = ("model.attention", "model.mask", "model.position")  # values that name themselves

Variant = tuple[str, list[str]]  # (name, overrides "KEY=VALUE")


# ------------------------------------------------------------------------------------------------
# variants
# ------------------------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)


def cross_variants(axes: Sequence[tuple[str, Sequence[Any]]]) -> list[Variant]:
    """The cross product of ``axes`` (``[(config key, values)]``, in order) as named variants.

    A name joins one part per axis with ``-``: the value itself for attention, mask and position
    (``imap-channel-pos2``), else the key's last part and the value (``heads2``, ``patches16``).
    """
    if not axes:
        raise ValueError("compare: give at least one axis or variant")
    for key, values in axes:
        if not values:
            raise ValueError(f"compare: the axis {key} has no values")
    variants = []
    for combo in itertools.product(*[[(key, v) for v in values] for key, values in axes]):
        parts = [str(v) if key in _WORDS else f"{key.split('.')[-1]}{v}" for key, v in combo]
        variants.append((_safe_name("-".join(parts)), [f"{key}={v}" for key, v in combo]))
    return variants


def parse_variant(text: str) -> Variant:
    """``NAME=KEY=VALUE,KEY=VALUE`` -> ``(NAME, ["KEY=VALUE", ...])``. A key without a dot is a
    ``model`` key (``attention=imap`` = ``model.attention=imap``); ``NAME=`` is the config as is.
    Commas inside brackets (``patches=[4,49]``) belong to the value."""
    name, sep, rest = text.partition("=")
    if not sep or not name or _safe_name(name) != name:
        raise ValueError(
            f"--variants: expected NAME=KEY=VALUE,KEY=VALUE (NAME of letters, digits, . _ + -), got {text!r}"
        )
    overrides = []
    for item in (p for p in re.split(r",(?=[A-Za-z_][\w.]*=)", rest) if p):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--variants {name}: expected KEY=VALUE, got {item!r}")
        overrides.append(f"{key if '.' in key else 'model.' + key}={value}")
    return name, overrides


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (scipy)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_difference(values: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> dict:
    """Mean of ``values[i] - baseline[i]`` with its ``level`` confidence interval
    (``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``); ``ci`` is ``None`` for one seed."""
    if len(values) != len(baseline) or not values:
        raise ValueError("paired_difference: give one value per seed for both, at least one")
    diffs = [float(a) - float(b) for a, b in zip(values, baseline)]
    n = len(diffs)
    mean = math.fsum(diffs) / n
    if n < 2:
        return {"mean": mean, "sd": None, "ci": None, "n": n}
    sd = statistics.stdev(diffs)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "ci": [mean - half, mean + half], "n": n}


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    return math.fsum(values) / len(values), (statistics.stdev(values) if len(values) > 1 else None)


# ------------------------------------------------------------------------------------------------
# per-task metrics
# ------------------------------------------------------------------------------------------------


def _no_metrics(model, config: dict, device, options: dict) -> dict:
    return {}


def _sr_metrics(model, config: dict, device, options: dict) -> dict:
    """PSNR, SSIM and LR-PSNR of SR samples averaged over temperatures, on the test split."""
    from ..data import dataset_from_config
    from ..evaluation import evaluate_sr

    t = config["train"]
    data = dataset_from_config(config["data"], config["data"].get("test_split", "test"),
                               config["model"].get("image_shape"))
    result = evaluate_sr(model, data, temperatures=options["sr_temperatures"], device=device,
                         batch_size=int(t["eval_batch_size"]), max_batches=t.get("eval_max_batches"),
                         seed=int(t["seed"]), bits_per_dim=False)
    return {k: result["mean"][k] for k in SR_COLUMNS}


#: model.task -> function ``(model, config, device, options) -> {metric: value}`` of a trained run,
#: beside the test bits/dim every task has
TASK_METRICS: dict[str, Callable[..., dict]] = {
    "generation": _no_metrics,
    "translation": _no_metrics,
    "super_resolution": _sr_metrics,
}
SR_COLUMNS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lr_psnr": "LR-PSNR (dB)"}
_COLUMNS = {"super_resolution": SR_COLUMNS}


def bicubic_metrics(config: dict) -> dict:
    """PSNR, SSIM and LR-PSNR of bicubic upscaling (MATLAB ``imresize``) on the test split."""
    from ..data import dataset_from_config
    from ..evaluation.super_resolution import evaluate_bicubic

    t = config["train"]
    data = dataset_from_config(config["data"], config["data"].get("test_split", "test"),
                               config["model"].get("image_shape"))
    result = evaluate_bicubic(data, int(config["model"]["scale"]), batch_size=int(t["eval_batch_size"]),
                              max_batches=t.get("eval_max_batches"))
    return {k: result[k] for k in SR_COLUMNS}


# ------------------------------------------------------------------------------------------------
# one run
# ------------------------------------------------------------------------------------------------


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


def _final_test_bpd(model, config: dict, curve: list, device) -> float:
    """The test bits/dim at the last step: the run's own final evaluation, else computed the way
    the training loop computes it (a run killed during its final evaluation)."""
    t = config["train"]
    if curve and curve[-1][0] == int(t["steps"]):
        return float(curve[-1][1])
    from torch.utils.data import DataLoader

    from ..data import dataset_from_config
    from ..evaluation.likelihood import evaluate_bpd

    data = dataset_from_config(config["data"], config["data"].get("test_split", "test"),
                               config["model"].get("image_shape"))
    loader = DataLoader(data, batch_size=int(t["eval_batch_size"]), shuffle=False, generator=torch.Generator())
    with torch.random.fork_rng():
        torch.manual_seed(int(t["seed"]) + 54321)
        return evaluate_bpd(model, loader, t.get("eval_max_batches"))


#: settings that may differ between a comparison's stored run and a rerun: they change where and
#: how often things are written, not a number in the table
_RERUN_SAFE_KEYS = ("train.device", "train.num_workers", "train.log_every", "train.checkpoint_every")


def _check_same_settings(spec: dict, stored: dict, where: Path) -> None:
    """A stored run of a comparison is reused (or continued) only with exactly the settings it was
    started with; anything else would put another experiment's number in the table."""
    a, b = flatten_config(with_defaults(stored)), flatten_config(with_defaults(spec["config"]))
    changed = [f"{k}: {a.get(k, '(unset)')!r} in the run, {b.get(k, '(unset)')!r} now"
               for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in _RERUN_SAFE_KEYS]
    if changed:
        raise ConfigError(
            f"compare: the run {where} was made with other settings ({'; '.join(changed)}); its "
            f"numbers would not be this comparison's. Use another --out (or move {where.parent} away)"
        )


def _finished(spec: dict) -> dict | None:
    """The stored result of a finished run with the same settings; None for a run not finished (a
    ConfigError for one made with other settings)."""
    path = Path(spec["result"])
    stored = stored_config(spec["dir"]) if Path(spec["dir"]).is_dir() else None
    if not path.is_file():
        if stored is not None:  # an unfinished run continues only with its own settings
            _check_same_settings(spec, stored[0], Path(spec["dir"]))
        return None
    result = json.loads(path.read_text())
    if "config" not in result:
        raise ConfigError(f"compare: {path} does not store the run's settings (an older comparison); "
                          f"use another --out")
    _check_same_settings(spec, result["config"], Path(spec["dir"]))
    return result


def run_one(spec: dict, *, device: str | None = None, progress: bool = False) -> dict:
    """Train (or continue, or skip when finished) one run of a comparison; returns its result."""
    from .checkpoint import load_model

    done = _finished(spec)
    if done is not None:
        return done
    out, config = Path(spec["dir"]), spec["config"]
    resume = out.is_dir() and stored_config(out) is not None
    summary = train(config, out, device=device, resume=resume, progress=progress)
    with torch.random.fork_rng():
        model, run_config, _ = load_model(summary["checkpoint"], device or "cpu")
    curve = read_curve(summary["metrics"])
    metrics_fn = TASK_METRICS.get(model.task, _no_metrics)
    result = {
        "variant": spec["variant"],
        "seed": int(config["train"]["seed"]),
        "steps": int(summary["steps"]),
        "task": model.task,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_bpd": _final_test_bpd(model, run_config, curve, device or "cpu"),
        "best_test_bpd": summary["best_test_bpd"],
        "step_seconds": _step_seconds(Path(summary["metrics"])),
        "metrics": metrics_fn(model, run_config, device or "cpu", spec["options"]),
        "curve": curve,
        "run": str(out),
        "config": run_config,
    }
    write_text_atomic(Path(spec["result"]), json.dumps(result, indent=2))
    return result


def _child() -> None:
    """Entry of a ``jobs > 1`` worker: ``python -c ... SPEC.json`` (threads set by the parent)."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(int(spec["threads"]))
    try:
        run_one(spec, device=spec.get("device"), progress=False)
    except KeyboardInterrupt as err:
        print(f"interrupted: {err}", file=sys.stderr)
        sys.exit(130)


# ------------------------------------------------------------------------------------------------
# many runs
# ------------------------------------------------------------------------------------------------


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: a worker gets SIGINT (checkpoint at the step boundary, then exit) when compare dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


def _run_parallel(specs: list[dict], jobs: int, device: str | None, out: Path, say: Callable) -> None:
    threads = max(1, _cores() // jobs)
    jobs_dir = out / ".jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    pending = list(specs)
    running: list[tuple[subprocess.Popen, dict, Any]] = []
    failed: list[str] = []
    say(f"compare: {len(specs)} runs, {jobs} at a time, {threads} thread(s) each")
    try:
        while pending or running:
            while pending and len(running) < jobs and not failed:
                spec = pending.pop(0)
                spec_path = jobs_dir / f"{spec['variant']}-seed_{spec['config']['train']['seed']}.json"
                spec_path.write_text(json.dumps({**spec, "threads": threads, "device": device}))
                Path(spec["dir"]).parent.mkdir(parents=True, exist_ok=True)
                log = open(Path(spec["dir"]).with_suffix(".log"), "a")  # noqa: SIM115 - closed below
                cmd = [sys.executable, "-c", "from attnflow.training.compare import _child; _child()",
                       str(spec_path)]
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
                running.append((proc, spec, log))
                say(f"compare: started {spec['label']} (pid {proc.pid})")
            if failed and not running:
                pending.clear()
            time.sleep(0.2)
            for entry in list(running):
                proc, spec, log = entry
                if proc.poll() is None:
                    continue
                running.remove(entry)
                log.close()
                if proc.returncode == 0:
                    say(f"compare: finished {spec['label']}")
                else:
                    tail = Path(log.name).read_text().strip().splitlines()[-1:] or ["(no output)"]
                    failed.append(f"{spec['label']} (exit {proc.returncode}: {tail[0]}; log {log.name})")
    except KeyboardInterrupt:
        for proc, _, _ in running:
            proc.send_signal(signal.SIGINT)  # each saves its step and stops
        for proc, _, log in running:
            proc.wait()
            log.close()
        raise
    if failed:
        raise TrainingError("run(s) failed: " + "; ".join(failed))


def _specs(config: dict, out: Path, variants: list[Variant], seeds: list[int], options: dict) -> list[dict]:
    specs = []
    for name, overrides in variants:
        for seed in seeds:
            cfg = apply_overrides(copy.deepcopy(config), [*overrides, f"train.seed={seed}"])
            cfg["name"] = f"{config.get('name', 'run')}-{name}"
            cfg = check_config(complete_config(cfg))
            cfg["data"] = with_absolute_root(cfg["data"])  # as the run stores it
            specs.append({
                "variant": name, "label": f"{name} seed {seed}", "config": cfg, "options": options,
                "dir": str(out / name / f"seed_{seed}"), "result": str(out / name / f"seed_{seed}.json"),
            })
    return specs


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
    from ..evaluation import DEFAULT_TEMPERATURES

    out = Path(out)
    if variants is None:
        variants = cross_variants([("model.attention", list(attentions))])
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
    base_seed = int(config["train"].get("seed", 0))
    seed_list = [base_seed + i for i in range(seeds)]
    options = {"sr_temperatures": [float(x) for x in (sr_temperatures or DEFAULT_TEMPERATURES)]}
    specs = _specs(config, out, variants, seed_list, options)
    with torch.random.fork_rng():  # every variant builds before anything trains
        for spec in specs[:: len(seed_list)]:
            try:
                build_model(spec["config"])
            except (ValueError, TypeError) as err:
                raise ConfigError(f"variant {spec['variant']}: {err}") from None
    out.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        if progress or jobs > 1:
            print(text, file=sys.stderr, flush=True)

    todo = [s for s in specs if _finished(s) is None]
    if todo:
        jobs = max(1, min(int(jobs), _cores(), len(todo)))
        if jobs == 1:
            for spec in todo:
                say(f"compare: {spec['label']}")
                run_one(spec, device=device, progress=progress)
        else:
            _run_parallel(todo, jobs, device, out, say)
    results = {(s["variant"], s["config"]["train"]["seed"]): _finished(s) for s in specs}
    if any(r is None for r in results.values()):  # pragma: no cover - a run that wrote no result
        missing = [f"{v} seed {s}" for (v, s), r in results.items() if r is None]
        raise TrainingError(f"no result for {', '.join(missing)}")
    task = next(iter(results.values()))["task"]
    rows = _rows(variants, baseline, seed_list, results)
    extra = {}
    if task == "super_resolution":
        extra = {"bicubic": bicubic_metrics(specs[0]["config"]), "sr_temperatures": options["sr_temperatures"]}
    summary = {
        "name": config.get("name", "run"), "task": task, "baseline": baseline, "seeds": seed_list,
        "steps": int(config["train"]["steps"]), **_data_used(specs[0]["config"]), "variants": rows, **extra,
    }
    (out / "comparison.md").write_text(_markdown(summary, config))
    write_text_atomic(out / "comparison.json", json.dumps(_json_safe(summary), indent=2))
    _plot(rows, out / "comparison.png", f"{summary['name']}: test bits/dim ({len(seed_list)} seed(s))")
    return {
        "table": str(out / "comparison.md"),
        "json": str(out / "comparison.json"),
        "plot": str(out / "comparison.png"),
        "results": [{k: v for k, v in r.items() if k not in ("runs", "curve")} for r in rows],
    }


def _data_used(config: dict) -> dict:
    """What every run of the comparison was evaluated on: data set, absolute root, test split, and
    whether ``train.eval_max_batches`` made the test score partial."""
    data, t = config["data"], config["train"]
    return {"data": data["name"], "data_root": data.get("root"), "test_split": data.get("test_split", "test"),
            "eval_max_batches": t.get("eval_max_batches"), "partial": bool(t.get("eval_max_batches"))}


def _rows(variants: list[Variant], baseline: str, seeds: list[int], results: dict) -> list[dict]:
    base_bpd = [results[(baseline, s)]["test_bpd"] for s in seeds]
    base_time, _ = _mean_sd([results[(baseline, s)]["step_seconds"] for s in seeds])
    rows = []
    for name, overrides in variants:
        runs = [results[(name, s)] for s in seeds]
        bpd = [r["test_bpd"] for r in runs]
        mean, sd = _mean_sd(bpd)
        step_time, _ = _mean_sd([r["step_seconds"] for r in runs])
        metrics = {}
        for key in runs[0]["metrics"]:
            m, s = _mean_sd([r["metrics"][key] for r in runs])
            metrics[key] = {"mean": m, "sd": s}
        rows.append({
            "variant": name,
            "overrides": overrides,
            "parameters": runs[0]["parameters"],
            "test_bpd": bpd,
            "test_bpd_mean": mean,
            "test_bpd_sd": sd,
            "diff_to_baseline": None if name == baseline else paired_difference(bpd, base_bpd),
            "step_seconds": step_time,
            "step_time_ratio": (step_time / base_time) if step_time and base_time else None,
            "metrics": metrics,
            "runs": [{k: v for k, v in r.items() if k not in ("curve", "config")} for r in runs],
            "curve": _mean_curve([r["curve"] for r in runs]),
        })
    return rows


def _mean_curve(curves: list[list]) -> list[tuple[int, float, float]]:
    """``(step, mean, sd)`` at the steps every seed evaluated."""
    steps = set.intersection(*[{int(s) for s, _ in c} for c in curves]) if curves else set()
    out = []
    for step in sorted(steps):
        values = [next(v for s, v in reversed(c) if int(s) == step) for c in curves]
        m, sd = _mean_sd(values)
        out.append((step, m, sd or 0.0))
    return out


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _markdown(summary: dict, config: dict) -> str:
    m, t = config["model"], config["train"]
    seeds = summary["seeds"]
    columns = _COLUMNS.get(summary["task"], {})
    bpd = "conditional test bits/dim" if summary["task"] != "generation" else "test bits/dim"
    lines = [
        f"# {summary['name']}: comparison",
        "",
        f"{m['backbone']} L={m['levels']} K={m['steps']} C={m['hidden']} (attention {m['attention']}, "
        f"position {m['position']}, mask {m['mask']} unless a variant sets them); {summary['steps']} steps, "
        f"batch {t['batch_size']}, data {config['data']['name']}"
        f"{' at ' + str(summary['data_root']) if summary.get('data_root') else ''}, evaluated on its "
        f"{summary['test_split']} split"
        f"{' (first ' + str(summary['eval_max_batches']) + ' batches only)' if summary['partial'] else ''}; "
        f"{len(seeds)} paired seed(s) "
        f"{', '.join(map(str, seeds))}; baseline **{summary['baseline']}**.",
        "",
        f"| variant | parameters | {bpd} (mean ± sd) | Δ vs baseline [95% CI] | step time ratio |"
        + "".join(f" {title} |" for title in columns.values()),
        "|---|---:|---:|---:|---:|" + "---:|" * len(columns),
    ]
    for r in summary["variants"]:
        sd = f" ± {_fmt(r['test_bpd_sd'])}" if r["test_bpd_sd"] is not None else ""
        d = r["diff_to_baseline"]
        if d is None:
            diff = "(baseline)"
        elif d["ci"] is None:
            diff = f"{d['mean']:+.4f} [n/a: 1 seed]"
        else:
            diff = f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
        ratio = "n/a" if r["step_time_ratio"] is None else f"{r['step_time_ratio']:.2f}"
        cells = []
        for key in columns:
            v = r["metrics"].get(key, {})
            cells.append(_fmt(v.get("mean"), 3) + (f" ± {_fmt(v['sd'], 3)}" if v.get("sd") is not None else ""))
        lines.append(f"| {r['variant']} | {r['parameters']:,} | {_fmt(r['test_bpd_mean'])}{sd} | {diff} | "
                     f"{ratio} |" + "".join(f" {c} |" for c in cells))
    if "bicubic" in summary:
        cells = [_fmt(summary["bicubic"][k], 3) for k in columns]
        lines.append("| bicubic | 0 | — | — | — |" + "".join(f" {c} |" for c in cells))
    lines += [
        "",
        "Δ: the test bits/dim of the variant minus the baseline's, seed by seed (same data order and "
        "dequantisation noise), averaged; 95% CI from the t distribution with n − 1 degrees of freedom. "
        "Negative: lower bits/dim than the baseline. Step time: median seconds per training step "
        "(from the log times), relative to the baseline's; runs trained in parallel share the machine.",
    ]
    if columns:
        temps = ", ".join(f"{x:g}" for x in summary.get("sr_temperatures", []))
        lines.append(f"SR metrics: mean over temperatures ({temps}) on the test split; bicubic: MATLAB imresize.")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        if not r["curve"]:
            continue
        steps, mean, sd = zip(*r["curve"])
        (line,) = ax.plot(steps, mean, "o-", label=r["variant"], ms=3)
        ax.fill_between(steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("test bits/dim (mean ± sd over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
