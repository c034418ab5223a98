"""What a run writes besides checkpoints: ``metrics.jsonl`` lines and the training curves."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["log_jsonl", "plot_curves", "read_curve", "log_attention"]


def log_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


_LABELS = {"bpd": "bits/dim", "l1": "L1 loss", "psnr": "PSNR (dB)"}


def plot_curves(metrics_path: Path, out_path: Path, *, train_key: str = "bpd", test_key: str = "bpd") -> Path | None:
    """The training loss and the test metric against step, from ``metrics.jsonl`` (bits/dim for
    flows; the rrdb network's L1 loss and test PSNR go on two axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, test = [], []
    for line in Path(metrics_path).read_text().splitlines():
        r = json.loads(line)
        if r.get("split") == "train" and train_key in r:
            train.append((r["step"], r[train_key]))
        elif r.get("split") not in (None, "train") and test_key in r:  # the run's test split
            test.append((r["step"], r[test_key]))
    if not train and not test:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    other = ax.twinx() if test_key != train_key else ax
    if train:
        ax.plot(*zip(*train), label="train", alpha=0.8)
    if test:
        other.plot(*zip(*test), "o-", color="C1", label="test")
    ax.set_xlabel("step")
    ax.set_ylabel(_LABELS.get(train_key, train_key) + ("" if other is ax else " (train)"))
    if other is not ax:
        other.set_ylabel(_LABELS.get(test_key, test_key) + " (test)")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    if other is not ax:
        extra = other.get_legend_handles_labels()
        handles = (handles[0] + extra[0], handles[1] + extra[1])
    ax.legend(*handles)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def read_curve(metrics_path: str | Path, split: str | None = None, key: str = "bpd") -> list[tuple[int, float]]:
    """``(step, value)`` pairs of one split's ``key`` (bits/dim by default) from a ``metrics.jsonl``;
    ``split=None``: the run's evaluation split, whatever its name (``data.test_split``)."""
    points = []
    for line in Path(metrics_path).read_text().splitlines():
        r = json.loads(line)
        if (r.get("split") == split if split else r.get("split") not in (None, "train")) and key in r:
            points.append((int(r["step"]), float(r[key])))
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
