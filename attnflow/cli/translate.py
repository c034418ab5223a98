"""``attnflow translate CKPT LABELS``: photos from label maps with a Full-Glow (cAttnFlow) checkpoint.

Input label maps are read according to the checkpoint's ``model.cond.label_mode``:

* ``color`` (the presets): any RGB image, e.g. Cityscapes ``*_gtFine_color.png``; alpha dropped,
  resized to the model's size with nearest neighbour (so colours stay exact);
* ``onehot``: single-channel label-id PNGs (mode L/P/I), e.g. Cityscapes ``*_gtFine_labelIds.png``;
  resized with nearest neighbour, ids ``0..classes-1`` one-hot, any other id an all-zero vector
  (as the Cityscapes loader does).

For each input it writes ``OUT/NAME_tT.TT_sK.png`` for every temperature ``T`` and sample ``K``
(for a folder, ``NAME`` is the path relative to it with ``/`` replaced by ``__``, as
``super-resolve`` does) and prints a JSON summary. Every file is read before any sampling, so an
unreadable one stops the run before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from .common import add_sampling_args, collect_inputs, load_task_model, print_json

__all__ = ["add_parser", "translate"]

_ONEHOT_HINT = "this model takes label ids (label_mode=onehot, e.g. *_gtFine_labelIds.png): "


def _read(model, path: Path) -> Tensor:
    from ..data.cityscapes import read_label_map

    size = tuple(model.image_shape[1:])
    labels = read_label_map(path, size, model.label_mode, model.source_channels, _ONEHOT_HINT)
    return labels.float().unsqueeze(0)


def translate(
    model: torch.nn.Module,
    inputs: list[tuple[str, Path]],
    out: Path,
    *,
    samples: int,
    temperatures: list[float],
    save_labels: bool = False,
    device: torch.device | str = "cpu",
) -> list[str]:
    """Sample ``samples`` photos per temperature for each ``(name, label file)``; the written paths."""
    from ..images import label_colors, save_image

    labels = [(name, _read(model, path)) for name, path in inputs]
    written: list[str] = []
    for name, lab in labels:
        lab = lab.to(device)
        if save_labels:
            written.append(str(save_image(label_colors(lab.cpu(), model.label_mode)[0], out / f"{name}_labels.png")))
        for t in temperatures:
            for i, photo in enumerate(model.sample(samples, lab, temperature=t)):
                written.append(str(save_image(photo, out / f"{name}_t{t:.2f}_s{i}.png")))
    return written


def cmd_translate(args: argparse.Namespace) -> int:
    inputs = collect_inputs(args.labels, "label input", args.glob)
    device = torch.device(args.device or "cpu")
    model, _, state = load_task_model(args.checkpoint, device, "translation", "attnflow translate")
    torch.manual_seed(args.seed)
    out = Path(args.out)
    written = translate(
        model, inputs, out, samples=args.samples, temperatures=args.temperature,
        save_labels=args.save_labels, device=device,
    )
    print_json({
        "checkpoint": str(args.checkpoint),
        "step": int(state.get("step", 0)),
        "label_mode": model.label_mode,
        "inputs": len(inputs),
        "samples_per_input": args.samples,
        "temperature": args.temperature[0] if len(args.temperature) == 1 else args.temperature,
        "seed": args.seed,
        "out": str(out),
        "files": written,
    })
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="sample photos for label maps with a Full-Glow checkpoint",
        description=(
            "Sample photos for one label image or every image in a folder (recursively). Colour "
            "models read RGB label maps (e.g. *_gtFine_color.png), one-hot models single-channel "
            "label-id PNGs (e.g. *_gtFine_labelIds.png); both are resized with nearest neighbour."
        ),
    )
    add_sampling_args(
        p, checkpoint="a checkpoint of a fullglow model (OUT/checkpoints/last.pt)",
        inputs=("labels", "a label image, or a folder of label images"),
        temperature=0.7, samples="photos per label map and temperature", out="translations",
    )
    p.add_argument("--glob", help="in a folder, only files whose name matches, e.g. '*_gtFine_color.png'")
    p.add_argument("--save-labels", action="store_true", help="also write NAME_labels.png (the resized label map)")
    p.set_defaults(func=cmd_translate)
