"""A run directory is owned by one run.

* :class:`RunLock`: ``OUT/.lock`` (pid, hostname, start time), created atomically with
  ``O_CREAT | O_EXCL``. A second writer is refused with a message naming the holder's pid; the lock
  of a process that no longer runs on this host is taken over with a warning; the lock is removed
  when the run ends, also on errors and interrupts.
* :func:`prepare_run_dir`: without ``resume`` an existing non-empty ``OUT`` is refused (use
  ``--resume`` or ``--overwrite``); with ``overwrite`` the old folder is renamed aside to
  ``OUT.old-YYYYmmdd-HHMMSS`` (never deleted). An ``OUT`` that is a file is an error.
* :func:`stored_config`: the configuration a run stored (its checkpoint's, else ``config.yaml``).
* :func:`resume_config`: the configuration a resumed run goes on with; a setting that differs from
  the stored one is an error naming the key, except :data:`RESUME_SAFE_KEYS` and ``train.steps``
  (which may be raised).
"""

from __future__ import annotations

import copy
import errno
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "RunDirError",
    "RunLock",
    "RESUME_SAFE_KEYS",
    "prepare_run_dir",
    "stored_config",
    "resume_config",
    "remove_stale_temp_files",
    "truncate_metrics",
    "logged_steps",
    "is_run_folder",
    "write_text_atomic",
]

#: settings that may change when a run is resumed (they do not change what is computed)
RESUME_SAFE_KEYS = (
    "train.eval_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.device",
    "train.num_workers",
    "train.eval_max_batches",
    "train.invertible_backprop",  # the same gradients up to rounding, less memory
    "train.device_guard",  # the same skip decisions, taken on the device
)

LOCK_NAME = ".lock"


class RunDirError(ValueError):
    """The output folder cannot be used: another run owns it, it holds a run, or it is a file."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError as err:  # pragma: no cover - other platforms
        return err.errno != errno.ESRCH
    return True


class RunLock:
    """``OUT/.lock`` held by this process while it writes ``OUT`` (a context manager)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.held = False

    def _read(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def acquire(self) -> RunLock:
        host = socket.gethostname()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._handle_existing(host)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return self
        raise RunDirError(f"{self.out}: could not take the lock {self.path} (another run keeps taking it)")

    def _handle_existing(self, host: str) -> None:
        info = self._read()
        if info == {}:  # vanished meanwhile: try again
            return
        if info is None or "pid" not in info:  # being written right now, or garbage
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return
            if age < 10:
                time.sleep(0.2)
                info = self._read()
                if info == {} or (info and "pid" in info):
                    return
                raise RunDirError(f"{self.out} is in use by another run (lock {self.path} is being written)")
            self._take_over(f"an unreadable lock {self.path}")
            return
        pid, other_host = int(info["pid"]), str(info.get("host", ""))
        if other_host == host and not _pid_alive(pid):
            self._take_over(f"a stale lock {self.path} of process {pid}, which no longer runs")
            return
        where = "this host" if other_host == host else f"host {other_host!r}"
        raise RunDirError(
            f"{self.out} is in use by another run: process {pid} on {where} holds {self.path} "
            f"(since {info.get('started', '?')}); wait for it to end or choose another --out "
            f"(if that process is gone, delete {self.path})"
        )

    def _take_over(self, what: str) -> None:
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)  # atomic: of two processes taking over, one wins
        except FileNotFoundError:
            return
        os.unlink(aside)
        warnings.warn(f"{self.out}: took over {what}", RuntimeWarning, stacklevel=3)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        info = self._read()
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _has_content(out: Path) -> bool:
    return any(p.name != LOCK_NAME for p in out.iterdir())


def check_out_path(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a folder; give a folder for the run")


def prepare_run_dir(out: str | Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Create ``out`` if needed, take its lock and apply the new-run / resume / overwrite rules.

    Returns the held :class:`RunLock` (release it when the run ends).
    """
    out = Path(out)
    if resume and overwrite:
        raise RunDirError("give --resume (continue the run) or --overwrite (start afresh), not both")
    check_out_path(out)
    existed = out.is_dir()
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    try:
        if resume or not existed or not _has_content(out):
            return lock
        if not overwrite:
            raise RunDirError(
                f"--out {out} already holds a run; continue it with --resume, or start afresh with "
                f"--overwrite (the old folder is renamed aside, not deleted), or choose another --out"
            )
        check_can_move_aside(out)
        aside = _aside_name(out)
        os.rename(out, aside)  # our lock moves with it
        warnings.warn(f"--overwrite: moved the old run {out} to {aside}", RuntimeWarning, stacklevel=2)
        old_lock = RunLock(aside)
        old_lock.held = True
        out.mkdir(parents=True)
        new_lock = RunLock(out).acquire()
        old_lock.release()
        lock.held = False
        return new_lock
    except BaseException:
        lock.release()
        raise


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds an attnflow run (its ``config.yaml`` is an attnflow config)."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return False
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and all(k in config for k in ("model", "data", "train"))


def check_can_move_aside(out: Path) -> None:
    """``--overwrite`` moves aside only a run folder, and never one inside another run (its
    ``checkpoints/``, say): anything else is the user's and stays where it is."""
    for parent in Path(out).resolve().parents:
        if is_run_folder(parent):
            raise RunDirError(
                f"--overwrite: {out} is inside the run {parent}; moving it aside would break that run. "
                f"Choose an --out outside it"
            )
    if not is_run_folder(out):
        raise RunDirError(
            f"--overwrite: {out} holds files but is not an attnflow run (no run config.yaml); only a run "
            f"folder is moved aside. Choose another --out, or empty {out} yourself"
        )


def _aside_name(out: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = out.with_name(f"{out.name}.old-{stamp}")
    n = 1
    while candidate.exists():
        candidate = out.with_name(f"{out.name}.old-{stamp}-{n}")
        n += 1
    return candidate


def stored_config(out: str | Path) -> tuple[dict, Path] | None:
    """``(config, where)``: the checkpoint's config, else ``config.yaml``'s; None if neither exists."""
    from .checkpoint import load_checkpoint

    out = Path(out)
    last = out / "checkpoints" / "last.pt"
    if last.is_file():
        return load_checkpoint(last)["config"], last
    path = out / "config.yaml"
    if path.is_file():
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise RunDirError(f"--resume: {path} is not valid YAML: {err}".replace("\n", " ")) from err
        if not isinstance(config, dict) or not all(k in config for k in ("model", "data", "train")):
            raise RunDirError(f"--resume: {path} is not an attnflow config")
        return config, path
    return None


def _normal(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def flatten_config(d: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{path}."))
        else:
            flat[path] = _normal(value)
    return flat


def _set(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = copy.deepcopy(value)


def resume_config(given: dict, stored: dict, where: str | Path, step: int) -> dict:
    """The config a resumed run goes on with: ``stored``, with ``given``'s ``train.steps`` (if
    not lower) and safe keys. Any other difference is a :class:`~attnflow.config.ConfigError`."""
    from ..config import ConfigError, validate_config

    stored = validate_config(stored)  # a run stored before a key was added gets its default
    given = validate_config(given)
    a, b = flatten_config(stored), flatten_config(given)
    result = copy.deepcopy(stored)
    problems = []
    for key in sorted(set(a) | set(b), key=lambda k: (k.split(".")[0], k)):
        old, new = a.get(key, "(unset)"), b.get(key, "(unset)")
        if old == new:
            continue
        if key in RESUME_SAFE_KEYS:
            _set(result, key, new)
        elif key == "data.root" and isinstance(old, str) and not Path(old).is_absolute() and new:
            _set(result, key, new)  # a run stored before roots were absolute: the folder given now
        elif key == "train.steps":
            if new < old:
                problems.append(f"train.steps: the run is set to {old} steps, got {new} "
                                f"(on --resume train.steps can only be raised)")
            else:
                _set(result, key, new)
        else:
            problems.append(f"{key}: {old!r} in the run, {new!r} given")
    if problems:
        raise ConfigError(
            f"--resume: the settings differ from those the run was started with ({where}): "
            + "; ".join(problems)
            + ". Only train.steps (raised) and " + ", ".join(RESUME_SAFE_KEYS)
            + " may change on --resume; to train with other settings start a new run "
            "(another --out, or --overwrite)"
        )
    if result["train"]["steps"] < step:  # pragma: no cover - steps never fall below a checkpoint
        raise ConfigError(f"--resume: train.steps={result['train']['steps']} is below the checkpoint's step {step}")
    return result


def remove_stale_temp_files(*folders: Path) -> list[Path]:
    """Delete ``.*.tmp`` files a killed save left behind (call with the run's lock held)."""
    removed = []
    for folder in folders:
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def logged_steps(path: Path) -> int:
    """The last step ``metrics.jsonl`` records (0 without the file or a step)."""
    if not path.is_file():
        return 0
    last = 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            last = max(last, record["step"])
    return last


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of ``metrics.jsonl`` after ``step`` (and a torn last line) before resuming."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(f"{line}\n" for line in kept))
