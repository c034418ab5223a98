"""Does the sr-demo flow gain from an in-run L1 pretraining of its RRDB encoder at equal training time?

Runs ``attnflow train --preset sr-demo`` (single-threaded subprocesses, one at a time) in two ways
per seed:

* ``none``: ``train.pretrain_conditioner_steps: 0`` and ``--flow-steps`` steps of the flow;
* ``pretrain``: ``--pretrain-steps`` L1 steps of the encoder, then as many flow steps as fit into
  the time the ``none`` run of the same seed took (measured: the pretraining and flow step costs
  come from a short calibration run of each), optionally with the reference's freeze of the
  encoder for part of the flow training (``--freeze``);

then ``attnflow evaluate`` at temperature 0.1 (PSNR, SSIM, LR-PSNR on the test split, beside the
bicubic row) and prints one Markdown table. Usage::

    python docs/sr_pretraining.py --out /tmp/sr-pre --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

QUIET = ["--set", "train.eval_every=100000", "--set", "train.checkpoint_every=100000", "--no-progress"]


def run(args: list[str], env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "attnflow.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed: attnflow {' '.join(args)}\n{done.stderr[-3000:]}")
    return done.stdout


def train(out: Path, sets: list[str], env: dict) -> dict:
    if not (out / "checkpoints" / "last.pt").is_file():
        text = run(["train", "--preset", "sr-demo", "--out", str(out), "--overwrite", *QUIET,
                    *[x for s in sets for x in ("--set", s)]], env)
        (out / "summary.json").write_text(text[text.index("{"):])
    return json.loads((out / "summary.json").read_text())


def evaluate(out: Path, env: dict) -> dict:
    if not (out / "eval" / "sr_eval.json").is_file():
        run(["evaluate", str(out / "checkpoints" / "last.pt"), "--temperature", "0.1", "--out", str(out / "eval")], env)
    return json.loads((out / "eval" / "sr_eval.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--flow-steps", type=int, default=1000)
    parser.add_argument("--pretrain-steps", type=int, default=250)
    parser.add_argument("--freeze", type=float, default=0.0, help="train.freeze_conditioner_until of the pretrain runs")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # calibration: the cost of a pretraining step and of a flow step, in the same conditions
    cal = args.out / "calibrate"
    train(cal, [f"train.steps={40 + 40}", "train.pretrain_conditioner_steps=40", "train.log_every=5"], env)
    rows = [json.loads(line) for line in (cal / "metrics.jsonl").read_text().splitlines()]
    pre_rows = [r for r in rows if r["split"] == "train" and "pretrain_l1" in r]
    flow_rows = [r for r in rows if r["split"] == "train" and "bpd" in r]
    pre_cost = (pre_rows[-1]["time"] - pre_rows[0]["time"]) / (pre_rows[-1]["step"] - pre_rows[0]["step"])
    flow_cost = (flow_rows[-1]["time"] - flow_rows[0]["time"]) / (flow_rows[-1]["step"] - flow_rows[0]["step"])
    flow_after = args.flow_steps - round(args.pretrain_steps * pre_cost / flow_cost)
    print(f"step cost: pretraining {pre_cost * 1e3:.0f} ms, flow {flow_cost * 1e3:.0f} ms -> "
          f"{args.pretrain_steps} pretraining + {flow_after} flow steps = {args.flow_steps} flow steps' time",
          file=sys.stderr)
    results: dict[str, list[dict]] = {"none": [], "pretrain": []}
    for seed in args.seeds:
        for name, sets in (
            ("none", [f"train.steps={args.flow_steps}"]),
            ("pretrain", [f"train.steps={args.pretrain_steps + flow_after}",
                          f"train.pretrain_conditioner_steps={args.pretrain_steps}",
                          f"train.freeze_conditioner_until={args.freeze}"]),
        ):
            out = args.out / f"{name}-s{seed}"
            summary = train(out, [*sets, f"train.seed={seed}"], env)
            ev = evaluate(out, env)
            rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
            times = [r["time"] for r in rows if r["split"] == "train"]
            results[name].append({"seed": seed, "psnr": ev["mean"]["psnr"], "lr_psnr": ev["mean"]["lr_psnr"],
                                  "ssim": ev["mean"]["ssim_uniform"], "bpd": summary["test_bpd"],
                                  "bicubic_psnr": ev["bicubic"]["psnr"], "seconds": times[-1] - times[0]})
            print(name, results[name][-1], file=sys.stderr, flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))

    def interval(values: list[float]) -> str:
        """mean [95% t interval] over the seeds."""
        from scipy import stats

        m = statistics.mean(values)
        if len(values) < 2:
            return f"{m:+.3f}"
        half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
        return f"{m:+.3f} [{m - half:+.3f}, {m + half:+.3f}]"

    def mean_sd(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):.2f} ± {sd:.2f}"

    print(f"| sr-demo, {len(args.seeds)} seeds | train s | test bits/dim | PSNR t=0.1 (dB) | SSIM | LR-PSNR (dB) |")
    print("|---|---|---|---|---|---|")
    for name, label in (("none", f"no pretraining, {args.flow_steps} flow steps"),
                        ("pretrain", f"{args.pretrain_steps} L1 + {flow_after} flow steps"
                                     + (f", encoder frozen for {args.freeze:g} of them" if args.freeze else ""))):
        r = results[name]
        print(f"| {label} | {mean_sd([x['seconds'] for x in r])} | {mean_sd([x['bpd'] for x in r])} | "
              f"{mean_sd([x['psnr'] for x in r])} | {mean_sd([x['ssim'] for x in r])} | "
              f"{mean_sd([x['lr_psnr'] for x in r])} |")
    bic = results["none"][0]
    print(f"| bicubic | | | {bic['bicubic_psnr']:.2f} | | |")
    print()
    for key, label in (("psnr", "PSNR (dB)"), ("lr_psnr", "LR-PSNR (dB)"), ("bpd", "test bits/dim")):
        d = [b[key] - a[key] for a, b in zip(results["none"], results["pretrain"])]
        print(f"paired difference (pretrain - none), {label}: {interval(d)}")


if __name__ == "__main__":
    main()
