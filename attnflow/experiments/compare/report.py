"""A comparison's results as a table (``comparison.md``), JSON (``comparison.json``) and a plot of
the test curves (``comparison.png``)."""

from __future__ import annotations

import math
from pathlib import Path

from ...jsonio import json_text
from ...training.rundir import write_text_atomic
from .metrics import COLUMNS
from .statistics import mean_curve, mean_sd, paired_difference
from .variants import Variant

__all__ = ["data_used", "rows", "write_report"]


def data_used(config: dict) -> dict:
    """What every run of the comparison was evaluated on: data set, absolute root, test split, and
    whether ``train.eval_max_batches`` made the test score partial."""
    data, t = config["data"], config["train"]
    return {"data": data["name"], "data_root": data["root"], "test_split": data["test_split"],
            "eval_max_batches": t["eval_max_batches"], "partial": bool(t["eval_max_batches"])}


def rows(variants: list[Variant], baseline: str, seeds: list[int], results: dict) -> list[dict]:
    """One row per variant from ``results`` (``{(variant, seed): run result}``): parameters, test
    bits/dim per seed with mean and sd, the paired difference to ``baseline``, the step-time ratio,
    the per-task metrics (mean, sd), the runs and the mean test curve."""
    base_bpd = [results[(baseline, s)]["test_bpd"] for s in seeds]
    base_time, _ = mean_sd([results[(baseline, s)]["step_seconds"] for s in seeds])
    out = []
    for name, overrides in variants:
        runs = [results[(name, s)] for s in seeds]
        bpd = [r["test_bpd"] for r in runs]
        mean, sd = mean_sd(bpd)
        step_time, _ = mean_sd([r["step_seconds"] for r in runs])
        metrics = {}
        for key in runs[0]["metrics"]:
            m, s = mean_sd([r["metrics"][key] for r in runs])
            metrics[key] = {"mean": m, "sd": s}
        out.append({
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
            "curve": mean_curve([r["curve"] for r in runs]),
        })
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _diff(d: dict | None) -> str:
    if d is None:
        return "(baseline)"
    if d["ci"] is None:
        return f"{d['mean']:+.4f} [n/a: 1 seed]"
    return f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"


def _setting(summary: dict, config: dict) -> str:
    """The paragraph above the table: model, budget, data, seeds, baseline."""
    m, t = config["model"], config["train"]
    seeds = summary["seeds"]
    root = f" at {summary['data_root']}" if summary.get("data_root") else ""
    partial = f" (first {summary['eval_max_batches']} batches only)" if summary["partial"] else ""
    return (
        f"{m['backbone']} L={m['levels']} K={m['steps']} C={m['hidden']} (attention {m['attention']}, "
        f"position {m['position']}, mask {m['mask']} unless a variant sets them); {summary['steps']} steps, "
        f"batch {t['batch_size']}, data {config['data']['name']}{root}, evaluated on its "
        f"{summary['test_split']} split{partial}; {len(seeds)} paired seed(s) {', '.join(map(str, seeds))}; "
        f"baseline **{summary['baseline']}**."
    )


def markdown(summary: dict, config: dict) -> str:
    """``comparison.md``: the setting, one table row per variant (and bicubic for SR), the legend."""
    columns = COLUMNS.get(summary["task"], {})
    bpd = "conditional test bits/dim" if summary["task"] != "generation" else "test bits/dim"
    lines = [
        f"# {summary['name']}: comparison", "", _setting(summary, config), "",
        f"| variant | parameters | {bpd} (mean ± sd) | Δ vs baseline [95% CI] | step time ratio |"
        + "".join(f" {title} |" for title in columns.values()),
        "|---|---:|---:|---:|---:|" + "---:|" * len(columns),
    ]
    for r in summary["variants"]:
        sd = f" ± {_fmt(r['test_bpd_sd'])}" if r["test_bpd_sd"] is not None else ""
        ratio = "n/a" if r["step_time_ratio"] is None else f"{r['step_time_ratio']:.2f}"
        cells = []
        for key in columns:
            v = r["metrics"].get(key, {})
            cells.append(_fmt(v.get("mean"), 3) + (f" ± {_fmt(v['sd'], 3)}" if v.get("sd") is not None else ""))
        lines.append(f"| {r['variant']} | {r['parameters']:,} | {_fmt(r['test_bpd_mean'])}{sd} | "
                     f"{_diff(r['diff_to_baseline'])} | {ratio} |" + "".join(f" {c} |" for c in cells))
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


def plot(variant_rows: list[dict], path: Path, title: str) -> None:
    """The mean test curve of every variant, ± one sd over seeds shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in variant_rows:
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


def write_report(summary: dict, config: dict, out: Path) -> dict[str, str]:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison.png`` into ``out``; their paths."""
    paths = {"table": out / "comparison.md", "json": out / "comparison.json", "plot": out / "comparison.png"}
    paths["table"].write_text(markdown(summary, config))
    write_text_atomic(paths["json"], json_text(summary))
    plot(summary["variants"], paths["plot"],
         f"{summary['name']}: test bits/dim ({len(summary['seeds'])} seed(s))")
    return {k: str(v) for k, v in paths.items()}
