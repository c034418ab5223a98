"""``attnflow demo`` (``make demo``): train AttnFlow-iMap (mARFlow backbone) on the bundled real MNIST digits on CPU."""

from __future__ import annotations

from pathlib import Path

from .common import device, positive_int

__all__ = ["add_parser", "run_demo"]


def run_demo(
    out: str = "runs/demo", steps: int | None = None, device: str | None = None, overrides=()
) -> int:
    """Train the ``mnist`` preset (iMap at pos3) and report test bits/dim and the output files."""
    from ..config import apply_overrides, load_preset, validate_config
    from ..training import train

    config = apply_overrides(load_preset("mnist"), [*overrides, *([f"train.steps={steps}"] if steps else [])])
    config = validate_config(config)
    m, t = config["model"], config["train"]
    print(
        f"attnflow demo: {m['backbone']} L={m['levels']} K={m['steps']} C={m['hidden']} with "
        f"{m['attention']} attention at {m['position']} on the bundled MNIST digits "
        f"(4,500 train / 500 test), {t['steps']} steps of batch {t['batch_size']} on {device or t['device']}"
    )
    # a previous demo run in the demo's folder is moved aside (never deleted); nothing else is
    overwrite = _previous_demo(Path(out), config)
    summary = train(config, out, device=device, overwrite=overwrite)
    out_path = Path(out)
    samples = sorted((out_path / "samples").glob("*.png"))
    print()
    print(f"test bits/dim      {summary['test_bpd']:.4f}  (best {summary['best_test_bpd']:.4f})")
    print(f"training time      {summary['seconds']:.0f} s for {summary['steps']} steps")
    print(f"checkpoint         {summary['checkpoint']}")
    print(f"sample grids       {', '.join(str(s) for s in samples[-len(t['sample_temperatures']):])}")
    print(f"curves             {summary['curves']}")
    print(f"metrics            {summary['metrics']}  (TensorBoard: {out_path / 'tb'})")
    print(f"next               attnflow sample {summary['checkpoint']} --n 64 --temperature 0.7 --out samples.png")
    return 0


def _previous_demo(out: Path, config: dict) -> bool:
    """Whether ``out`` holds a previous demo run to move aside; a RunDirError if it holds anything
    else (a user's folder, another run, a folder inside a run)."""
    import yaml

    from ..training.rundir import RunDirError, check_can_move_aside

    if not out.is_dir() or not any(p.name != ".lock" for p in out.iterdir()):
        return False
    check_can_move_aside(out)
    stored = yaml.safe_load((out / "config.yaml").read_text())
    if stored.get("name") != config.get("name"):
        raise RunDirError(
            f"attnflow demo: {out} holds another run ({stored.get('name')!r}), not a demo run; "
            f"give the demo another --out"
        )
    return True


def cmd_demo(args) -> int:
    return run_demo(out=args.out, steps=args.steps, device=args.device, overrides=args.overrides)


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train AttnFlow-iMap on the bundled MNIST digits (CPU, minutes)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--device", type=device, help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the mnist preset (repeatable)")
    p.set_defaults(func=cmd_demo)
