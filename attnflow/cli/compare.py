"""``attnflow compare``: train the same preset with and without attention, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_config_args, print_json, resolve

__all__ = ["add_parser"]


def cmd_compare(args: argparse.Namespace) -> int:
    from ..training.compare import compare

    config = resolve(args)
    out = Path(args.out or Path("runs") / f"compare-{config.get('name', 'run')}")
    result = compare(config, out, attentions=args.attentions, device=args.device, progress=not args.no_progress)
    print_json(result)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="train none / imap / itrans on one preset and compare test bits/dim")
    add_config_args(p)
    p.add_argument("--out", help="output folder")
    p.add_argument("--attentions", nargs="+", default=["none", "imap", "itrans"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compare)
