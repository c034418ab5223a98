"""Speed and memory of Full-Glow / cAttnFlow (label -> photo): training step, sampling, peak memory.

For each batch size and attention kind (none, imap, itrans) at the paper's 2/8 (coupling width 512),
on random photos and label maps: median ms per training step (objective forward, backward,
Adamax step, gradient clipping), median ms to sample one batch, and peak memory. Each row runs in
its own process, so the CPU peak resident set is that row's. Prints one Markdown table whose
``overhead`` columns are the time of each attention row over the ``none`` row of the same batch
(the goal is <= 1.10).

    python benchmarks/translate_step.py                       # CPU, 256x256, batch 1 and 8
    python benchmarks/translate_step.py --size 64 --repeats 3 # a quicker CPU run
    python benchmarks/translate_step.py --device cuda

256x256 at batch 8 on a CPU takes minutes per step and tens of GiB of memory: use ``--size``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

ATTENTIONS = ("none", "imap", "itrans")


def _config(args: argparse.Namespace, attention: str) -> dict:
    from attnflow.config import apply_overrides, load_preset

    cfg = load_preset(args.preset)
    return apply_overrides(cfg, [
        f"model.image_shape=[3, {args.size}, {args.size}]",
        f"model.levels={args.levels}",
        f"model.steps={args.steps}",
        f"model.attention={attention}",
    ])


def _row(args: argparse.Namespace, attention: str, batch: int) -> dict:
    """One measurement, in this process."""
    import torch

    from attnflow.bench import bench_config

    if args.threads:
        torch.set_num_threads(args.threads)
    label = f"fullglow {args.levels}/{args.steps} {args.size}x{args.size}"
    return bench_config(
        _config(args, attention), batch_size=batch, device=args.device, repeats=args.repeats,
        warmup=args.warmup, label=label,
    )


def _isolated_row(args: argparse.Namespace, attention: str, batch: int) -> dict:
    """One measurement in a child process (its own peak memory)."""
    argv = [sys.executable, __file__, "--row", attention, str(batch)]
    for key in ("device", "size", "levels", "steps", "repeats", "warmup", "threads", "preset"):
        value = getattr(args, key)
        if value is not None:
            argv += [f"--{key}", str(value)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark row {attention} batch {batch} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict]) -> str:
    """Markdown table with train and sampling overhead over the ``none`` row of the same batch."""
    base = {r["batch"]: r for r in rows if r["attention"] == "none"}
    lines = [
        "| model | attention | batch | params (M) | train ms/step | img/s | sample ms/batch "
        "| peak mem (GiB) | train overhead | sample overhead |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        b = base.get(r["batch"])
        over_t = r["train_ms"] / b["train_ms"] if b else float("nan")
        over_s = r["sample_ms"] / b["sample_ms"] if b else float("nan")
        lines.append(
            f"| {r['model']} | {r['attention']} | {r['batch']} | {r['params_M']:.2f} | {r['train_ms']:.1f} "
            f"| {r['img_per_s']:.2f} | {r['sample_ms']:.1f} | {r['peak_mem_GiB']:.2f} | {over_t:.3f} | {over_s:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--size", type=int, default=256, help="image size (default 256, the paper's)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    p.add_argument("--levels", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5, help="timed training steps per row (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--preset", default="cityscapes-none", help="base preset (default cityscapes-none)")
    p.add_argument("--row", nargs=2, metavar=("ATTENTION", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row:
        print(json.dumps(_row(args, args.row[0], int(args.row[1]))))
        return 0
    import torch

    rows = []
    for batch in args.batches:
        for attention in args.attentions:
            row = _isolated_row(args, attention, batch)
            rows.append(row)
            print(f"  {attention:6s} batch {batch}: {row['train_ms']:.1f} ms/step, "
                  f"sample {row['sample_ms']:.1f} ms", file=sys.stderr)
    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    threads = args.threads or torch.get_num_threads()
    print(
        f"Full-Glow / cAttnFlow label->photo, L={args.levels} K={args.steps}, coupling width 512, "
        f"{args.size}x{args.size}, device {device}"
        + (f", {threads} CPU thread(s), {platform.processor() or platform.machine()}" if device == "cpu" else "")
        + f", torch {torch.__version__}, median of {args.repeats} steps after {args.warmup} warm-up\n"
    )
    print(format_table(rows))
    worst = max((r["train_ms"] / next(b for b in rows if b["batch"] == r["batch"] and b["attention"] == "none")["train_ms"]
                 for r in rows if r["attention"] != "none"), default=float("nan")) if "none" in args.attentions else float("nan")
    print(f"\nlargest training overhead of attention: {worst:.3f} (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
