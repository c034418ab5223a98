"""``attnflow train``: train a model from a preset or config (``--resume`` continues a run).

A run folder belongs to one run: a second ``attnflow train`` into it is refused while the first
runs, a new run refuses a folder that holds one (``--resume`` continues it, ``--overwrite`` renames
it aside to ``OUT.old-YYYYmmdd-HHMMSS`` and starts afresh). ``--resume`` goes on with the run's
stored settings: without ``--preset``/``--config`` the options given (``--set``, ``--steps``,
``--device`` ...) apply to them; a setting that differs from the run's is an error, except
``--steps`` (raised) and the ones that do not change what is computed (``train.eval_every``,
``checkpoint_every``, ``log_every``, ``device``, ``num_workers``, ``eval_max_batches``).
Ctrl-C stops after the current step and saves a checkpoint (exit status 130); a second Ctrl-C
stops at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_config_args, print_json, resolve

__all__ = ["add_parser"]


def _sets_steps(args: argparse.Namespace) -> bool:
    return bool(args.steps) or any(o.split("=", 1)[0].strip() == "train.steps" for o in args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from ..training import train
    from ..training.rundir import check_out_path, stored_config

    config = resolve(args)
    out = Path(args.out or Path("runs") / config.get("name", "run"))
    if args.resume:
        check_out_path(out)
        stored = stored_config(out) if out.is_dir() else None
        if stored is not None:
            root = stored[0]["data"].get("root")
            if root and not Path(root).is_absolute() and not args.data_dir:
                raise ValueError(
                    f"--resume: the run stores the relative data.root {root!r} (from before roots were "
                    f"stored absolute), which would be read from wherever this command runs; give the "
                    f"folder the run used with --data-dir"
                )
            if not (args.preset or args.config):  # the run's settings, with the options given
                config = resolve(args, base=stored[0])
            if not _sets_steps(args):  # --resume without --steps: the run's own length
                config["train"]["steps"] = stored[0]["train"]["steps"]
    summary = train(config, out, device=args.device, resume=args.resume, overwrite=args.overwrite,
                    progress=not args.no_progress)
    print_json(summary)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a preset or config")
    add_config_args(p)
    p.add_argument("--out", help="output folder (default runs/PRESET)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in OUT (from OUT/checkpoints/last.pt, else from the start "
                           "with OUT/config.yaml)")
    mode.add_argument("--overwrite", action="store_true",
                      help="OUT holds a run: rename it aside to OUT.old-YYYYmmdd-HHMMSS and start afresh")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)
