"""The sub-tables of docs/results.md from a finished `attnflow compare` folder.

Each ablation is compared with its own baseline (masks and positions with the default iMap,
heads and patches with the default iTrans), seed by seed, with attnflow's own paired interval:

    python docs/results_tables.py runs/results-mnist-400
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from attnflow.experiments.compare import paired_difference

TABLES = {
    "Attention (the paper's claim: both lower bits/dim)": ("none", ["none", "imap", "itrans"]),
    "iMap mask (paper, its MNIST setting: spatial 0.99, channel 0.75, random 0.50, spatial-channel 0.39)": (
        "imap", ["imap", "imap-spatial", "imap-channel", "imap-random"]),
    "iMap position (paper: pos3 / pos4 best)": ("imap", ["imap-pos1", "imap-pos2", "imap", "imap-pos4"]),
    "iTrans heads (paper: 3-5 suffice)": ("itrans", ["itrans-h1", "itrans-h2", "itrans"]),
    "iTrans patches at the 14x14 level (16 does not divide 14)": ("itrans", ["itrans-p1", "itrans"]),
}
LABELS = {
    "imap": "imap (spatial-channel, pos3)", "itrans": "itrans (4 heads, 4 patches)",
    "imap-spatial": "imap, spatial mask", "imap-channel": "imap, channel mask", "imap-random": "imap, random mask",
    "imap-pos1": "imap at pos1", "imap-pos2": "imap at pos2", "imap-pos4": "imap at pos4",
    "itrans-h1": "itrans, 1 head", "itrans-h2": "itrans, 2 heads", "itrans-p1": "itrans, 1 patch",
}


def _runs(root: Path, variant: str) -> dict[int, dict]:
    return {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in sorted((root / variant).glob("seed_*.json"))}


def main(root: Path) -> None:
    for title, (base, variants) in TABLES.items():
        base_runs = _runs(root, base)
        print(f"**{title}**\n")
        print(f"| variant | parameters | test bits/dim (mean ± sd) | paired difference to {base} [95% CI] | step time ratio |")
        print("|---|---|---|---|---|")
        for v in variants:
            runs = _runs(root, v)
            seeds = sorted(set(runs) & set(base_runs))
            if not seeds:
                print(f"| {LABELS.get(v, v)} | | not measured | | |")
                continue
            vals = [runs[s]["test_bpd"] for s in seeds]
            sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            mean = statistics.fmean(vals)
            if v == base:
                diff = "(baseline)"
            else:
                d = paired_difference(vals, [base_runs[s]["test_bpd"] for s in seeds])
                diff = f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]" if d["ci"] else f"{d['mean']:+.4f}"
            step = statistics.fmean(runs[s]["step_seconds"] for s in seeds)
            base_step = statistics.fmean(base_runs[s]["step_seconds"] for s in seeds)
            print(f"| {LABELS.get(v, v)} | {runs[seeds[0]]['parameters']:,} | {mean:.4f} ± {sd:.4f} "
                  f"({len(seeds)} seeds) | {diff} | {step / base_step:.2f} |")
        print()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/results-mnist-400"))
