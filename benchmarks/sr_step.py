"""Speed and memory of 8x super-resolution (SRFlow backbone) with and without invertible attention.

For the paper's 1/1 and 2/8 presets (``celeba-sr-8x-{1-1,2-8}-{none,imap,itrans}``), at HR 160x160
and LR 20x20 on random data: median training step (forward, backward, optimiser step; batch 16 by
default) and sampling time (one SR image per LR image of the batch), peak memory, and the overhead
of attention over the backbone (``attention / none``, training and sampling). On CUDA it also
compares the throughput with the reference SRFlow implementation measured on an H200 (batch 16:
1/1 385 img/s training, 1,193 img/s sampling; 2/8 128 and 373). Prints one Markdown table.

    .venv/bin/python benchmarks/sr_step.py                         # CPU (slow: use --repeats 2)
    .venv/bin/python benchmarks/sr_step.py --device cuda
    .venv/bin/python benchmarks/sr_step.py --variants 1-1 --attentions none imap
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from attnflow.config import load_preset  # noqa: E402
from attnflow.training.bench import bench_config  # noqa: E402

#: the reference SRFlow implementation measured on an NVIDIA H200, batch 16: (train img/s, sample img/s)
REFERENCE_H200 = {"1-1": (385.0, 1193.0), "2-8": (128.0, 373.0)}


def format_table(rows: list[dict], device: str) -> str:
    """One Markdown table: times, throughput, memory, attention overhead, and vs the reference."""
    base = {r["variant"]: r for r in rows if r["attention"] == "none"}
    cuda = device.startswith("cuda")
    head = (
        "| SRFlow L/K | attention | params (M) | train ms/step | train img/s | train overhead | "
        "sample ms/batch | sample img/s | sample overhead | peak mem (GiB) |"
    )
    if cuda:
        head += " train vs ref | sample vs ref |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        b = base.get(r["variant"])
        t_over = r["train_ms"] / b["train_ms"] if b else float("nan")
        s_over = r["sample_ms"] / b["sample_ms"] if b else float("nan")
        sample_ips = r["batch"] / (r["sample_ms"] / 1000)
        line = (
            f"| {r['variant'].replace('-', '/')} | {r['attention']} | {r['params_M']:.2f} | "
            f"{r['train_ms']:.1f} | {r['img_per_s']:.1f} | {t_over:.3f} | {r['sample_ms']:.1f} | "
            f"{sample_ips:.1f} | {s_over:.3f} | {r['peak_mem_GiB']:.2f} |"
        )
        if cuda:
            ref = REFERENCE_H200.get(r["variant"])
            line += (
                f" {r['img_per_s'] / ref[0]:.2f}x | {sample_ips / ref[1]:.2f}x |" if ref else " - | - |"
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--variants", nargs="+", default=["1-1", "2-8"], choices=["1-1", "2-8"])
    p.add_argument("--attentions", nargs="+", default=["none", "imap", "itrans"])
    p.add_argument("--repeats", type=int, default=5, help="timed training steps (sampling: half)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    rows = []
    for variant in args.variants:
        for attention in args.attentions:
            config = load_preset(f"celeba-sr-8x-{variant}-{attention}")
            row = bench_config(
                config, batch_size=args.batch_size, device=args.device, repeats=args.repeats,
                warmup=args.warmup, label=f"srflow-{variant}",
            )
            row["variant"] = variant
            rows.append(row)
            print(
                f"# {variant} {attention}: train {row['train_ms']:.1f} ms, sample {row['sample_ms']:.1f} ms",
                file=sys.stderr, flush=True,
            )
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"8x SR (LR 20x20 -> HR 160x160), batch {args.batch_size}, {name}, torch {torch.__version__}, "
          f"median of {args.repeats} steps after {args.warmup} warm-up\n")
    print(format_table(rows, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
