"""Forward+backward time of the attention layers against an affine coupling on the same input.

    python benchmarks/layers.py [--device cuda] [--shape 32 12 16 16] [--repeats 50]

Prints one Markdown table. The layers run interleaved, one forward + backward each per round
(coupling, IMap, ..., coupling, IMap, ...), so a machine whose speed drifts slows them alike;
``ratio`` is the median over rounds of the layer's time over the coupling's in the same round,
with its range (goal for iTrans with 4 heads: at most 0.25).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

from attnflow.experiments.timing import time_rounds
from attnflow.layers import AffineCoupling, IMap, ITrans


def fwd_bwd(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """``y, ld = layer(x); (y.sum() + ld.sum()).backward()`` on a fresh leaf copy of ``x``."""

    def run() -> None:
        xi = x.detach().requires_grad_(True)
        y, ld = layer(xi)
        (y.sum() + ld.sum()).backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", type=int, nargs=4, default=[32, 12, 16, 16])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=96, help="affine coupling width")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    b, c, h, w = args.shape
    x = torch.randn(b, c, h, w, device=device)
    layers = {
        f"AffineCoupling (hidden {args.hidden})": AffineCoupling(c, hidden=args.hidden),
        "IMap (spatial)": IMap(c),
        "IMap (channel)": IMap(c, attention="channel"),
        "ITrans (1 head)": ITrans(c, heads=1),
        "ITrans (4 heads)": ITrans(c, heads=4),
    }
    for layer in layers.values():
        layer.to(device)
    times = time_rounds({name: fwd_bwd(layer, x) for name, layer in layers.items()}, device,
                        warmup=args.warmup, repeats=args.repeats)
    base = times[next(iter(layers))]
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"input {tuple(x.shape)} float32 on {device} ({threads} threads), median of {args.repeats} "
          f"interleaved rounds")
    print()
    print("| layer | fwd+bwd ms | ratio to coupling | range |")
    print("|---|---|---|---|")
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, base)]
        print(f"| {name} | {statistics.median(t):.3f} | {statistics.median(ratios):.3f} | "
              f"{min(ratios):.3f}-{max(ratios):.3f} |")


if __name__ == "__main__":
    main()
