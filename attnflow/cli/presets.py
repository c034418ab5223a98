"""``attnflow presets``: the shipped presets, one line each."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def cmd_presets(args: argparse.Namespace) -> int:
    from ..config import list_presets, load_preset

    for name in list_presets():
        m = load_preset(name)["model"]
        desc = (
            f"{m['backbone']:8s} {'x'.join(str(v) for v in m['image_shape']):9s} "
            f"L={m['levels']} K={m['steps']} C={m['hidden']} attention={m['attention']}"
        )
        print(f"{name:28s} {desc}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=cmd_presets)
