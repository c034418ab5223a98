"""Runs of a comparison trained K at a time, each in a subprocess with ``cores // K`` threads.

A worker is ``python -c "...; child()" SPEC.json``; its output goes to ``OUT/VARIANT/seed_S.log``.
Ctrl-C sends SIGINT to every worker (each saves its last step and stops); on Linux a worker also
gets SIGINT when the comparison dies (``prctl(PR_SET_PDEATHSIG)``), so none trains on unseen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

from ...training import TrainingError
from .runs import run_one

__all__ = ["cores", "run_parallel", "child"]

_CHILD = "from attnflow.experiments.compare.pool import child; child()"


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def child() -> None:
    """Entry of a worker: ``python -c ... SPEC.json`` (threads set by the parent)."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(int(spec["threads"]))
    try:
        run_one(spec, device=spec.get("device"), progress=False)
    except KeyboardInterrupt as err:
        print(f"interrupted: {err}", file=sys.stderr)
        sys.exit(130)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: a worker gets SIGINT (checkpoint at the step boundary, then exit) when compare dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


def _environment(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    package_root = str(Path(__file__).resolve().parents[3])  # the folder holding attnflow/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return env


def _start(spec: dict, jobs_dir: Path, threads: int, device: str | None, env: dict) -> tuple[subprocess.Popen, IO]:
    spec_path = jobs_dir / f"{spec['variant']}-seed_{spec['config']['train']['seed']}.json"
    spec_path.write_text(json.dumps({**spec, "threads": threads, "device": device}))
    Path(spec["dir"]).parent.mkdir(parents=True, exist_ok=True)
    log = open(Path(spec["dir"]).with_suffix(".log"), "a")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(spec_path)], stdout=log, stderr=subprocess.STDOUT,
                            env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    return proc, log


def run_parallel(specs: list[dict], jobs: int, device: str | None, out: Path, say: Callable[[str], None]) -> None:
    """Train every run of ``specs``, ``jobs`` at a time; after a failure no new run starts, the
    running ones finish, and a TrainingError names every failed run, its last line and its log."""
    threads = max(1, cores() // jobs)
    jobs_dir = out / ".jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    env = _environment(threads)
    pending = list(specs)
    running: list[tuple[subprocess.Popen, dict, IO]] = []
    failed: list[str] = []
    say(f"compare: {len(specs)} runs, {jobs} at a time, {threads} thread(s) each")
    try:
        while pending or running:
            while pending and len(running) < jobs and not failed:
                spec = pending.pop(0)
                proc, log = _start(spec, jobs_dir, threads, device, env)
                running.append((proc, spec, log))
                say(f"compare: started {spec['label']} (pid {proc.pid})")
            if failed and not running:
                pending.clear()
            time.sleep(0.2)
            for entry in [e for e in running if e[0].poll() is not None]:
                proc, spec, log = entry
                running.remove(entry)
                log.close()
                if proc.returncode == 0:
                    say(f"compare: finished {spec['label']}")
                else:
                    tail = Path(log.name).read_text().strip().splitlines()[-1:] or ["(no output)"]
                    failed.append(f"{spec['label']} (exit {proc.returncode}: {tail[0]}; log {log.name})")
    except KeyboardInterrupt:
        for proc, _, _ in running:
            proc.send_signal(signal.SIGINT)  # each saves its step and stops
        for proc, _, log in running:
            proc.wait()
            log.close()
        raise
    if failed:
        raise TrainingError("run(s) failed: " + "; ".join(failed))
