"""``attnflow train``: train a model from a preset or config (``--resume`` continues a run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_config_args, print_json, resolve

__all__ = ["add_parser"]


def cmd_train(args: argparse.Namespace) -> int:
    from ..training import train

    config = resolve(args)
    out = args.out or str(Path("runs") / config.get("name", "run"))
    summary = train(config, out, device=args.device, resume=args.resume, progress=not args.no_progress)
    print_json(summary)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a preset or config")
    add_config_args(p)
    p.add_argument("--out", help="output folder (default runs/PRESET)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
