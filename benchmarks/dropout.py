"""What the place of the coupling network's attention dropout costs: train-step time per variant.

``model.attention_dropout: weights`` drops attention weights (Flow++ / mARFlow); ``output`` drops
the attention output, which keeps the fused attention kernels usable. Both variants are built
once and timed round-robin in this one process (so the ratio holds even on a busy machine),
median over repeats:

    python benchmarks/dropout.py --preset mnist-3-2-48-none --batch 32 --repeats 5
    python benchmarks/dropout.py --preset mnist --set model.dropout=0.2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attnflow.config import apply_overrides, load_preset
from attnflow.models import build_model, complete_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mnist-3-2-48-none")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runs = {}
    for where in ("weights", "output"):
        cfg = complete_config(apply_overrides(load_preset(args.preset), [*args.overrides, f"model.attention_dropout={where}"]))
        torch.manual_seed(0)
        model = build_model(cfg)
        batch = model.example_batch(args.batch)
        model.initialize(batch)
        model.train()
        runs[where] = (model, torch.optim.Adamax(model.parameters(), lr=1e-4), batch, [])

    def step(where: str) -> float:
        model, opt, batch, _ = runs[where]
        t0 = time.perf_counter()
        loss = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for i in range(args.warmup + args.repeats):
        for where in runs:
            dt = step(where)
            if i >= args.warmup:
                runs[where][3].append(dt)
    dropout = load_preset(args.preset)["model"].get("dropout")
    print(f"{args.preset} {' '.join(args.overrides)} (dropout {dropout}), batch {args.batch}, "
          f"{args.threads} thread(s), median of {args.repeats}:")
    print("| attention dropout on | train ms/step | ratio to weights |")
    print("|---|---|---|")
    base = statistics.median(runs["weights"][3])
    for where, (_, _, _, times) in runs.items():
        ms = statistics.median(times)
        print(f"| {where} | {1000 * ms:.1f} | {ms / base:.3f} |")


if __name__ == "__main__":
    main()
