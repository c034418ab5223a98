"""How far ``train.autocast`` moves test bits/dim: fixed checkpoints, fixed batches, the conditioner
networks in float32 against bfloat16 (or float16) autocast.

    python benchmarks/autocast_bpd.py RUN/checkpoints/last.pt [...] [--dtype bf16] [--max-batches 4]

Each checkpoint's test split (its config's data section; bundled data need no download) is evaluated
twice with the same dequantisation noise (the same seed before each pass): once as trained, once
inside ``network_autocast``. Prints one Markdown row per checkpoint; the GPU goal of the speed issue
is a difference of at most 0.005 bits/dim.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from attnflow.data import dataset_from_config
from attnflow.evaluation.likelihood import evaluate_metric
from attnflow.nn import AUTOCAST_DTYPES, network_autocast
from attnflow.training.checkpoint import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--dtype", default="bf16", choices=sorted(AUTOCAST_DTYPES))
    p.add_argument("--max-batches", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(f"| checkpoint | backbone | test images | bits/dim float32 | bits/dim {args.dtype} networks | difference |")
    print("|---|---|---|---|---|---|")
    for path in args.checkpoints:
        model, config, _ = load_model(path, args.device)
        data = dataset_from_config(config["data"], config["data"].get("test_split", "test"),
                                   config["model"].get("image_shape"))
        loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)
        values = []
        for dtype in (None, AUTOCAST_DTYPES[args.dtype]):
            torch.manual_seed(0)
            with torch.no_grad(), network_autocast(dtype):
                values.append(evaluate_metric(model, loader, args.max_batches))
        n = min(len(data), args.max_batches * args.batch_size)
        print(f"| {path} | {config['model']['backbone']} | {n} | {values[0]:.5f} | {values[1]:.5f} | "
              f"{values[1] - values[0]:+.5f} |", flush=True)


if __name__ == "__main__":
    main()
