"""``attnflow compare``: train the same preset with and without attention, side by side."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ..models import build_model
from .logging import read_curve
from .loop import train

__all__ = ["compare"]


def compare(
    config: dict,
    out: str | Path,
    *,
    attentions: tuple[str, ...] | list[str] = ("none", "imap", "itrans"),
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Train one run per attention kind (same preset, steps and seed); write a table and a plot.

    Writes ``OUT/comparison.md`` (Markdown table: parameters, final and best test bits/dim,
    seconds per step) and ``OUT/comparison.png`` (test bits/dim against step).
    """
    out = Path(out)
    rows = []
    for kind in attentions:
        cfg = copy.deepcopy(config)
        cfg["model"]["attention"] = kind
        cfg["name"] = f"{config.get('name', 'run')}-{kind}"
        params = sum(p.numel() for p in build_model(cfg).parameters())
        summary = train(cfg, out / kind, device=device, progress=progress)
        curve = read_curve(summary["metrics"])
        rows.append(
            {
                "attention": kind,
                "parameters": params,
                "final_test_bpd": summary["test_bpd"],
                "best_test_bpd": summary["best_test_bpd"],
                "seconds_per_step": summary["seconds"] / max(1, summary["steps"]),
                "curve": curve,
                "run": str(out / kind),
            }
        )
    table = _markdown(rows, config)
    (out / "comparison.md").write_text(table)
    _plot(rows, out / "comparison.png", config.get("name", "run"))
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    return {
        "table": str(out / "comparison.md"),
        "plot": str(out / "comparison.png"),
        "results": [{k: v for k, v in r.items() if k != "curve"} for r in rows],
    }


def _markdown(rows: list[dict], config: dict) -> str:
    m, t = config["model"], config["train"]
    lines = [
        f"# {config.get('name', 'run')}: attention comparison",
        "",
        f"{m['backbone']} L={m['levels']} K={m['steps']} C={m['hidden']}, position {m['position']}, "
        f"mask {m['mask']}; {t['steps']} steps, batch {t['batch_size']}, seed {t['seed']}, "
        f"data {config['data']['name']}.",
        "",
        "| attention | parameters | final test bits/dim | best test bits/dim | s/step |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['attention']} | {r['parameters']:,} | {r['final_test_bpd']:.4f} | "
            f"{r['best_test_bpd']:.4f} | {r['seconds_per_step']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["curve"]:
            ax.plot(*zip(*r["curve"]), "o-", label=r["attention"])
    ax.set_xlabel("step")
    ax.set_ylabel("test bits/dim")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
