"""``attnflow bench``: speed, FLOPs and memory of a preset's training step and sampling, per attention kind."""

from __future__ import annotations

import argparse
import re

from .common import add_config_args, non_negative_int, positive_int, resolve

__all__ = ["add_parser"]

_DESCRIPTION = """\
For every attention kind (--attentions; default none, imap and itrans, those the backbone takes):
build the model (seed 0) and initialise it on random data of the training shape, run --warmup
untimed training steps and one sampling batch, then time --repeats training steps (forward,
backward, clipping, Adamax step) and half as many sampling batches, the kinds in turn, round by
round, so a machine whose speed drifts slows them alike. Prints one Markdown table: median ms per
training step and per sampling batch with images per second, the FLOPs of one training step per
image (torch.utils.flop_counter: convolutions, matrix products and attention; element-wise work is
not counted) and the rate the median step achieves, peak memory, and each kind's times over the
none row's (overhead).

Peak memory: on CUDA, torch.cuda.max_memory_allocated over a kind's set-up, warm-up steps and
sampling batch, less what was allocated before it (the other kinds); on the CPU "n/a" (the process's
resident set cannot be split between kinds that live in one process: use benchmarks/memory.py).
The device is --device, else the config's train.device (the paper-size presets say cuda)."""


def _label(config: dict) -> str:
    """The config's name without its attention suffix (``mnist-3-2-48-none`` -> ``mnist-3-2-48``)."""
    return re.sub(r"-(none|imap|itrans)$", "", str(config.get("name", "config")))


def _header(args: argparse.Namespace, device: str) -> str:
    import torch

    if device.startswith("cuda"):
        where = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    else:
        where = f"CPU, {torch.get_num_threads()} thread(s)"
    return (f"attnflow bench: {where}, torch {torch.__version__}"
            f"{', torch.compile of the training forward' if args.compile else ''}; median of {args.repeats} "
            f"training steps{'' if args.no_sample else f' and {max(1, args.repeats // 2)} sampling batch(es)'} per "
            f"kind, after {max(1, args.warmup)} warm-up step(s); kinds timed in turn")


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from ..experiments.bench import ATTENTIONS, attention_variants, bench_variants, format_table
    from ..training.distributed import check_device

    config = resolve(args)
    device = check_device(config["train"]["device"], "the config's train.device (give --device)")
    batch = args.batch_size or config["train"]["batch_size"]
    configs = attention_variants(config, args.attentions or ATTENTIONS, skip_refused=not args.attentions)
    label = _label(config)
    try:
        rows = bench_variants([(label, c) for c in configs], batch_size=batch, device=device,
                              repeats=args.repeats, warmup=args.warmup, sample=not args.no_sample,
                              compile=args.compile)
    except torch.OutOfMemoryError as err:
        raise ValueError(f"out of memory at --batch-size {batch} with {len(configs)} kind(s) held at once; "
                         f"give a smaller --batch-size or fewer --attentions") from err
    print(_header(args, device))
    print()
    print(format_table(rows))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="speed (img/s), FLOPs and memory of a preset's training step and sampling, per attention kind",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(p)
    p.add_argument("--batch-size", type=positive_int, help="images per step and per sampling batch "
                   "(default: the config's train.batch_size)")
    p.add_argument("--attentions", nargs="+", metavar="KIND", choices=("none", "imap", "itrans"),
                   help="attention kinds to compare (default: none imap itrans, those the backbone takes)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed training steps per kind (default 5; "
                   "sampling: half as many, at least 1)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed training steps per kind first (default 2; "
                   "at least one runs: it builds the optimiser state and, with --compile, compiles)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward (sampling stays eager; the first warm-up step compiles)")
    p.add_argument("--no-sample", action="store_true", help="time training steps only")
    p.set_defaults(func=cmd_bench)
