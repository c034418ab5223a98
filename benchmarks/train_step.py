"""Training-step and sampling speed of mARFlow with and without attention (issue 3's goals).

    python benchmarks/train_step.py [--device cuda] [--configs 3-2-48 3-4-96] [--batch-sizes 32 256]

Random data, float32, median over repeats after warm-up. One Markdown table; ``overhead`` is the
step time with attention over the same model without.
"""

from __future__ import annotations

import argparse
import sys

import torch

from attnflow.config import load_preset
from attnflow.training.bench import bench_config, format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["3-2-48", "3-4-96"], help="L-K-C of the mnist-* presets")
    parser.add_argument("--attentions", nargs="+", default=["none", "imap", "itrans"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-sample", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    args = parser.parse_args()
    rows = []
    for lkc in args.configs:
        for batch in args.batch_sizes:
            for att in args.attentions:
                cfg = load_preset(f"mnist-{lkc}-{att}")  # 3x32x32, as the paper's MNIST and CIFAR rows
                label = f"marflow {lkc} b{batch}" + (" compiled" if args.compile else "")
                try:
                    row = bench_config(
                        cfg, batch_size=batch, device=args.device, repeats=args.repeats,
                        warmup=args.warmup, sample=not args.no_sample, compile=args.compile, label=label,
                    )
                except torch.OutOfMemoryError:
                    print(f"  {label} {att}: out of memory", file=sys.stderr, flush=True)
                    torch.cuda.empty_cache()
                    continue
                rows.append(row)
                print(f"  {row['model']} {att}: {row['train_ms']:.1f} ms/step", file=sys.stderr, flush=True)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"attnflow training step (forward, backward, Adamax), 3x32x32 random data, {name}, torch {torch.__version__}")
    print()
    print(format_table(rows))


if __name__ == "__main__":
    main()
