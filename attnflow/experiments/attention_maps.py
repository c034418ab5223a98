"""``attnflow attention``: the attention of a trained model on a few test images, as pictures.

For each image: one PNG with the input beside every attention layer's map (iMap: the weights
``a``, a heat map per position or a bar per channel; iTrans: the mixing matrix ``W``), titled by
level and layer; and ``summary.json`` with, per layer, the level, the kind and the mean and std of
``a`` (iMap) or the mean off-diagonal weight of ``W`` (iTrans), over the images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate

from ..data import dataset_from_config
from ..models import attention_layers, attention_maps, summarize_attention
from ..training import load_model

__all__ = ["write_attention_maps"]


def write_attention_maps(
    checkpoint: str | Path,
    out: str | Path,
    *,
    data: dict | None = None,
    split: str | None = None,
    n: int = 4,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``OUT/image_K.png`` (input | maps) for the first ``n`` images of ``split`` (default:
    the run's ``data.test_split``) and ``OUT/summary.json``; ``data``: a ``data`` config section
    instead of the checkpoint's.
    A model without attention layers is a ``ValueError``."""
    with torch.random.fork_rng():
        model, config, _ = load_model(checkpoint, device)
    if not attention_layers(model):
        raise ValueError(
            f"{checkpoint} has no attention layers (model.attention is "
            f"{config['model'].get('attention')!r}); train one with --set model.attention=imap or itrans"
        )
    data_cfg = data if data is not None else config["data"]
    split = split or config["data"]["test_split"]
    dataset = dataset_from_config(data_cfg, split, config["model"]["image_shape"],
                                  n_bins=int(getattr(model, "n_bins", 256)))
    n = min(int(n), len(dataset))
    if n < 1:
        raise ValueError(f"the {split} split of {data_cfg['name']!r} is empty")
    batch = default_collate([dataset[i] for i in range(n)])
    maps = attention_maps(model, batch, seed=seed)
    images, cond = model.unpack(batch)
    shown = model.visualize(cond, images.round().clamp(0, 255).to(torch.uint8))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [str(_figure(shown[i], maps, i, out / f"image_{i}.png")) for i in range(n)]
    summary = {
        "checkpoint": str(checkpoint),
        **dataset.source,
        "images": n,
        "layers": summarize_attention(maps),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return {"out": str(out), "figures": files, "summary": str(out / "summary.json"), "layers": len(maps)}


def _figure(image: torch.Tensor, maps: list[dict], i: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + len(maps)
    cols = min(panels, 5)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    img = image.cpu().permute(1, 2, 0).numpy()
    axes[0, 0].imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    axes[0, 0].set_title("input", fontsize=8)
    for k, m in enumerate(maps, start=1):
        ax = axes[k // cols, k % cols]
        v = m["map"][i].double()
        where = f"L{m['level']} {m['name'].split('.', 2)[-1] if m['level'] is not None else m['name']}"
        if m["kind"] == "itrans":
            im = ax.imshow(v.numpy(), cmap="viridis", vmin=0.0)
            ax.set_title(f"{where}\niTrans W ({v.shape[0]} patches)", fontsize=7)
        elif v.shape[-1] == 1 and v.shape[-2] == 1:  # channel attention: one weight per channel
            ax.axis("on")
            ax.bar(range(v.shape[0]), v.flatten().numpy())
            ax.set_ylim(0, 1)
            ax.set_title(f"{where}\niMap a per channel", fontsize=7)
            im = None
        else:
            im = ax.imshow(v[0].numpy(), cmap="magma", vmin=0.0, vmax=1.0)
            ax.set_title(f"{where}\niMap a", fontsize=7)
        if im is not None:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
