"""What the commands share: config options, option types, the input collector, checkpoint loading.

Options that mean the same thing are defined once here: ``--temperature`` (one or several values,
each finite and >= 0, none twice), ``--seed`` (default 0), ``--device``, ``--preset/--config/--set``.
The output checks of the commands that write pictures are here too: :func:`check_outputs` refuses,
before any work, two inputs written to one file and (without ``--overwrite``) an existing file.
"""

from __future__ import annotations

import argparse
import io
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..jsonio import json_safe, json_text  # re-exported: the commands print JSON through them

__all__ = [
    "add_config_args",
    "add_temperature_arg",
    "add_seed_arg",
    "add_device_arg",
    "add_sampling_args",
    "resolve",
    "temperature",
    "positive_int",
    "non_negative_int",
    "collect_inputs",
    "check_picture_path",
    "check_outputs",
    "load_task_model",
    "print_json",
    "json_text",
    "json_safe",
    "device",
    "check_data_dir",
    "check_out_folder",
]

_COMMAND_FOR_TASK = {
    "generation": "attnflow sample",
    "super_resolution": "attnflow super-resolve",
    "translation": "attnflow translate",
}
_BACKBONES_FOR_TASK = {"generation": "marflow or glow", "super_resolution": "srflow or rrdb", "translation": "fullglow"}


def temperature(value: str) -> float:
    """argparse type: a finite sampling temperature >= 0."""
    try:
        t = float(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value!r}") from err
    if not math.isfinite(t) or t < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value!r}")
    return t


def _int_at_least(value: str, minimum: int) -> int:
    try:
        n = int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value!r}") from err
    if n < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value!r}")
    return n


def positive_int(value: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(value, 1)


def non_negative_int(value: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(value, 0)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a shipped preset (see `attnflow presets`); default: mnist")
    p.add_argument("--config", help="a YAML config file instead of a preset")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.steps=2 --set train.lr=1e-3 (repeatable)",
    )
    p.add_argument("--data-dir", help="dataset root (sets data.root)")
    p.add_argument("--steps", type=positive_int, help="training steps (sets train.steps)")
    add_device_arg(p)


class _Temperatures(argparse.Action):
    """``--temperature T [T ...]``, repeatable (the values add up); a value given twice is an error:
    it would be sampled twice, written to the same files, or counted twice in a mean."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        temps = [] if current is None or current is self.default else list(current)
        for t in values:
            t = abs(t) if t == 0 else t  # -0 is 0
            if t in temps:
                raise argparse.ArgumentError(self, f"{t} given twice")
            temps.append(t)
        setattr(namespace, self.dest, temps)


def add_temperature_arg(p: argparse.ArgumentParser, default: list[float] | None, what: str) -> None:
    """``--temperature`` (alias ``--temperatures``): one or several distinct values."""
    shown = "per task" if default is None else " ".join(f"{t:g}" for t in default)
    p.add_argument(
        "--temperature", "--temperatures", dest="temperature", type=temperature, nargs="+",
        default=default, metavar="T", action=_Temperatures,
        help=f"{what}: one or several temperatures (std of the latent Gaussians), default {shown}",
    )


def add_seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def device(value: str) -> str:
    """argparse type: a device torch can use on this machine (``cuda`` needs CUDA)."""
    from ..config import ConfigError
    from ..training.distributed import check_device

    try:
        return check_device(value, "")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).strip()) from err


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device, help="cpu, cuda or cuda:N (default: the config's, else cpu)")


def check_data_dir(path: str | Path, dataset: str, option: str = "--data-dir") -> Path:
    """``path`` if it is a non-empty folder that ``dataset`` reads; else a ValueError saying why."""
    from ..data import _NEEDS_ROOT, DATASETS

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{option} {path} does not exist (give the folder holding the {dataset!r} data)")
    if not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder (give the folder holding the {dataset!r} data)")
    if not any(path.iterdir()):
        raise ValueError(f"{option} {path} is an empty folder (give the folder holding the {dataset!r} data)")
    if dataset in DATASETS and dataset not in _NEEDS_ROOT:
        reads = ", ".join(sorted(_NEEDS_ROOT))
        raise ValueError(
            f"{option} {path} given, but dataset {dataset!r} is built in and reads no folder (the "
            f"folder would be ignored); name a dataset that reads it with --set data.name=NAME "
            f"(one of {reads}; mnist-idx for MNIST idx files)"
        )
    return path


def add_sampling_args(
    p: argparse.ArgumentParser, *, checkpoint: str, inputs: tuple[str, str], temperature: float,
    samples: str, out: str,
) -> None:
    """The options of the commands that sample a conditional model for input images
    (``super-resolve``, ``translate``): checkpoint, inputs, temperatures, samples, out, overwrite,
    seed, device."""
    p.add_argument("checkpoint", help=checkpoint)
    p.add_argument(inputs[0], help=inputs[1])
    add_temperature_arg(p, [temperature], "sampling")
    p.add_argument("--samples", type=positive_int, default=4, help=f"{samples} (default 4)")
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist (without it, an existing one stops the run)")
    add_seed_arg(p)
    add_device_arg(p)


def resolve(args: argparse.Namespace, base: dict | None = None) -> dict:
    """The config the options describe, with the backbone's defaults filled in and checked.

    ``base``: a config to apply the options to instead of ``--preset``/``--config`` (a resumed
    run's stored config)."""
    from ..config import apply_overrides, resolve_config, validate_config

    overrides = list(args.overrides)
    if getattr(args, "data_dir", None):
        overrides.append(f"data.root={args.data_dir}")
    if getattr(args, "steps", None):
        overrides.append(f"train.steps={args.steps}")
    if getattr(args, "device", None):
        overrides.append(f"train.device={args.device}")
    if base is not None:
        config = validate_config(apply_overrides(base, overrides))
    else:
        config = resolve_config(args.preset, args.config, overrides)
    if getattr(args, "data_dir", None):
        check_data_dir(args.data_dir, config["data"]["name"])
    return config


def collect_inputs(path: str | Path, what: str, pattern: str | None = None) -> list[tuple[str, Path]]:
    """``(output name, file)`` for an image file, or for every image under a folder (recursive).

    The name of a file is its stem; under a folder, its path relative to the folder without suffix
    (``sub/y`` for ``sub/y.png``: outputs mirror the input tree), with the suffix kept where files
    differ only by it (``x.png`` and ``x.jpg``). ``pattern`` (fnmatch) keeps only matching file names.
    """
    import fnmatch
    from collections import Counter

    from ..data.common import list_images

    path = Path(path)
    if path.is_file():
        return [(path.stem, path)]
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist (give an image or a folder)")
    files = list_images(path, f"{what} folder")
    if pattern:
        files = [f for f in files if fnmatch.fnmatch(f.name, pattern)]
        if not files:
            raise ValueError(f"{what} folder {path}: no image file matches --glob {pattern!r}")
    stems = [f.relative_to(path).with_suffix("").as_posix() for f in files]
    count = Counter(stems)
    return [
        (stem if count[stem] == 1 else f.relative_to(path).as_posix(), f) for stem, f in zip(stems, files)
    ]


def check_picture_path(path: str | Path, modes: Iterable[str] = ("RGB", "L"), option: str = "--out") -> Path:
    """``path`` if Pillow can write a picture there in one of ``modes`` (judged from its suffix, by
    writing a 1x1 picture to memory); else a ValueError, so a bad name fails before any work."""
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a picture file name such as {path / 'samples.png'}")
    if not path.suffix:
        raise ValueError(f"{option} {path} has no suffix; give a picture file name such as {path}.png")
    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    modes = tuple(modes)
    for mode in modes if fmt in Image.SAVE else ():
        try:
            Image.new(mode, (1, 1)).save(io.BytesIO(), format=fmt)
            return path
        except (OSError, ValueError, KeyError):
            continue
    kinds = " or ".join({"RGB": "colour", "L": "grey"}.get(m, m) for m in modes)
    raise ValueError(f"{option} {path}: Pillow cannot write {kinds} pictures as {path.suffix} files (use .png)")


def check_outputs(
    planned: Iterable[tuple[Path, Path | str]], *, overwrite: bool, inputs: Iterable[Path] = (),
) -> list[Path]:
    """The output files of ``planned`` ``(file, the input it comes from)`` pairs, checked before
    any work: two inputs written to one file, a folder (or a file where a folder must be) in the
    way, an existing file without ``overwrite``, or one of ``inputs`` among them is a ValueError
    naming the first such file (and the two inputs, or ``--overwrite``)."""
    sources: dict[str, tuple[Path, Path | str]] = {}
    for path, source in planned:
        key = os.path.normcase(os.path.abspath(path))
        if key in sources:
            raise ValueError(
                f"{sources[key][1]} and {source} would both be written to {path} (rename one of them)"
            )
        sources[key] = (Path(path), source)
    protected = {os.path.normcase(os.path.realpath(p)) for p in inputs}
    folders_ok: set[Path] = set()
    for path, _ in sources.values():
        for parent in path.parents:
            if parent in folders_ok:
                break
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"cannot write {path}: {parent} is a file, not a folder")
                folders_ok.add(parent)
                break
        if not os.path.lexists(path):
            continue
        if path.is_dir():
            raise ValueError(f"cannot write {path}: a folder of that name exists")
        if os.path.normcase(os.path.realpath(path)) in protected:
            raise ValueError(f"{path} would overwrite one of the inputs (give another --out)")
        if not overwrite:
            raise ValueError(f"{path} exists (give --overwrite to replace it and any other existing output)")
    return [path for path, _ in sources.values()]


def load_task_model(checkpoint: str, device: Any, task: str, command: str):
    """``(model, config, state)`` of a checkpoint whose model does ``task``; a clear error if not."""
    from ..training.checkpoint import load_model

    model, config, state = load_model(checkpoint, device)
    if model.task != task:
        raise ValueError(
            f"{checkpoint} is a {model.task.replace('_', '-')} model (backbone "
            f"{config['model']['backbone']!r}); `{command}` needs a {_BACKBONES_FOR_TASK[task]} "
            f"({task.replace('_', '-')}) checkpoint; use `{_COMMAND_FOR_TASK[model.task]}`"
        )
    return model, config, state


def print_json(obj: Any) -> None:
    print(json_text(obj))


def check_out_folder(out: Path, names: tuple[str, ...], overwrite: bool) -> None:
    """Before any work: ``out`` can be the folder of result files ``names`` (fnmatch patterns):
    not a file, and none of them there already unless ``overwrite``."""
    import fnmatch

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; --out takes a folder to write the results into")
    if out.is_dir() and not overwrite:
        for path in sorted(out.iterdir()):
            if any(fnmatch.fnmatch(path.name, pattern) for pattern in names):
                raise ValueError(f"--out {out} already holds {path.name}; pass --overwrite to replace it")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {out}: {parent} is not writable")
