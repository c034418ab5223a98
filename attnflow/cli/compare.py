"""``attnflow compare``: train variants of one preset over paired seeds; table, JSON and plot."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_config_args, positive_int, print_json, resolve, temperature

__all__ = ["add_parser"]


def _variants(args: argparse.Namespace):
    from ..experiments.compare import AXES, cross_variants, parse_variant

    axes = [(AXES[name], values) for name, values in (
        ("attention", args.attentions), ("mask", args.masks), ("position", args.positions),
        ("heads", args.heads), ("patches", args.patches)) if values]
    for item in args.axis:
        if len(item) < 2:
            raise ValueError(f"--axis KEY VALUE [VALUE ...]: give a key and at least one value, got {item}")
        axes.append((item[0], item[1:]))
    if args.variants:
        if axes:
            raise ValueError("give --variants or axes (--attentions, --masks, --positions, --heads, "
                             "--patches, --axis), not both")
        return [parse_variant(v) for v in args.variants]
    return cross_variants(axes or [(AXES["attention"], ["none", "imap", "itrans"])])


def cmd_compare(args: argparse.Namespace) -> int:
    from ..experiments.compare import compare

    config = resolve(args)
    out = Path(args.out or Path("runs") / f"compare-{config.get('name', 'run')}")
    result = compare(
        config, out, variants=_variants(args), baseline=args.baseline, seeds=args.seeds, jobs=args.jobs,
        sr_temperatures=args.sr_temperatures, device=args.device, progress=not args.no_progress,
    )
    print((out / "comparison.md").read_text(), file=sys.stderr)
    print_json(result)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="train variants (attention kind, mask, position, ...) over paired seeds and compare them",
        description="Train every variant with --seeds paired seeds (seed i: the same data order and "
        "dequantisation noise for every variant) and write OUT/comparison.md, .json and .png: "
        "parameters, test bits/dim (mean, sd), the paired difference to the baseline with a 95% "
        "t confidence interval, and the step-time ratio. Variants: the cross product of the axes "
        "given, or --variants. Rerun the same command to continue a stopped comparison.",
    )
    add_config_args(p)
    p.add_argument("--out", help="output folder (default runs/compare-NAME)")
    p.add_argument("--attentions", nargs="+", metavar="KIND", help="axis: none imap itrans")
    p.add_argument("--masks", nargs="+", metavar="MASK", help="axis: spatial channel random spatial_channel")
    p.add_argument("--positions", nargs="+", metavar="POS", help="axis: pos1 pos2 pos3 pos4")
    p.add_argument("--heads", nargs="+", metavar="N", help="axis: iTrans heads")
    p.add_argument("--patches", nargs="+", metavar="N", help="axis: iTrans patches (or [a,b] per level)")
    p.add_argument("--axis", nargs="+", action="append", default=[], metavar="KEY_OR_VALUE",
                   help="axis over any config key: --axis model.hidden 16 32 (repeatable)")
    p.add_argument("--variants", nargs="+", metavar="NAME=KEY=VALUE,...",
                   help="named variants instead of axes, e.g. base= imap=attention=imap,mask=channel")
    p.add_argument("--baseline", help="the variant the others are compared with (default: the first)")
    p.add_argument("--seeds", type=positive_int, default=1, help="paired seeds per variant (default 1)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="runs at once, in subprocesses with cores // jobs threads each (default 1)")
    p.add_argument("--sr-temperatures", type=temperature, nargs="+", metavar="T",
                   help="super-resolution: temperatures the SR metrics are averaged over (default 0.1 ... 0.9)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compare)
