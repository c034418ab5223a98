"""Command line: ``attnflow <command>``."""

from __future__ import annotations

import argparse
import sys


def _demo_layers(args: argparse.Namespace) -> int:
    """Build an AttnFlow step, round-trip a batch, and compare its log-det with the brute force."""
    import torch

    from .core import Sequential, initialize_data_dependent
    from .layers import ActNorm, AffineCoupling, IMap, InvConv1x1, ITrans
    from .testing import brute_force_logdet

    torch.manual_seed(0)
    step = Sequential(
        ActNorm(12), InvConv1x1(12), IMap(12), AffineCoupling(12, hidden=32), ITrans(12, heads=2, parity=1)
    ).double()
    x = torch.randn(4, 12, 8, 8, dtype=torch.float64)
    initialize_data_dependent(step, lambda: step(x))
    step.eval()
    with torch.no_grad():
        y, logdet = step(x)
        x_rec, logdet_inv = step.inverse(y)
    brute = brute_force_logdet(lambda t: step(t)[0], x[:2])
    print("AttnFlow step: actnorm -> 1x1 conv -> iMap -> affine coupling -> iTrans (float64)")
    print(f"round-trip max error     {float((x_rec - x).abs().max()):.2e}")
    print(f"forward + inverse logdet {float((logdet + logdet_inv).abs().max()):.2e}")
    for b in range(2):
        print(f"sample {b}: log-det {float(logdet[b]):.10f}  brute-force slogdet {float(brute[b]):.10f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="demonstrate the invertible attention layers")
    p.set_defaults(func=_demo_layers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
