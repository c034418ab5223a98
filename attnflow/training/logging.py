"""What a run writes besides checkpoints: ``metrics.jsonl`` lines and the training curves."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["log_jsonl", "plot_curves", "read_curve", "log_attention"]


def log_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def plot_curves(metrics_path: Path, out_path: Path) -> Path | None:
    """Train (smoothed) and test bits/dim against step, from ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, test = [], []
    for line in Path(metrics_path).read_text().splitlines():
        r = json.loads(line)
        if r.get("split") == "train":
            train.append((r["step"], r["bpd"]))
        elif r.get("split") == "test":
            test.append((r["step"], r["bpd"]))
    if not train and not test:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train", alpha=0.8)
    if test:
        ax.plot(*zip(*test), "o-", label="test")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def read_curve(metrics_path: str | Path, split: str = "test") -> list[tuple[int, float]]:
    """``(step, bpd)`` pairs of one split from a ``metrics.jsonl``."""
    points = []
    for line in Path(metrics_path).read_text().splitlines():
        r = json.loads(line)
        if r.get("split") == split:
            points.append((int(r["step"]), float(r["bpd"])))
    return points


def log_attention(writer, model, dataset, step: int, n: int = 8) -> None:
    """TensorBoard scalars of what the attention layers do on the first ``n`` items of
    ``dataset`` (:func:`attnflow.models.attention_summary`): ``attention/L{level}.{i}-imap/a_mean``,
    ``.../a_std``, ``attention/L{level}.{i}-itrans/w_offdiag_mean``. Nothing for a model without
    attention; the global RNG is left as it was."""
    from torch.utils.data import default_collate

    from ..models import attention_layers, attention_summary

    if not attention_layers(model) or len(dataset) == 0:
        return
    batch = default_collate([dataset[i] for i in range(min(n, len(dataset)))])
    for i, row in enumerate(attention_summary(model, batch)):
        tag = f"attention/L{row['level']}.{i}-{row['kind']}"
        for key in ("a_mean", "a_std", "w_offdiag_mean"):
            if row.get(key) is not None:
                writer.add_scalar(f"{tag}/{key}", row[key], step)
