"""Time the current tree against another commit of this repository: training step and sampling.

    python benchmarks/against.py                                  # against aa4ee21, all cores, 5 rounds
    python benchmarks/against.py --base HEAD~3 --repeats 3 --threads 2
    python benchmarks/against.py --configs marflow-3-2-48 --batch 8 --set model.hidden=16
    python benchmarks/against.py --device cuda
    python benchmarks/against.py --configs srflow-1-1 --set-ours train.autocast=bf16   # a setting the base lacks

The other commit (``--base``, default ``aa4ee21``) is checked out with ``git worktree add --detach``
into a temporary folder, removed afterwards. Each side runs in its own worker subprocess (this file
with ``--worker TREE``) whose tree is first on ``sys.path`` and ``PYTHONPATH``, so ``import attnflow``
there is that side's code (the worker checks it); "ours" is this working tree as it is, uncommitted
changes included. The workers stay up for the whole run and take one request at a time, so the
two sides never run at once.

Configurations (``--configs``; ``--batch`` overrides their batch sizes):

* ``marflow-3-2-48``: mARFlow 3/2/48, preset ``mnist-3-2-48-none``, batch 32;
* ``srflow-1-1``: SRFlow 1/1 (LR 20 -> HR 160 px), preset ``celeba-sr-8x-1-1-none``, batch 8;
* ``srflow-2-8``: SRFlow 2/8, preset ``celeba-sr-8x-2-8-none``, batch 4.

Data is random (the model's ``example_batch`` / the old ``bench_config``'s random batch of the
training shape), so no data set is needed. One measurement is one call of the side's own
``bench_config`` (``attnflow.experiments.bench`` now, ``attnflow.training.bench`` in commits such as
``1262b44``, ``attnflow.bench`` in older ones such as ``aa4ee21``) with one timed training step (forward, backward, clipping, Adamax step) after
``--warmup`` untimed ones, and one timed sampling batch after one untimed. The rounds are
interleaved round-robin: for every round and configuration, ours then theirs; the table shows the
median per side over ``--repeats`` rounds, the ratio ours / theirs of those medians (below 1: ours
is faster) and, under "per round", the median and range of the ratios within each round (the two
sides of a round run back to back, so these see the same phase of a drifting machine).

``--threads`` (default: all cores) sets the torch threads (and ``OMP_NUM_THREADS``) of each worker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "aa4ee21"


@dataclass
class Config:
    """A configuration to time: a preset, ``--set``-style overrides and a batch size."""

    name: str
    preset: str
    batch: int
    overrides: list[str] = field(default_factory=list)


CONFIGS = {
    "marflow-3-2-48": Config("marflow-3-2-48", "mnist-3-2-48-none", 32),
    "srflow-1-1": Config("srflow-1-1", "celeba-sr-8x-1-1-none", 8),
    "srflow-2-8": Config("srflow-2-8", "celeba-sr-8x-2-8-none", 4),
}


# ------------------------------------------------------------------------------------------------
# the worker: runs in a subprocess whose attnflow is one side's tree
# ------------------------------------------------------------------------------------------------


def _bench_function():
    """The side's ``bench_config``: the current layout first, then the older ones. A module counts
    only if its file is in this side's tree: an editable install of the other tree would otherwise
    supply the modules this tree lacks."""
    import importlib

    import attnflow

    tree = Path(attnflow.__file__).resolve().parent
    for module, path in (("attnflow.experiments.bench", "experiments/bench.py"),
                         ("attnflow.training.bench", "training/bench.py"), ("attnflow.bench", "bench.py")):
        if (tree / path).is_file():
            return importlib.import_module(module).bench_config
    raise ImportError(f"{tree} has no experiments/bench.py, training/bench.py or bench.py")


def _load_config(preset: str, overrides: Sequence[str]) -> dict:
    from attnflow.config import apply_overrides, load_preset  # the same names in old and new trees

    config = load_preset(preset)
    return apply_overrides(config, list(overrides)) if overrides else config


def measure(request: dict) -> dict:
    """One measurement in this process (the worker's attnflow): one timed training step after
    ``warmup`` untimed ones, and one timed sampling batch after one untimed."""
    config = _load_config(request["preset"], request.get("overrides", []))
    row = _bench_function()(
        config, batch_size=int(request["batch"]), device=request.get("device", "cpu"),
        repeats=1, warmup=int(request.get("warmup", 1)), sample=bool(request.get("sample", True)),
    )
    return {key: row[key] for key in ("train_ms", "sample_ms", "params_M") if key in row}


def worker(tree: str, threads: int | None) -> int:
    """Serve measurements: one JSON request per stdin line, one JSON answer per stdout line."""
    tree = str(Path(tree).resolve())
    sys.path.insert(0, tree)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the library prints must not break the protocol
    import torch

    if threads:
        torch.set_num_threads(threads)
    import attnflow

    where = str(Path(attnflow.__file__).resolve())
    if not where.startswith(tree + os.sep):
        print(json.dumps({"error": f"attnflow imported from {where}, not from {tree}"}), file=out, flush=True)
        return 1
    ready = {"ready": True, "attnflow": where, "torch": torch.__version__, "threads": torch.get_num_threads()}
    print(json.dumps(ready), file=out, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = measure(json.loads(line))
        except Exception as err:  # noqa: BLE001 - reported to the parent, which stops
            answer = {"error": f"{type(err).__name__}: {err}"}
        print(json.dumps(answer), file=out, flush=True)
    return 0


# ------------------------------------------------------------------------------------------------
# the parent: worktree, workers, round-robin, table
# ------------------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


@contextlib.contextmanager
def checkout(commit: str, repo: Path = ROOT) -> Iterator[tuple[Path, str]]:
    """``(folder, full hash)`` of ``commit`` checked out in a temporary worktree, removed after."""
    sha = _git("rev-parse", "--verify", f"{commit}^{{commit}}", cwd=repo)
    parent = Path(tempfile.mkdtemp(prefix="attnflow-against-"))
    folder = parent / sha[:12]
    _git("worktree", "add", "--detach", str(folder), sha, cwd=repo)
    try:
        yield folder, sha
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=repo, capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)


class Worker:
    """A worker subprocess for one tree; :meth:`ask` sends one request and waits for its answer."""

    def __init__(self, tree: Path, threads: int, label: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
        self.label = label
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(tree),
        )
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.label} worker stopped (exit code {self.proc.wait()}); see its stderr above")
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"the {self.label} worker: {answer['error']}")
        return answer

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def compare(
    configs: Sequence[Config],
    *,
    base: str = DEFAULT_BASE,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    device: str = "cpu",
    ours: Path = ROOT,
    ours_overrides: Sequence[str] = (),
    log=None,
) -> dict:
    """Round-robin timing of ``configs`` in ``ours`` and in ``base``; returns rows and run info."""
    if not threads:  # all cores this process may use
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    samples = {(c.name, side): {"train_ms": [], "sample_ms": []} for c in configs for side in ("ours", "base")}
    params = {}
    with checkout(base, ours) as (theirs, sha):
        workers = {}
        try:
            workers["ours"] = Worker(ours, threads, "ours")
            workers["base"] = Worker(theirs, threads, f"base ({sha[:8]})")
            for rnd in range(repeats):
                for c in configs:
                    request = {"preset": c.preset, "overrides": c.overrides, "batch": c.batch,
                               "device": device, "warmup": warmup}
                    for side in ("ours", "base"):  # one at a time, never both
                        extra = list(ours_overrides) if side == "ours" else []
                        answer = workers[side].ask({**request, "overrides": [*c.overrides, *extra]})
                        for key in ("train_ms", "sample_ms"):
                            samples[(c.name, side)][key].append(answer[key])
                        params[(c.name, side)] = answer.get("params_M")
                        if log:
                            log(f"round {rnd + 1}/{repeats} {c.name} {side}: train {answer['train_ms']:.1f} ms, "
                                f"sample {answer['sample_ms']:.1f} ms")
        finally:
            for w in workers.values():
                w.close()
        info = {"base": sha, "ours": str(ours), "threads": threads, "device": device, "repeats": repeats,
                "torch": workers["ours"].info["torch"] if "ours" in workers else None}
    rows = []
    for c in configs:
        row = {"config": c.name, "preset": c.preset, "batch": c.batch}
        for side in ("ours", "base"):
            for key, values in samples[(c.name, side)].items():
                row[f"{side}_{key}"] = statistics.median(values)
            row[f"{side}_params_M"] = params[(c.name, side)]
        for key in ("train", "sample"):
            ours_ms, base_ms = (samples[(c.name, side)][f"{key}_ms"] for side in ("ours", "base"))
            row[f"{key}_ratio"] = row[f"ours_{key}_ms"] / row[f"base_{key}_ms"]
            # the two sides of a round ran back to back, so their ratio is less exposed to drift
            row[f"{key}_round_ratios"] = [o / b for o, b in zip(ours_ms, base_ms)]
        rows.append(row)
    return {"rows": rows, **info}


def _per_round(ratios: Sequence[float]) -> str:
    """``median (min-max)`` of the per-round ratios."""
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"


def format_table(result: dict) -> str:
    """One Markdown table: medians per side, the ratio of the medians ours / base, and the median
    (and range) of the ratios within each round."""
    base = result["base"][:8]
    lines = [
        f"| config | batch | train ms ours | train ms {base} | train ours/{base} | per round "
        f"| sample ms ours | sample ms {base} | sample ours/{base} | per round |",
        "|" + "---|" * 10,
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['ours_train_ms']:.1f} | {r['base_train_ms']:.1f} | "
            f"{r['train_ratio']:.3f} | {_per_round(r['train_round_ratios'])} | {r['ours_sample_ms']:.1f} | "
            f"{r['base_sample_ms']:.1f} | {r['sample_ratio']:.3f} | {_per_round(r['sample_round_ratios'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=DEFAULT_BASE, help=f"commit to compare with (default {DEFAULT_BASE})")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, help="batch size of every configuration (default: each its own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every configuration and both sides (repeatable)")
    p.add_argument("--set-ours", dest="ours_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for this tree only, e.g. a setting the base lacks "
                        "(train.autocast=bf16; repeatable)")
    p.add_argument("--repeats", type=int, default=5, help="round-robin rounds (median; default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps per measurement (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--worker", metavar="TREE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    configs = [
        Config(c.name, c.preset, args.batch or c.batch, [*c.overrides, *args.overrides])
        for c in (CONFIGS[name] for name in args.configs)
    ]
    result = compare(configs, base=args.base, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                     device=args.device, ours_overrides=args.ours_overrides,
                     log=lambda text: print(text, file=sys.stderr, flush=True))
    print(
        f"attnflow: this tree vs {result['base'][:12]} ({args.base}), device {result['device']}, "
        f"{result['threads']} thread(s) per side, torch {result['torch']}; median of {result['repeats']} "
        f"round-robin rounds (one training step after {args.warmup} warm-up, one sampling batch after one)"
        + (f"; this tree with {' '.join(args.ours_overrides)}" if args.ours_overrides else "") + "\n"
    )
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
