"""``attnflow translate CKPT LABELS``: photos from label maps with a Full-Glow (cAttnFlow) checkpoint.

Input label maps are read according to the checkpoint's ``model.cond.label_mode``:

* ``color`` (the presets): RGB label maps, e.g. Cityscapes ``*_gtFine_color.png``; alpha dropped,
  resized to the model's size with nearest neighbour (so colours stay exact). A single-channel
  image (mode L/I, or a palette image of grey levels, e.g. ``*_gtFine_labelIds.png``) is refused:
  label ids need a ``label_mode=onehot`` model. A palette image with colours is the colour map it
  shows;
* ``onehot``: single-channel label-id PNGs (mode L/P/I), e.g. Cityscapes ``*_gtFine_labelIds.png``;
  resized with nearest neighbour, ids ``0..classes-1`` one-hot, any other id an all-zero vector
  (as the Cityscapes loader does). An RGB file is refused.

An input that looks like a photo rather than a label map (more than 5% of its pixels outside its 64
most frequent colours, or grey levels; a label map has a few dozen, JPEG noise allowed for) is
translated, but warned about on stderr and listed under ``"warnings"`` in the JSON summary: the
heuristic can misjudge, so it does not stop the run.

For each input it writes ``OUT/NAME_tT_sK.png`` for every temperature ``T`` (2 decimals, more where
needed: ``0.70``, ``0.701``) and sample ``K`` (and ``OUT/NAME_labels.png`` with ``--save-labels``),
at the model's size, and prints a JSON summary. ``NAME`` is the file's stem; for a folder, its path
relative to the folder without suffix, so the outputs mirror the input tree (``sub/y.png`` ->
``OUT/sub/y_t0.70_s0.png``), with the suffix kept where two files differ only by it. Before any
work, every output path is checked (two inputs that would write one file, or an existing file
without ``--overwrite``, stop the run), and every file is read before any sampling, so an unreadable
one stops the run before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..images import temperature_label
from .common import (
    add_sampling_args,
    check_out_folder,
    check_outputs,
    collect_inputs,
    load_task_model,
    print_json,
)

__all__ = ["add_parser", "translate", "output_paths"]

_ONEHOT_HINT = "this model takes label ids (label_mode=onehot, e.g. *_gtFine_labelIds.png): "
#: a label map has a few dozen colours; an input with more than PHOTO_SHARE of its pixels outside
#: its TOP_COLORS most frequent colours (grey levels for label ids) looks like a photo
TOP_COLORS, PHOTO_SHARE = 64, 0.05
_SINGLE_CHANNEL = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F"}


def _read(model, path: Path, pairs: str | None = None) -> Tensor:
    """The label map of ``path`` at the model's size, ``[1, C, H, W]``; with ``pairs`` (``AtoB`` or
    ``BtoA``), ``path`` is a pix2pix pair image and the condition half is read."""
    from ..data.cityscapes import color_label_tensor, read_label_map
    from ..data.pix2pix import Pix2PixPairs

    size = tuple(model.image_shape[1:])
    if pairs is None:
        labels = read_label_map(path, size, model.label_mode, model.source_channels, _ONEHOT_HINT)
    else:
        half = Pix2PixPairs.condition_half(path, pairs)
        labels = color_label_tensor(half, size, model.label_mode, model.source_channels)[0]
    return labels.float().unsqueeze(0)


def _inspect(model, path: Path) -> str | None:
    """A warning if ``path`` (already read) looks like a photo rather than a label map; a
    ValueError if it is a single-channel (label-id) image given to a colour-label model."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        palette = im.mode in ("P", "PA")
        if im.mode in _SINGLE_CHANNEL or (palette and model.label_mode == "onehot"):
            rgb = None  # the pixel values are what the model reads
            values = np.asarray(im)
            codes, what = (values[..., 0] if values.ndim == 3 else values).astype(np.int64), "values"
        else:
            rgb = np.asarray((im.convert("RGBA") if palette else im).convert("RGB"))
            codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
            what = "colours"
    if model.label_mode == "color" and (rgb is None or (palette and (rgb == rgb[..., :1]).all())):
        raise ValueError(  # L/I images, or palette images of grey levels: label ids
            f"label file {path}: a single-channel image (mode {im.mode}), label ids rather than "
            f"colours; this model takes colour label maps (label_mode=color, e.g. "
            f"*_gtFine_color.png); label-id images need a label_mode=onehot model"
        )
    counts = np.sort(np.unique(codes.reshape(-1), return_counts=True)[1])[::-1]
    share = 1 - counts[:TOP_COLORS].sum() / counts.sum()
    if share <= PHOTO_SHARE:
        return None
    return (
        f"{path} looks like a photo, not a label map: {share:.0%} of its pixels are outside its "
        f"{TOP_COLORS} most frequent {what} ({len(counts)} in all; a label map has a few dozen)"
    )


def output_paths(
    inputs: list[tuple[str, Path]], out: Path, samples: int, temperatures: list[float], save_labels: bool,
) -> list[tuple[Path, Path]]:
    """``(output file, input file)`` of every file :func:`translate` writes, in order."""
    paths = []
    labels = [temperature_label(t) for t in temperatures]
    for name, path in inputs:
        if save_labels:
            paths.append((out / f"{name}_labels.png", path))
        paths += [(out / f"{name}_t{label}_s{i}.png", path) for label in labels for i in range(samples)]
    return paths


def translate(
    model: torch.nn.Module,
    inputs: list[tuple[str, Path]],
    out: Path,
    *,
    samples: int,
    temperatures: list[float],
    save_labels: bool = False,
    device: torch.device | str = "cpu",
    overwrite: bool = False,
    on_warning: Callable[[str], None] | None = None,
    pairs: str | None = None,
) -> list[str]:
    """Sample ``samples`` photos per temperature for each ``(name, label file)``; the written paths.

    Before any sampling the outputs are checked (:func:`~attnflow.cli.common.check_outputs`) and
    every file is read; ``on_warning`` gets the warning about each input that looks like a photo.
    ``pairs`` (``AtoB``/``BtoA``): the inputs are pix2pix pair images, read by their condition half."""
    from ..images import label_colors, save_image

    planned = output_paths(inputs, Path(out), samples, temperatures, save_labels)
    paths = iter(check_outputs(planned, overwrite=overwrite, inputs=[path for _, path in inputs]))
    labels = [_read(model, path, pairs) for _, path in inputs]
    if pairs is None:  # a pair image holds a photo by design
        for warning in filter(None, (_inspect(model, path) for _, path in inputs)):
            if on_warning is not None:
                on_warning(warning)
    written: list[str] = []
    for lab in labels:  # the files in the order output_paths lists them
        lab = lab.to(device)
        if save_labels:
            written.append(str(save_image(label_colors(lab.cpu(), model.label_mode)[0], next(paths))))
        for t in temperatures:
            for photo in model.sample(samples, lab, temperature=t):
                written.append(str(save_image(photo, next(paths))))
    return written


def cmd_translate(args: argparse.Namespace) -> int:
    inputs = collect_inputs(args.labels, "label input", args.glob)
    out = Path(args.out)
    check_out_folder(out, (), overwrite=True)  # not a file; the files themselves are checked next
    check_outputs(
        output_paths(inputs, out, args.samples, args.temperature, args.save_labels),
        overwrite=args.overwrite, inputs=[path for _, path in inputs],
    )
    device = torch.device(args.device or "cpu")
    model, config, state = load_task_model(args.checkpoint, device, "translation", "attnflow translate")
    pairs = args.pairs
    if pairs == "run":  # --pairs alone: the direction the run was trained with
        pairs = config["data"]["options"].get("direction", "AtoB")
    torch.manual_seed(args.seed)
    warnings: list[str] = []

    def warn(text: str) -> None:  # at once, before the sampling
        warnings.append(text)
        print(f"attnflow translate: warning: {text}", file=sys.stderr, flush=True)

    written = translate(
        model, inputs, out, samples=args.samples, temperatures=args.temperature,
        save_labels=args.save_labels, device=device, overwrite=args.overwrite, on_warning=warn, pairs=pairs,
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
        **({"pairs": f"pix2pix pair images, condition half by direction {pairs}"} if pairs else {}),
        "files": written,
        "warnings": warnings,
    })
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="sample photos for label maps with a Full-Glow checkpoint",
        description=(
            "Sample photos for one label image or every image in a folder (recursively). Colour "
            "models read RGB label maps (e.g. *_gtFine_color.png), one-hot models single-channel "
            "label-id PNGs (e.g. *_gtFine_labelIds.png); both are resized with nearest neighbour. "
            "Inputs that look like photos are warned about. Outputs mirror the input folder "
            "(OUT/sub/NAME_tT_sK.png); existing files are kept unless --overwrite."
        ),
    )
    add_sampling_args(
        p, checkpoint="a checkpoint of a fullglow model (OUT/checkpoints/last.pt)",
        inputs=("labels", "a label image, or a folder of label images"),
        temperature=0.7, samples="photos per label map and temperature", out="translations",
    )
    p.add_argument("--glob", help="in a folder, only files whose name matches, e.g. '*_gtFine_color.png'")
    p.add_argument("--pairs", nargs="?", const="run", choices=("run", "AtoB", "BtoA"),
                   help="the inputs are pix2pix pair images (A | B side by side, e.g. its val/ folder): "
                        "read the condition half, by the run's data.options.direction or the one given")
    p.add_argument("--save-labels", action="store_true", help="also write NAME_labels.png (the resized label map)")
    p.set_defaults(func=cmd_translate)
