"""Speed and memory of Full-Glow / cAttnFlow (label -> photo): training step, sampling, peak memory.

For each batch size and attention kind (none, imap, itrans) at the paper's 2/8 (coupling width 512),
on random photos and label maps:

* **time**: ms per training step (objective forward, backward, gradient clipping, Adamax step) and
  ms to sample one batch. The models of one batch size live in one process and are timed
  round-robin (none, imap, itrans, none, ...), median over ``--repeats`` rounds, so that drifting
  load on a shared machine hits every row alike and the overhead ratios stay meaningful;
* **peak memory**: in a separate child process per row (one warm-up and one timed step, then
  sampling): CUDA's ``max_memory_allocated``, or on CPU the child's peak resident set.

Prints one Markdown table; ``overhead`` is a row's time over the ``none`` row of the same batch
(goal: <= 1.10 for training).

    python benchmarks/translate_step.py                         # CPU, 256x256, batch 1 and 8
    python benchmarks/translate_step.py --size 64 --repeats 3   # a quicker CPU run
    python benchmarks/translate_step.py --device cuda

256x256 at batch 8 on a CPU takes minutes per step and tens of GiB of memory: use ``--size``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

ATTENTIONS = ("none", "imap", "itrans")


def _config(args: argparse.Namespace, attention: str) -> dict:
    from attnflow.config import apply_overrides, load_preset

    return apply_overrides(load_preset(args.preset), [
        f"model.image_shape=[3, {args.size}, {args.size}]",
        f"model.levels={args.levels}",
        f"model.steps={args.steps}",
        f"model.attention={attention}",
    ])


def _label(args: argparse.Namespace) -> str:
    return f"fullglow {args.levels}/{args.steps} {args.size}x{args.size}"


def _peak_rss_gib() -> float | None:
    """This process's peak resident set (Linux ``VmHWM``, which, unlike ``ru_maxrss``, starts
    afresh at ``exec`` instead of inheriting the parent's high-water mark)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return None


def _memory_row(args: argparse.Namespace, attention: str, batch: int) -> dict:
    """Peak memory of one row, in this (child) process: :func:`attnflow.training.bench.bench_config` with one
    warm-up and one timed step, then sampling."""
    import torch

    from attnflow.training.bench import bench_config

    if args.threads:
        torch.set_num_threads(args.threads)
    row = bench_config(_config(args, attention), batch_size=batch, device=args.device, repeats=1,
                       warmup=1, label=_label(args))
    peak = row["peak_mem_GiB"]
    if not args.device.startswith("cuda"):
        peak = _peak_rss_gib() or peak
    return {"peak_mem_GiB": peak}


def _isolated_memory(args: argparse.Namespace, attention: str, batch: int) -> dict:
    argv = [sys.executable, __file__, "--memory-row", attention, str(batch)]
    for key in ("device", "size", "levels", "steps", "threads", "preset"):
        value = getattr(args, key)
        if value is not None:
            argv += [f"--{key}", str(value)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"memory measurement {attention} batch {batch} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_rows(args: argparse.Namespace, batch: int) -> dict[str, dict]:
    """Round-robin timing of every attention kind at one batch size, in this process."""
    import torch

    from attnflow.models import build_model
    from attnflow.training.bench import synchronize

    dev = torch.device(args.device)
    if dev.type == "cuda":  # as attnflow.training.bench and training (train.tf32) do
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    runs = {}
    for attention in args.attentions:
        torch.manual_seed(0)
        model = build_model(_config(args, attention)).to(dev)
        x, cond = model.example_batch(batch, dev)
        model.initialize((x, cond))
        model.train()
        runs[attention] = (model, torch.optim.Adamax(model.parameters(), lr=1e-4), x, cond)

    def train_step(attention: str) -> float:
        model, opt, x, cond = runs[attention]
        synchronize(dev)
        t0 = time.perf_counter()
        loss = model((x, cond))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        synchronize(dev)
        return time.perf_counter() - t0

    def sample(attention: str) -> float:
        model, _, x, cond = runs[attention]
        synchronize(dev)
        t0 = time.perf_counter()
        model.sample(batch, cond, temperature=0.7)
        synchronize(dev)
        return time.perf_counter() - t0

    train = {a: [] for a in runs}
    for i in range(args.warmup + args.repeats):
        for attention in runs:
            t = train_step(attention)
            if i >= args.warmup:
                train[attention].append(t)
    for model, *_ in runs.values():
        model.eval()
    samp = {a: [] for a in runs}
    for i in range(1 + max(1, args.repeats // 2)):
        for attention in runs:
            t = sample(attention)
            if i >= 1:
                samp[attention].append(t)
    return {
        a: {
            "params_M": sum(p.numel() for p in runs[a][0].parameters()) / 1e6,
            "train_ms": 1000 * statistics.median(train[a]),
            "sample_ms": 1000 * statistics.median(samp[a]),
        }
        for a in runs
    }


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
            f"| {r['batch'] / (r['train_ms'] / 1000):.2f} | {r['sample_ms']:.1f} | {r['peak_mem_GiB']:.2f} "
            f"| {over_t:.3f} | {over_s:.3f} |"
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
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median; default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-row peak-memory runs")
    p.add_argument("--preset", default="cityscapes-none", help="base preset (default cityscapes-none)")
    p.add_argument("--memory-row", nargs=2, metavar=("ATTENTION", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_row:
        print(json.dumps(_memory_row(args, args.memory_row[0], int(args.memory_row[1]))))
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for batch in args.batches:
        times = _timed_rows(args, batch)
        for attention in args.attentions:
            mem = (
                {"peak_mem_GiB": float("nan")}
                if args.no_memory else _isolated_memory(args, attention, batch)
            )
            rows.append({"model": _label(args), "attention": attention, "batch": batch, **times[attention], **mem})
            print(f"  {attention:6s} batch {batch}: {times[attention]['train_ms']:.1f} ms/step, "
                  f"sample {times[attention]['sample_ms']:.1f} ms", file=sys.stderr)
    device = args.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cpu = f", {torch.get_num_threads()} CPU thread(s), {platform.machine()}" if args.device == "cpu" else ""
    print(
        f"Full-Glow / cAttnFlow label->photo, L={args.levels} K={args.steps}, coupling width 512, "
        f"{args.size}x{args.size}, device {device}{cpu}, torch {torch.__version__}; time: median of "
        f"{args.repeats} round-robin rounds after {args.warmup} warm-up; peak memory: one row per process\n"
    )
    print(format_table(rows))
    over = [
        r["train_ms"] / b["train_ms"]
        for r in rows for b in rows
        if b["attention"] == "none" and b["batch"] == r["batch"] and r["attention"] != "none"
    ]
    if over:
        print(f"\nlargest training overhead of attention: {max(over):.3f} (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
