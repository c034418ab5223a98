"""FLOPs of a training step and the rate it runs at: how close a step is to the hardware.

    python benchmarks/flops.py --preset mnist-3-2-48-none --batch 32 [--set train.autocast=bf16]

Counts the FLOPs of one training step (forward + backward) with ``torch.utils.flop_counter``
(convolutions, matmuls and attention; element-wise work is not counted), times the step with
``attnflow.training.bench`` and prints GFLOP per step and the achieved GFLOP/s.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from attnflow.config import ConfigError, apply_overrides, load_preset
from attnflow.models import build_model
from attnflow.nn import AUTOCAST_DTYPES, network_autocast
from attnflow.training.bench import bench_config


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``--preset``, ``--batch``, ``--set`` and ``--device``: the model a step is measured on."""
    p.add_argument("--preset", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--device", default="cpu")


def initialised_model(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[dict, torch.nn.Module, object]:
    """``(config, model, batch)``: the preset's model (seed 0) initialised on a random batch, in
    training mode. An unknown preset or a bad ``--set`` ends in ``parser.error`` (one line, exit 2)."""
    try:
        config = apply_overrides(load_preset(args.preset), args.overrides)
        torch.manual_seed(0)
        model = build_model(config).to(args.device)
    except ConfigError as err:
        parser.error(str(err))
    batch = model.example_batch(args.batch, args.device)
    model.initialize(batch)
    model.train()
    return config, model, batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(p)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    config, model, batch = initialised_model(args, p)
    with FlopCounterMode(display=False) as counter:
        with network_autocast(AUTOCAST_DTYPES.get(config["train"].get("autocast"))):
            loss = model(batch)
        loss.backward()
    flops = counter.get_total_flops()
    row = bench_config(config, batch_size=args.batch, device=args.device, repeats=args.repeats, warmup=1,
                       sample=False)
    threads = torch.get_num_threads() if args.device == "cpu" else "-"
    print(f"| {args.preset} {' '.join(args.overrides)} | {args.batch} | {threads} | {flops / 1e9:.4g} | "
          f"{row['train_ms']:.0f} | {flops / 1e9 / (row['train_ms'] / 1e3):.0f} |")


if __name__ == "__main__":
    main()
