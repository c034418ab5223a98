"""Command line: ``attnflow train | sample | evaluate | compare | presets | demo | bench``.

Run ``attnflow COMMAND --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a shipped preset (see `attnflow presets`); default: mnist")
    p.add_argument("--config", help="a YAML config file instead of a preset")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.steps=2 --set train.lr=1e-3 (repeatable)",
    )
    p.add_argument("--data-dir", help="dataset root (sets data.root)")
    p.add_argument("--steps", type=int, help="training steps (sets train.steps)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (sets train.device)")


def _resolve(args: argparse.Namespace) -> dict:
    from .config import resolve_config

    overrides = list(args.overrides)
    if getattr(args, "data_dir", None):
        overrides.append(f"data.root={args.data_dir}")
    if getattr(args, "steps", None):
        overrides.append(f"train.steps={args.steps}")
    if getattr(args, "device", None):
        overrides.append(f"train.device={args.device}")
    return resolve_config(args.preset, args.config, overrides)


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    from .config import list_presets, load_preset

    for name in list_presets():
        m = load_preset(name)["model"]
        desc = (
            f"{m['backbone']:8s} {'x'.join(str(v) for v in m['image_shape']):9s} "
            f"L={m['levels']} K={m['steps']} C={m['hidden']} attention={m['attention']}"
        )
        print(f"{name:28s} {desc}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    config = _resolve(args)
    out = args.out or str(Path("runs") / config.get("name", "run"))
    summary = train(config, out, device=args.device, resume=args.resume, progress=not args.no_progress)
    _print_json(summary)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .images import save_grid
    from .train import load_model

    model, config, _ = load_model(args.checkpoint, args.device or "cpu")
    if model.conditioner is not None:
        raise SystemExit(
            "attnflow sample: this checkpoint is a conditional model; use `attnflow super-resolve` "
            "or `attnflow translate`"
        )
    if args.seed is not None:
        torch.manual_seed(args.seed)
    imgs = model.sample(args.n, temperature=args.temperature)
    path = save_grid(imgs, args.out)
    _print_json({"samples": str(path), "n": args.n, "temperature": args.temperature})
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader

    from .train import evaluate_bpd, evaluation_data_config, load_model, make_dataset

    device = torch.device(args.device or "cpu")
    model, config, state = load_model(args.checkpoint, device)
    if config["model"]["backbone"] == "srflow":
        from .sr import evaluate_sr_command

        return evaluate_sr_command(args, model, config, state, device)
    data_cfg = evaluation_data_config(config, args.data, args.data_dir)
    dataset = make_dataset(data_cfg, args.split, config["model"].get("image_shape"))
    if args.seed is not None:
        torch.manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False)
    bpd = evaluate_bpd(model, loader, device, args.max_batches)
    result = {
        "checkpoint": str(args.checkpoint),
        "step": int(state.get("step", 0)),
        "data": data_cfg["name"],
        "split": args.split,
        "images": len(dataset) if args.max_batches is None else min(len(dataset), args.max_batches * args.batch_size),
        "bits_per_dim": bpd,
    }
    if args.fid:
        from .metrics import sample_quality

        result.update(
            sample_quality(model, dataset, inception=args.inception, n=args.fid_samples,
                           temperature=args.temperature, device=device, batch_size=args.batch_size)
        )
    _print_json(result)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    config = _resolve(args)
    out = Path(args.out or Path("runs") / f"compare-{config.get('name', 'run')}")
    result = compare(config, out, attentions=args.attentions, device=args.device, progress=not args.no_progress)
    _print_json(result)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out=args.out, steps=args.steps, device=args.device, overrides=args.overrides)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_config, format_table

    config = _resolve(args)
    rows = [bench_config(config, batch_size=args.batch_size, device=args.device or "cpu",
                         repeats=args.repeats, warmup=args.warmup)]
    print(format_table(rows))
    return 0


# ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnflow",
        description="Normalizing flows with invertible attention (iMap, iTrans): train, sample, evaluate.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("presets", help="list the shipped presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="train a model from a preset or config")
    _add_config_args(p)
    p.add_argument("--out", help="output folder (default runs/PRESET)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a trained unconditional model")
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--out", default="samples.png")
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="test bits/dim (and optionally FID/KID/IS) of a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--data", help="dataset name (default: the training config's)")
    p.add_argument("--data-dir", help="dataset root")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-batches", type=int)
    p.add_argument("--seed", type=int, default=0, help="seed of the dequantisation noise")
    p.add_argument("--fid", action="store_true", help="add FID, KID and Inception Score of samples")
    p.add_argument("--inception", help="Inception weights for --fid (TorchScript file)")
    p.add_argument("--fid-samples", type=int, default=10_000)
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for --fid")
    p.add_argument(
        "--temperatures", type=float, nargs="+",
        help="super-resolution: temperatures to average the metrics over (default 0.1 ... 0.9)",
    )
    p.add_argument("--alexnet", help="super-resolution: AlexNet weights for LPIPS (torchvision IMAGENET1K_V1)")
    p.add_argument("--out", help="super-resolution: also write the table (Markdown) and JSON here")
    p.add_argument("--device")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="train none / imap / itrans on one preset and compare test bits/dim")
    _add_config_args(p)
    p.add_argument("--out", help="output folder")
    p.add_argument("--attentions", nargs="+", default=["none", "imap", "itrans"])
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="train AttnFlow-iMap on the bundled MNIST digits (CPU, minutes)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int)
    p.add_argument("--device")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the mnist preset (repeatable)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="time training steps and sampling of a preset")
    _add_config_args(p)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.set_defaults(func=cmd_bench)

    for extra in _extra_commands():
        extra(sub)
    return parser


def _extra_commands():
    """Commands of the conditional models (super-resolve, translate), when installed."""
    found = []
    for mod, attr in (("attnflow.sr_cli", "add_commands"), ("attnflow.translate_cli", "add_commands")):
        try:
            module = __import__(mod, fromlist=[attr])
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
            continue
        found.append(getattr(module, attr))
    return found


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .train import TrainingError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TrainingError as err:
        print(f"attnflow {args.command}: training stopped: {err}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"attnflow {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"attnflow {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
