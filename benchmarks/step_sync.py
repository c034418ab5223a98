"""Does a training step read anything back to the host, with the device guard? (for a GPU)

    python benchmarks/step_sync.py --device cuda                       # mARFlow 3/2/48, batch 32
    python benchmarks/step_sync.py --device cuda --preset celeba-sr-8x-1-1-none --batch 16

One training step is forward, backward, gradient clipping and the optimiser step behind the
non-finite guard: the host guard (``bool(finite)`` every step, as ``train.device_guard: false``)
or :class:`attnflow.training.guard.DeviceGuard` (``true``). On CUDA the device-guard steps run
under ``torch.cuda.set_sync_debug_mode("warn")`` and every synchronising call is printed with the
line that made it (none is the goal). Then both guards are timed round-robin (median ms per step).
On CPU there is no host synchronisation to find; only the timing runs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
sys.path.insert(0, str(Path(__file__).resolve().parent))

from arprior import _timer  # noqa: E402  (interleaved medians, device synchronised)

from attnflow.config import apply_overrides, load_preset  # noqa: E402
from attnflow.models import build_model  # noqa: E402
from attnflow.training.guard import DeviceGuard  # noqa: E402
from attnflow.training.optim import make_optimizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mnist-3-2-48-none")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dev = torch.device(args.device)
    config = apply_overrides(load_preset(args.preset), args.overrides)
    torch.manual_seed(0)
    model = build_model(config).to(dev)
    batch = model.example_batch(args.batch, dev)
    model.initialize(batch)
    model.train()
    t = config["train"]
    runs = {}
    for name in ("host", "device"):
        opt = make_optimizer(model, t, capturable=name == "device" and dev.type == "cuda")
        guard = DeviceGuard(dev) if name == "device" else None

        def step(opt=opt, guard=guard) -> None:
            loss = model(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float(t["grad_clip"] or 0) or float("inf"))
            finite = torch.isfinite(loss) & torch.isfinite(norm)
            if guard is None:
                if bool(finite):
                    opt.step()
            else:
                guard.step(opt, finite)
                guard.record(loss, finite)

        step()  # creates the optimiser state (the guard's first step is decided on the host)
        runs[name] = step
    if dev.type == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                runs["device"]()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
        print(f"host synchronisations in one device-guarded step: {len(syncs)}")
        for w in syncs:
            print(f"  {w.filename}:{w.lineno}: {w.message}")
    times = _timer(runs, dev, warmup=0, repeats=args.repeats)  # each already ran once above
    print(f"| guard | {args.preset} batch {args.batch} ms/step ({dev.type}) |")
    print("|---|---|")
    for name, ms in times.items():
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
