"""The CPU's two attention paths side by side: ``scaled_dot_product_attention`` (the fused kernel)
against ``attnflow.nn.head_major_attention``, on bare tensors and inside a model.

    python benchmarks/attention_kernels.py [--shapes 32x4x256x12 32x4x64x12 ...] [--dtype float32]
    python benchmarks/attention_kernels.py --preset mnist-3-2-48-none --batch 32

Kernels: for each ``BxHxLxd`` shape (batch, heads, positions, head width) the two run alternately,
call by call, so that a change of the machine's speed hits both alike. Forward + backward, and the
forward alone, of the same random q, k, v; median ms per call, and the median over the rounds of
each round's ratio head-major / fused.
``pays`` is ``head_major_attention_pays``' verdict for the shape, which is what the Flow++ network
follows.

Model (``--preset``): one model (seed 0, data-dependent initialisation on a random batch), with
``attnflow.nn.HEAD_MAJOR_ATTENTION`` switched on and off alternately: a training step (forward,
backward) and a sampling batch, medians over ``--repeats`` rounds of each, as above.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arprior import _timer_rounds  # noqa: E402  (interleaved rounds)

import attnflow.nn as attn_nn  # noqa: E402
from attnflow.config import apply_overrides, load_preset  # noqa: E402
from attnflow.models import build_model  # noqa: E402

DEFAULT_SHAPES = ["32x4x256x12", "32x4x64x12", "32x4x16x12", "32x4x256x24", "32x1x196x32", "32x1x49x32"]


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median ms per call of each function, the functions called in turn ``repeats`` times
    (``arprior._timer_rounds``), and (key ``"ratio"``) the median over the rounds of the last
    function's time over the first's."""
    times = _timer_rounds(fns, torch.device("cpu"), warmup, repeats)
    first, last = times[next(iter(fns))], times[list(fns)[-1]]
    out = {k: statistics.median(v) for k, v in times.items()}
    out["ratio"] = statistics.median(b / a for a, b in zip(first, last))
    return out


def kernel_row(shape: str, dtype: torch.dtype, repeats: int) -> str:
    b, h, length, d = (int(s) for s in shape.split("x"))
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, h, length, d, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, h, length, d, dtype=dtype)
    # the same numbers, head-major: [B * H, d, L]
    hq, hk, hv = (t.detach().transpose(-1, -2).reshape(b * h, d, length).contiguous().requires_grad_()
                  for t in (q, k, v))
    hgrad = grad.transpose(-1, -2).reshape(b * h, d, length).contiguous()
    train = alternate({
        "fused": lambda: F.scaled_dot_product_attention(q, k, v).backward(grad),
        "head_major": lambda: attn_nn.head_major_attention(hq, hk, hv).backward(hgrad),
    }, repeats)
    with torch.no_grad():
        fwd = alternate({
            "fused": lambda: F.scaled_dot_product_attention(q, k, v),
            "head_major": lambda: attn_nn.head_major_attention(hq, hk, hv),
        }, repeats)
    pays = attn_nn.head_major_attention_pays(b * h, length, d, dtype, torch.device("cpu"))
    return (f"| {shape} | {str(dtype).removeprefix('torch.')} | {train['fused']:.2f} | {train['head_major']:.2f} | "
            f"{train['ratio']:.3f} | {fwd['fused']:.2f} | {fwd['head_major']:.2f} | "
            f"{fwd['ratio']:.3f} | {'yes' if pays else 'no'} |")


def model_rows(preset: str, overrides: list[str], batch: int, repeats: int) -> list[str]:
    torch.manual_seed(0)
    model = build_model(apply_overrides(load_preset(preset), overrides))
    data = model.example_batch(batch, torch.device("cpu"))
    model.initialize(data)

    def switched(on: bool, fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            attn_nn.HEAD_MAJOR_ATTENTION = on
            try:
                return fn()
            finally:
                attn_nn.HEAD_MAJOR_ATTENTION = True
        return run

    def step() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        model.objective(data).backward()

    def sample() -> None:
        model.eval()
        with torch.no_grad():
            torch.manual_seed(1)
            model.sample(batch, model.sample_conditions(data))

    rows = []
    for name, fn in (("training step", step), ("sampling batch", sample)):
        t = alternate({"fused": switched(False, fn), "head_major": switched(True, fn)}, repeats, warmup=1)
        rows.append(f"| {preset} | {batch} | {name} | {t['fused']:.1f} | {t['head_major']:.1f} | "
                    f"{t['ratio']:.3f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="BxHxLxd, e.g. 32x4x256x12")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--preset", help="time a model with and without the head-major path instead")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), alternating call by call, "
          f"median of {args.repeats}")
    print()
    if args.preset:
        print("| preset | batch | what | fused ms | head-major ms | ratio |")
        print("|---|---|---|---|---|---|")
        for row in model_rows(args.preset, args.overrides, args.batch, args.repeats):
            print(row)
        return
    print("| B x H x L x d | dtype | fwd+bwd fused ms | fwd+bwd head-major ms | ratio | fwd fused ms | "
          "fwd head-major ms | ratio | pays |")
    print("|---|---|---|---|---|---|---|---|---|")
    dtype = getattr(torch, args.dtype)
    for shape in args.shapes:
        print(kernel_row(shape, dtype, args.repeats))


if __name__ == "__main__":
    main()
