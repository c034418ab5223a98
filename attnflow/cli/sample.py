"""``attnflow sample CKPT``: sample grids from an unconditional (generation) model."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device_arg, add_seed_arg, add_temperature_arg, load_task_model, positive_int, print_json

__all__ = ["add_parser"]


def grid_paths(out: str | Path, temperatures: list[float]) -> list[Path]:
    """``--out`` itself for one temperature; ``STEM_tT.TT.SUFFIX`` beside it for several."""
    out = Path(out)
    if len(temperatures) == 1:
        return [out]
    return [out.with_name(f"{out.stem}_t{t:.2f}{out.suffix or '.png'}") for t in temperatures]


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from ..images import save_grid

    model, _, _ = load_task_model(args.checkpoint, args.device or "cpu", "generation", "attnflow sample")
    written = []
    for t, path in zip(args.temperature, grid_paths(args.out, args.temperature)):
        torch.manual_seed(args.seed)
        written.append(str(save_grid(model.sample(args.n, temperature=t), path)))
    print_json({"samples": written[0] if len(written) == 1 else written, "n": args.n,
                "temperature": args.temperature[0] if len(written) == 1 else args.temperature,
                "seed": args.seed})
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained unconditional model")
    p.add_argument("checkpoint")
    p.add_argument("--n", type=positive_int, default=64, help="samples per grid (default 64)")
    add_temperature_arg(p, [0.7], "sampling")
    p.add_argument("--out", default="samples.png", help="grid file (several temperatures: one file each)")
    add_seed_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_sample)
