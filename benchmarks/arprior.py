"""Speed of mARFlow's ConvLSTM channel prior (the three priors of the 3-level CIFAR-10 model).

Prints one table: forward+backward time of ``log_prob`` (layer-major, as implemented) and of the
reference-style time-major loop (per step, every layer), and the time to sample, per level and in
total. Median of ``--repeats`` runs after ``--warmup`` runs.

    .venv/bin/python benchmarks/arprior.py                  # CPU, batch 32, float32
    .venv/bin/python benchmarks/arprior.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from attnflow.models import build_levels  # noqa: E402
from attnflow.models.marflow import ar_priors  # noqa: E402
from attnflow.priors import ChannelARPrior, gaussian_log_prob  # noqa: E402


def _timer_rounds(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Wall time of each function in milliseconds, one entry per round.

    The functions are run interleaved (a, b, c, a, b, c, ...) so that load drifting on a shared
    machine hits all of them alike; the device is synchronised around each run.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(1e3 * (time.perf_counter() - t0))
    return times


def _timer(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median wall time of each function in milliseconds, run interleaved (:func:`_timer_rounds`)."""
    return {k: statistics.median(v) for k, v in _timer_rounds(fns, device, warmup, repeats).items()}


def _fwd_bwd(prior: ChannelARPrior, z, ctx, time_major: bool) -> Callable[[], None]:
    def run() -> None:
        prior.zero_grad(set_to_none=True)
        if time_major:
            mu, ls = prior._mean_log_std_time_major(z, ctx)
            lp = gaussian_log_prob(z, mu, ls)
        else:
            lp = prior.log_prob(z, ctx)
        (-lp.mean()).backward()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--no-naive", action="store_true", help="skip the time-major comparison")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    levels, top = build_levels(3, 3, steps=lambda level, c: [], prior=ar_priors(geometry="reference"))
    priors = torch.nn.ModuleList([lv.split.prior for lv in levels if lv.split is not None] + [top])
    priors = priors.to(device=device, dtype=dtype)
    with torch.no_grad():  # move off the N(0, I) init (zero output conv); speed is value-independent
        for p in priors.parameters():
            p.add_(0.01 * torch.randn_like(p))
    sizes = (16, 8, 4)  # 3x32x32 after 1, 2, 3 squeezes

    header = ("level", "z [B,C,H,W]", "steps", "params", "log_prob f+b ms", "time-major f+b ms",
              "speedup", "sample ms")
    rows, tot = [], [0.0, 0.0, 0.0]
    for level, (prior, s) in enumerate(zip(priors, sizes), start=1):
        b = args.batch
        z = torch.randn(b, prior.channels, s, s, device=device, dtype=dtype, requires_grad=True)
        ctx = (
            torch.randn(b, prior.context_channels, s, s, device=device, dtype=dtype, requires_grad=True)
            if prior.context_channels else None
        )
        def draw() -> None:
            with torch.no_grad():
                prior.sample(tuple(z.shape), None if ctx is None else ctx.detach())

        fns = {"fast": _fwd_bwd(prior, z, ctx, False), "sample": draw}
        if not args.no_naive:
            fns["naive"] = _fwd_bwd(prior, z, ctx, True)
        ms = _timer(fns, device, args.warmup, args.repeats)
        fast, samp, naive = ms["fast"], ms["sample"], ms.get("naive", float("nan"))
        for i, v in enumerate((fast, naive, samp)):
            tot[i] += v
        n_params = sum(p.numel() for p in prior.parameters())
        rows.append((str(level), str(list(z.shape)), str(prior.channels), f"{n_params:,}",
                     f"{fast:.1f}", f"{naive:.1f}", f"{naive / fast:.2f}x", f"{samp:.1f}"))
    n_all = sum(p.numel() for p in priors.parameters())
    rows.append(("all", "", str(sum(p.channels for p in priors)), f"{n_all:,}", f"{tot[0]:.1f}",
                 f"{tot[1]:.1f}", f"{tot[1] / tot[0]:.2f}x", f"{tot[2]:.1f}"))

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"# ChannelARPrior, CIFAR 3 levels, batch {args.batch}, {args.dtype}, {device} "
          f"(threads {threads}), median of {args.repeats} after {args.warmup} warm-up")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    main()
