"""``attnflow sample CKPT``: sample grids from an unconditional (generation) model.

``--out`` is the grid file for one temperature; for several, ``STEM_tT.SUFFIX`` beside it for each
temperature ``T`` (2 decimals, more where needed: ``0.70``, ``0.701``). Grid cells are shown at 64
pixels or more (small images upscaled, nearest neighbour; see :func:`attnflow.images.save_grid`).

Before any work: a folder, a name without suffix or a suffix Pillow cannot write is refused, and an
existing file unless ``--overwrite``; after loading the model, before sampling, an ``--n`` whose grid
would exceed :data:`attnflow.images.MAX_GRID_PIXELS` is refused with the largest ``--n`` that fits.

Samples are drawn ``--batch-size`` at a time (memory). The images depend on ``--seed`` *and*
``--batch-size``: the batches draw their noise from the seed's random stream in turn, so another
batch size gives other images. With ``--n`` <= ``--batch-size`` (the default 64) the grid is one
``model.sample(n)`` after ``torch.manual_seed(seed)``, as before batches existed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_device_arg,
    add_seed_arg,
    add_temperature_arg,
    check_outputs,
    check_picture_path,
    load_task_model,
    positive_int,
    print_json,
)

__all__ = ["add_parser"]


def grid_paths(out: str | Path, temperatures: list[float]) -> list[Path]:
    """``--out`` itself for one temperature; ``STEM_tT.SUFFIX`` beside it for several."""
    from ..images import temperature_label

    out = Path(out)
    if len(temperatures) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_t{temperature_label(t)}{out.suffix}") for t in temperatures]


def check_count(n: int, image_shape) -> None:
    """A ValueError, naming the largest ``--n`` that fits, if the grid of ``n`` images of
    ``image_shape`` would hold more than :data:`~attnflow.images.MAX_GRID_PIXELS` pixels."""
    from ..images import MAX_GRID_PIXELS, grid_size, max_grid_count

    h, w = (int(v) for v in image_shape[-2:])
    height, width = grid_size(n, h, w)
    if height * width > MAX_GRID_PIXELS:
        raise ValueError(
            f"--n {n}: the grid of {n} {h}x{w} samples would be {width}x{height} pixels, over the "
            f"{MAX_GRID_PIXELS:,} Pillow opens without a decompression-bomb warning; give --n at most "
            f"{max_grid_count(h, w)}"
        )


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from ..images import save_grid

    check_picture_path(args.out)  # the suffix of every grid file
    paths = grid_paths(args.out, args.temperature)
    check_outputs(((p, t) for p, t in zip(paths, args.temperature)), overwrite=args.overwrite,
                  inputs=[Path(args.checkpoint)])
    model, _, _ = load_task_model(args.checkpoint, args.device or "cpu", "generation", "attnflow sample")
    check_picture_path(args.out, modes=("L" if int(model.image_shape[0]) == 1 else "RGB",))
    check_count(args.n, model.image_shape)
    written = []
    for t, path in zip(args.temperature, paths):
        torch.manual_seed(args.seed)
        batches = [
            model.sample(min(args.batch_size, args.n - k), temperature=t) for k in range(0, args.n, args.batch_size)
        ]
        written.append(str(save_grid(model.to_pixels(torch.cat(batches)), path)))  # n_bins -> 8 bits
    print_json({"samples": written[0] if len(written) == 1 else written, "n": args.n,
                "temperature": args.temperature[0] if len(written) == 1 else args.temperature,
                "seed": args.seed, "batch_size": args.batch_size})
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="draw samples from a trained unconditional model",
        description="Draw --n samples per --temperature into one grid picture each.",
    )
    p.add_argument("checkpoint")
    p.add_argument("--n", type=positive_int, default=64, help="samples per grid (default 64)")
    add_temperature_arg(p, [0.7], "sampling")
    p.add_argument("--out", default="samples.png",
                   help="grid file, e.g. grid.png (several temperatures: STEM_tT.SUFFIX, one file each)")
    p.add_argument("--overwrite", action="store_true", help="replace grid files that exist")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="samples drawn at once (memory; part of the seed's random stream), default 64")
    add_seed_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_sample)
