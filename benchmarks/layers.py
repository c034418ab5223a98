"""Forward+backward time of the attention layers against an affine coupling on the same input.

    python benchmarks/layers.py [--device cuda] [--shape 32 12 16 16] [--repeats 50]

Prints one Markdown table; ``ratio`` is the layer's time over the coupling's (goal: <= 0.30).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnflow.layers import AffineCoupling, IMap, ITrans


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(layer: torch.nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median seconds of ``y, ld = layer(x); (y.sum() + ld.sum()).backward()``."""
    times = []
    for i in range(warmup + repeats):
        xi = x.detach().requires_grad_(True)
        sync(x.device)
        t0 = time.perf_counter()
        y, ld = layer(xi)
        (y.sum() + ld.sum()).backward()
        sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


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
    rows = []
    for name, layer in layers.items():
        layer.to(device)
        rows.append((name, time_fwd_bwd(layer, x, args.repeats, args.warmup)))
    base = rows[0][1]
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"input {tuple(x.shape)} float32 on {device} ({threads} threads), median of {args.repeats}")
    print()
    print("| layer | fwd+bwd ms | ratio to coupling |")
    print("|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {1000 * t:.3f} | {t / base:.3f} |")


if __name__ == "__main__":
    main()
