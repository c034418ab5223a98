"""``attnflow attention CKPT``: iMap weight maps and iTrans mixing matrices for a few test images."""

from __future__ import annotations

import argparse

from .common import add_device_arg, add_seed_arg, check_data_dir, positive_int, print_json

__all__ = ["add_parser"]


def cmd_attention(args: argparse.Namespace) -> int:
    from ..data import evaluation_data_config
    from ..experiments.attention_maps import write_attention_maps
    from ..training import load_checkpoint

    data = None
    if args.data or args.data_dir:
        config = load_checkpoint(args.checkpoint)["config"]
        data = evaluation_data_config(config, args.data, args.data_dir)
        if args.data_dir:
            check_data_dir(args.data_dir, data["name"])
    result = write_attention_maps(args.checkpoint, args.out, data=data, split=args.split, n=args.n,
                                  device=args.device or "cpu", seed=args.seed)
    print_json(result)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "attention",
        help="draw a checkpoint's iMap weights and iTrans mixing matrices for a few test images",
        description="For the first --n images of --split: OUT/image_K.png (the input beside every "
        "attention layer's map, per level) and OUT/summary.json (per layer: level, kind, mean and "
        "std of iMap's a, or the mean off-diagonal weight of iTrans's W).",
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt) of a model with attention")
    p.add_argument("--data", help="dataset name (default: the training config's)")
    p.add_argument("--data-dir", help="dataset root")
    p.add_argument("--split", help="split (default: the run's data.test_split, else test)")
    p.add_argument("--n", type=positive_int, default=4, help="images (default 4)")
    p.add_argument("--out", required=True, help="output folder")
    add_seed_arg(p)
    add_device_arg(p)
    p.set_defaults(func=cmd_attention)
