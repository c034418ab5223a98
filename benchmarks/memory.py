"""Peak memory of one training forward + backward, ordinary vs invertible backprop (CPU or CUDA).

    python benchmarks/memory.py                                  # mARFlow 3/4/96 b4, Full-Glow 2/8 256x256 b1
    python benchmarks/memory.py --models marflow --marflow-batch 8
    python benchmarks/memory.py --fullglow-size 128 --threads 2
    python benchmarks/memory.py --device cuda

Every setting (model x {ordinary, invertible}) runs in a fresh subprocess, one at a time: build the
model from its preset, ``initialize`` on a random batch (``example_batch``), switch the mode
(``set_invertible_backprop``), then measure one ``objective`` forward and ``backward``:

* CPU: the process's resident set. The kernel's high-water mark (``VmHWM``) is reset just before
  the step (``/proc/self/clear_refs``, 5) and read after it; ``before`` is the resident set at the
  reset (Python, torch, the model's weights), ``step`` = ``peak - before`` is what the training step
  itself needed (activations, gradients). If the reset is refused, ``peak`` includes the set-up.
* CUDA: ``torch.cuda.max_memory_allocated`` around the step (``before``: allocated at the start).

Models: ``marflow``: mARFlow 3/4/96 (preset ``cifar10-3-4-96-none``, 3x32x32); ``fullglow``:
Full-Glow 2/8, coupling width 512 (preset ``cityscapes-none``) at ``--fullglow-size``. The loss of
both modes is printed too (the same to the last digits: the forward is the ordinary one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _config(args: argparse.Namespace, model: str) -> dict:
    from attnflow.config import apply_overrides, load_preset

    if model == "marflow":
        return load_preset("cifar10-3-4-96-none")
    size = args.fullglow_size
    return apply_overrides(load_preset("cityscapes-none"), [
        f"model.image_shape=[3, {size}, {size}]", "model.levels=2", "model.steps=8",
    ])


def _batch_size(args: argparse.Namespace, model: str) -> int:
    return args.marflow_batch if model == "marflow" else args.fullglow_batch


def measure(args: argparse.Namespace, model_name: str, invertible: bool) -> dict:
    """One setting, in this process."""
    import gc

    import torch

    from attnflow.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(_config(args, model_name)).to(dev)
    batch = model.example_batch(_batch_size(args, model_name), dev)
    model.initialize(batch)
    model.train().set_invertible_backprop(invertible)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev) / 2**30
        reset = True
    else:
        reset = _reset_peak()
        before = (_status_kib("VmRSS") or 0) / 2**20
    torch.manual_seed(1)
    t0 = time.perf_counter()
    loss = model(batch)
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30
    else:
        peak = (_status_kib("VmHWM") or 0) / 2**20
    seconds = time.perf_counter() - t0
    return {
        "model": model_name, "invertible": invertible, "batch": _batch_size(args, model_name),
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "loss": float(loss.detach()),
        "before_GiB": before, "peak_GiB": peak, "step_GiB": peak - before if reset else float("nan"),
        "seconds": seconds, "peak_reset": reset,
    }


def _isolated(args: argparse.Namespace, model: str, invertible: bool) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--setting", model, str(int(invertible)),
            "--device", args.device, "--fullglow-size", str(args.fullglow_size),
            "--marflow-batch", str(args.marflow_batch), "--fullglow-batch", str(args.fullglow_batch)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"setting {model} invertible={invertible} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _label(args: argparse.Namespace, model: str) -> str:
    if model == "marflow":
        return "mARFlow 3/4/96 3x32x32"
    return f"Full-Glow 2/8 {args.fullglow_size}x{args.fullglow_size}"


def format_table(args: argparse.Namespace, rows: list[dict]) -> str:
    lines = [
        "| model | batch | backprop | params (M) | before (GiB) | peak (GiB) | step (GiB) | step vs ordinary "
        "| fwd+bwd s | loss |",
        "|" + "---|" * 10,
    ]
    ordinary = {r["model"]: r for r in rows if not r["invertible"]}
    for r in rows:
        base = ordinary.get(r["model"])
        ratio = r["step_GiB"] / base["step_GiB"] if base else float("nan")
        lines.append(
            f"| {_label(args, r['model'])} | {r['batch']} | {'invertible' if r['invertible'] else 'ordinary'} "
            f"| {r['params_M']:.2f} | {r['before_GiB']:.2f} | {r['peak_GiB']:.2f} | {r['step_GiB']:.2f} "
            f"| {ratio:.2f} | {r['seconds']:.1f} | {r['loss']:.6f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["marflow", "fullglow"], choices=["marflow", "fullglow"])
    p.add_argument("--marflow-batch", type=int, default=4)
    p.add_argument("--fullglow-batch", type=int, default=1)
    p.add_argument("--fullglow-size", type=int, default=256, help="image size (default 256, the paper's)")
    p.add_argument("--threads", type=int, help="torch threads per setting (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--setting", nargs=2, metavar=("MODEL", "INVERTIBLE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled
    if args.setting:
        print(json.dumps(measure(args, args.setting[0], bool(int(args.setting[1])))))
        return 0
    rows = []
    for model in args.models:
        for invertible in (False, True):
            row = _isolated(args, model, invertible)
            rows.append(row)
            print(f"  {_label(args, model)} {'invertible' if invertible else 'ordinary'}: peak "
                  f"{row['peak_GiB']:.2f} GiB, step {row['step_GiB']:.2f} GiB, {row['seconds']:.1f} s",
                  file=sys.stderr, flush=True)
    where = args.device if args.device != "cpu" else "CPU resident set (VmHWM reset before the step)"
    print(f"Peak memory of one training forward + backward, one process per row, {where}\n")
    print(format_table(args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
