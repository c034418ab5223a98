"""``attnflow presets``: the shipped presets, one line each."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def cmd_presets(args: argparse.Namespace) -> int:
    from ..config import list_presets, load_preset

    if args.params:
        print(f"{'preset':28s} {'parameters':>14s} {'paper (M)':>10s} {'ratio':>7s}")
    for name in list_presets():
        config = load_preset(name)
        m = config["model"]
        desc = (
            f"{m['backbone']:8s} {'x'.join(str(v) for v in m['image_shape']):9s} "
            f"L={m['levels']} K={m['steps']} C={m['hidden']} attention={m['attention']}"
        )
        if args.params:
            import torch

            from ..models import build_model

            with torch.device("meta"):  # counts without allocating (252M-parameter rows)
                count = sum(p.numel() for p in build_model(config).parameters())
            paper = config.get("paper_params_M")
            ratio = f"{count / (paper * 1e6):7.3f}" if paper else f"{'-':>7s}"
            print(f"{name:28s} {count:>14,d} {paper if paper else '-':>10} {ratio}")
        else:
            print(f"{name:28s} {desc}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("presets", help="list the shipped presets")
    p.add_argument("--params", action="store_true",
                   help="print each preset's parameter count beside the paper's (where the paper lists one)")
    p.set_defaults(func=cmd_presets)
