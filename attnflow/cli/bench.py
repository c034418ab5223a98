"""``attnflow bench``: time training steps and sampling of a preset (random data)."""

from __future__ import annotations

import argparse

from .common import add_config_args, positive_int, resolve

__all__ = ["add_parser"]


def cmd_bench(args: argparse.Namespace) -> int:
    from ..training.bench import bench_config, format_table

    config = resolve(args)
    rows = [bench_config(config, batch_size=args.batch_size, device=args.device or "cpu",
                         repeats=args.repeats, warmup=args.warmup)]
    print(format_table(rows))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time training steps and sampling of a preset")
    add_config_args(p)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.set_defaults(func=cmd_bench)
