"""``attnflow translate``: photos from label maps with a trained Full-Glow (cAttnFlow) checkpoint.

Input label maps are read according to the checkpoint's ``model.cond.label_mode``:

* ``color`` (the presets): any RGB image, e.g. Cityscapes ``*_gtFine_color.png``; alpha dropped,
  resized to the model's size with nearest neighbour (so colours stay exact);
* ``onehot``: single-channel label-id PNGs (mode L/P/I), e.g. Cityscapes ``*_gtFine_labelIds.png``;
  resized with nearest neighbour, ids ``0..classes-1`` one-hot, any other id an all-zero vector
  (as the Cityscapes loader does).

For each input ``NAME.png`` it writes ``OUT/NAME_t0.70_s0.png ... _s{samples-1}.png`` (a folder's
sub-folders are mirrored under ``OUT``) and prints a JSON summary. An unreadable file is an error
naming it; nothing is written for later files.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["add_commands", "read_label_map", "translate"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``translate`` on the ``attnflow`` command line."""
    p = subparsers.add_parser(
        "translate",
        help="sample photos for label maps with a Full-Glow checkpoint",
        description=(
            "Sample photos for one label image or every image in a folder (recursively). Colour "
            "models read RGB label maps (e.g. *_gtFine_color.png), one-hot models single-channel "
            "label-id PNGs (e.g. *_gtFine_labelIds.png); both are resized with nearest neighbour."
        ),
    )
    p.add_argument("checkpoint", help="a checkpoint of a fullglow model (OUT/checkpoints/last.pt)")
    p.add_argument("labels", help="a label image, or a folder of label images")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--samples", type=int, default=4, help="photos per label map (default 4)")
    p.add_argument("--out", default="translations", help="output folder (default ./translations)")
    p.add_argument("--glob", help="in a folder, only files whose name matches, e.g. '*_gtFine_color.png'")
    p.add_argument("--save-labels", action="store_true", help="also write NAME_labels.png (the resized label map)")
    p.add_argument("--seed", type=int, help="random seed (default: nondeterministic)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    p.set_defaults(func=cmd_translate)


def _label_files(source: Path, pattern: str | None) -> tuple[list[Path], Path | None]:
    """The label files to translate and the folder they are relative to (None for one file)."""
    from .data.common import list_images

    if source.is_file():
        return [source], None
    if not source.exists():
        raise FileNotFoundError(f"label input {source} does not exist (expected an image or a folder)")
    files = list_images(source, "label folder")
    if pattern:
        files = [f for f in files if fnmatch.fnmatch(f.name, pattern)]
        if not files:
            raise ValueError(f"label folder {source}: no image file matches --glob {pattern!r}")
    return files, source


def read_label_map(path: str | Path, size: tuple[int, int], label_mode: str, classes: int) -> Tensor:
    """One label file as the model's condition ``[1, C, H, W]`` float (see module docstring)."""
    from .data.cityscapes import labels_to_onehot, load_label_ids
    from .data.common import load_image, resize_image, to_tensor

    path = Path(path)
    if label_mode == "color":
        img = resize_image(load_image(path, "RGB"), size, "nearest")
        return to_tensor(np.asarray(img)).float().unsqueeze(0)
    img = load_label_ids(
        path, "this model takes label ids (label_mode=onehot, e.g. *_gtFine_labelIds.png): "
    )
    ids = np.asarray(resize_image(img, size, "nearest")).astype(np.int64)
    return labels_to_onehot(torch.from_numpy(ids), classes).unsqueeze(0)


def translate(
    model: torch.nn.Module,
    files: list[Path],
    out: Path,
    *,
    root: Path | None,
    samples: int,
    temperature: float,
    save_labels: bool = False,
    device: torch.device | str = "cpu",
) -> list[str]:
    """Sample ``samples`` photos for each label file; returns the written paths.

    Every file is read once before any sampling, so an unreadable one stops the run early.
    """
    from .images import save_image
    from .models.fullglow import label_colors

    size = tuple(model.image_shape[1:])

    def read(path: Path) -> Tensor:
        return read_label_map(path, size, model.label_mode, model.source_channels)

    for path in files:
        read(path)
    written: list[str] = []
    for path in files:
        labels = read(path).to(device)
        rel = path.relative_to(root).parent if root is not None else Path()
        stem = out / rel / path.stem
        photos = model.sample(samples, labels, temperature)
        if save_labels:
            written.append(str(save_image(label_colors(labels.cpu(), model.label_mode)[0], f"{stem}_labels.png")))
        for i, photo in enumerate(photos):
            written.append(str(save_image(photo, f"{stem}_t{temperature:.2f}_s{i}.png")))
    return written


def cmd_translate(args: argparse.Namespace) -> int:
    from .train import load_model

    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if not args.temperature >= 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    files, root = _label_files(Path(args.labels), args.glob)
    device = torch.device(args.device or "cpu")
    model, config, state = load_model(args.checkpoint, device)
    backbone = config["model"].get("backbone")
    if backbone != "fullglow":
        raise ValueError(
            f"{args.checkpoint} is a {backbone!r} model; `attnflow translate` needs a fullglow "
            f"(label-to-photo) checkpoint"
        )
    if args.seed is not None:
        torch.manual_seed(args.seed)
    out = Path(args.out)
    written = translate(
        model, files, out, root=root, samples=args.samples, temperature=args.temperature,
        save_labels=args.save_labels, device=device,
    )
    print(json.dumps({
        "checkpoint": str(args.checkpoint),
        "step": int(state.get("step", 0)),
        "label_mode": model.label_mode,
        "inputs": len(files),
        "samples_per_input": args.samples,
        "temperature": args.temperature,
        "out": str(out),
        "files": written,
    }, indent=2))
    return 0
