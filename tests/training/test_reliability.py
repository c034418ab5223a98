"""A run is never lost or silently mixed: one writer per run folder, exact resume after Ctrl-C or a
kill, best.pt only ever improves, the non-finite guard protects checkpoints, metrics stay clean."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_MNIST, interrupt_after_step, nan_on, tiny_mnist_config

from attnflow.config import ConfigError
from attnflow.training import RunDirError, TrainingError, TrainingInterrupted, train
from attnflow.training.checkpoint import load_checkpoint, save_checkpoint
from attnflow.training.rundir import RunLock

ROOT = Path(__file__).resolve().parents[2]

TINY = [*TINY_MNIST, "train.log_every=1"]


def tiny(steps: int, *extra: str) -> dict:
    return tiny_mnist_config(steps, "train.log_every=1", *extra)


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


def same_params(a: Path, b: Path) -> None:
    pa, pb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert pa.keys() == pb.keys()
    for k in pa:
        assert equal(pa[k], pb[k]), k


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------
# 1. one run per folder
# ------------------------------------------------------------------------------------------------


def test_lock_refuses_a_second_writer_and_is_released(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(RunDirError, match=f"in use by another run: process {holder.pid}"):
            train(tiny(2), out, progress=False)
        assert not (out / "config.yaml").exists()  # nothing touched
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone now: its lock is stale and taken over with a warning
    with pytest.warns(RuntimeWarning, match="stale lock"):
        train(tiny(2), out, progress=False)
    assert not (out / ".lock").exists()  # released at the end


def test_lock_is_released_on_errors(tmp_path, monkeypatch):
    from attnflow.models.multiscale import MultiScaleFlow

    monkeypatch.setattr(MultiScaleFlow, "forward", lambda self, batch: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        train(tiny(2), tmp_path / "run", progress=False)
    assert not (tmp_path / "run/.lock").exists()


def test_lock_of_another_host_is_respected(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(RunDirError, match="process 1 on host 'elsewhere'"):
        RunLock(out).acquire()


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path):
    out = tmp_path / "run"
    train(tiny(2), out, progress=False)
    with pytest.raises(RunDirError, match="already holds a run.*--resume.*--overwrite"):
        train(tiny(2), out, progress=False)


def test_overwrite_renames_the_old_run_aside(tmp_path):
    out = tmp_path / "run"
    train(tiny(2, "train.lr=0.01"), out, progress=False)
    old_params = load_checkpoint(out / "checkpoints/last.pt")["model"]
    with pytest.warns(RuntimeWarning, match="moved the old run"):
        train(tiny(3), out, overwrite=True, progress=False)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and len(aside[0].name) == len("run.old-YYYYmmdd-HHMMSS")
    kept = load_checkpoint(aside[0] / "checkpoints/last.pt")
    assert kept["step"] == 2 and equal(kept["model"], old_params)
    assert load_checkpoint(out / "checkpoints/last.pt")["step"] == 3
    assert [r["step"] for r in records(out) if r["split"] == "train"] == [1, 2, 3]  # fresh metrics
    assert not (out / ".lock").exists() and not (aside[0] / ".lock").exists()


def test_out_that_is_a_file_is_an_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        train(tiny(2), path, progress=False)


def test_resume_and_overwrite_together_is_an_error(tmp_path):
    with pytest.raises(RunDirError, match="not both"):
        train(tiny(2), tmp_path, resume=True, overwrite=True, progress=False)


# ------------------------------------------------------------------------------------------------
# 2. resume uses the stored configuration
# ------------------------------------------------------------------------------------------------


def test_resume_refuses_changed_settings_naming_them(tmp_path):
    train(tiny(2), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"model\.hidden: 8 in the run, 16 given.*train\.lr"):
        train(tiny(4, "model.hidden=16", "train.lr=0.01"), tmp_path, resume=True, progress=False)
    with pytest.raises(ConfigError, match="train.steps can only be raised"):
        train(tiny(1), tmp_path, resume=True, progress=False)
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 2


def test_resume_allows_safe_keys_and_more_steps(tmp_path):
    extra = ("train.eval_every=100", "train.checkpoint_every=100")
    train(tiny(6, *extra), tmp_path / "full", progress=False)
    train(tiny(3, *extra), tmp_path / "split", progress=False)
    train(tiny(6, "train.eval_every=2", "train.checkpoint_every=2", "train.log_every=3",
               "train.eval_max_batches=2", "train.num_workers=0", "train.device=cpu"),
          tmp_path / "split", resume=True, progress=False)
    same_params(tmp_path / "full/checkpoints/last.pt", tmp_path / "split/checkpoints/last.pt")
    stored = yaml.safe_load((tmp_path / "split/config.yaml").read_text())
    assert stored["train"]["steps"] == 6 and stored["train"]["eval_every"] == 2
    assert load_checkpoint(tmp_path / "split/checkpoints/last.pt")["config"] == stored


def _crash_after_items(monkeypatch, dataset_cls, n: int) -> None:
    """The dataset's item ``n + 1`` raises, as a crash in the middle of a run would."""
    original = dataset_cls.__getitem__
    calls = {"n": 0}

    def failing(self, i):
        calls["n"] += 1
        if calls["n"] == n + 1:
            raise RuntimeError("crash")
        return original(self, i)

    monkeypatch.setattr(dataset_cls, "__getitem__", failing)


def test_resume_without_a_checkpoint_starts_from_the_stored_config(tmp_path, monkeypatch):
    from attnflow.data.bundled import BundledMNIST

    extra = ("train.eval_every=100", "train.checkpoint_every=100")
    train(tiny(4, *extra), tmp_path / "full", progress=False)
    _crash_after_items(monkeypatch, BundledMNIST, 8)  # the init batch, then a crash in step 1
    with pytest.raises(RuntimeError, match="crash"):
        train(tiny(4, *extra), tmp_path / "cut", progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "cut/checkpoints/last.pt").exists() and (tmp_path / "cut/config.yaml").is_file()
    train(tiny(4, *extra), tmp_path / "cut", resume=True, progress=False)
    same_params(tmp_path / "full/checkpoints/last.pt", tmp_path / "cut/checkpoints/last.pt")
    assert [r["step"] for r in records(tmp_path / "cut") if r["split"] == "train"] == [1, 2, 3, 4]


def test_resume_without_a_checkpoint_refuses_to_drop_logged_steps(tmp_path, monkeypatch):
    from attnflow.data.bundled import BundledMNIST

    extra = ("train.eval_every=100", "train.checkpoint_every=100")
    _crash_after_items(monkeypatch, BundledMNIST, 8 + 8)  # init batch, one step, then a crash in step 2
    with pytest.raises(RuntimeError, match="crash"):
        train(tiny(4, *extra), tmp_path / "cut", progress=False)
    monkeypatch.undo()
    logged = (tmp_path / "cut/metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match=r"up to step 1, but .*last.pt is missing"):
        train(tiny(4, *extra), tmp_path / "cut", resume=True, progress=False)
    assert (tmp_path / "cut/metrics.jsonl").read_text() == logged


def test_resume_of_nothing_is_an_error(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        train(tiny(2), tmp_path / "missing", resume=True, progress=False)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(RunDirError, match="no run to resume"):
        train(tiny(2), tmp_path, resume=True, progress=False)


def test_cli_resume_keeps_the_stored_steps_and_settings(tmp_path):
    from attnflow.cli import main

    out = tmp_path / "run"
    sets = [a for kv in TINY for a in ("--set", kv)]
    assert main(["train", "--out", str(out), "--steps", "3", "--no-progress", *sets,
                 "--set", "train.checkpoint_every=2", "--set", "train.eval_every=100"]) == 0
    state = load_checkpoint(out / "checkpoints/last.pt")
    assert state["step"] == 3 and state["config"]["train"]["steps"] == 3
    # --resume without --preset/--steps: the run's own settings and length (not the preset's 2000)
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoints/last.pt")["step"] == 3
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["steps"] == 3
    assert main(["train", "--resume", "--out", str(out), "--no-progress", "--steps", "5"]) == 0
    assert load_checkpoint(out / "checkpoints/last.pt")["step"] == 5
    # a preset given with --resume is compared in full
    assert main(["train", "--resume", "--preset", "mnist", "--out", str(out), "--no-progress"]) == 2


# ------------------------------------------------------------------------------------------------
# 3. best.pt only improves
# ------------------------------------------------------------------------------------------------


def test_last_pt_stores_the_updated_best(tmp_path, monkeypatch):
    import attnflow.training.loop as loop

    values = iter([3.0, 2.0, 2.5, 2.2])
    monkeypatch.setattr(loop, "evaluate_metric", lambda *a, **k: next(values))
    extra = ("train.eval_every=1", "train.checkpoint_every=1")
    train(tiny(2, *extra), tmp_path, progress=False)
    last = load_checkpoint(tmp_path / "checkpoints/last.pt")
    best = load_checkpoint(tmp_path / "checkpoints/best.pt")
    assert last["best_test_bpd"] == 2.0 and best["step"] == 2 and best["best_test_bpd"] == 2.0
    train(tiny(4, *extra), tmp_path, resume=True, progress=False)  # 2.5 then 2.2: both worse
    best = load_checkpoint(tmp_path / "checkpoints/best.pt")
    assert best["step"] == 2 and best["best_test_bpd"] == 2.0
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["best_test_bpd"] == 2.0


def test_final_checkpoint_is_saved_before_the_final_evaluation(tmp_path, monkeypatch):
    import attnflow.training.loop as loop

    def broken(*a, **k):
        raise RuntimeError("evaluation crashed")

    monkeypatch.setattr(loop, "evaluate_metric", broken)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        train(tiny(3, "train.eval_every=100", "train.checkpoint_every=100"), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 3


# ------------------------------------------------------------------------------------------------
# 4. Ctrl-C and kills
# ------------------------------------------------------------------------------------------------

_SCRIPT = """
import sys
from attnflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_args(out: Path, steps: int) -> list[str]:
    sets = [a for kv in TINY for a in ("--set", kv)]
    return ["train", "--out", str(out), "--steps", str(steps), "--no-progress", *sets,
            "--set", "train.eval_every=100", "--set", "train.checkpoint_every=3"]


def _start(out: Path, steps: int, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, *_cli_args(out, steps), *extra], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until_training(proc: subprocess.Popen, out: Path, timeout: float = 60) -> None:
    t0 = time.time()
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.01)


STEPS = 40


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted CLI run of STEPS steps."""
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _start(out, STEPS)
    assert proc.wait(timeout=120) == 0, proc.communicate()
    return out


def test_ctrl_c_stops_at_a_step_boundary_and_resume_is_exact(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(out, STEPS)
    _wait_until_training(proc, out)
    time.sleep(random.uniform(0, 0.15))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("attnflow train:")]
    assert len(lines) == 1 and "interrupted: saved step" in lines[0] and "--resume" in lines[0], stderr
    assert "Traceback" not in stderr
    cut = load_checkpoint(out / "checkpoints/last.pt")["step"]
    assert 1 <= cut < STEPS
    assert not (out / ".lock").exists()
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _SCRIPT, "train", "--resume", "--out", str(out), "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    same_params(reference / "checkpoints/last.pt", out / "checkpoints/last.pt")
    steps = [r["step"] for r in records(out) if r["split"] == "train"]
    assert steps == list(range(1, STEPS + 1))  # no duplicate and no missing step


def test_sigkill_then_resume_is_exact(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(out, STEPS)
    _wait_until_training(proc, out)
    t0 = time.time()  # a kill before the first checkpoint leaves nothing to resume from (refused)
    while not (out / "checkpoints" / "last.pt").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 60
        time.sleep(0.01)
    time.sleep(random.uniform(0.02, 0.15))
    proc.kill()
    proc.communicate(timeout=60)
    assert (out / ".lock").exists()  # left behind by the killed process
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints/.last.pt.abc123.tmp").write_bytes(b"torn")  # a save cut short
    with pytest.warns(RuntimeWarning, match="stale lock"):
        train(tiny(STEPS, "train.eval_every=100", "train.checkpoint_every=3"), out, resume=True, progress=False)
    same_params(reference / "checkpoints/last.pt", out / "checkpoints/last.pt")
    assert not list((out / "checkpoints").glob(".*.tmp"))
    steps = [r["step"] for r in records(out) if r["split"] == "train"]
    assert steps == list(range(1, STEPS + 1))


def test_in_process_interrupt_flag_saves_and_raises(tmp_path, monkeypatch):
    """The first Ctrl-C only sets a flag: the step finishes, a checkpoint is written."""
    extra = ("train.eval_every=100", "train.checkpoint_every=100")
    train(tiny(5, *extra), tmp_path / "full", progress=False)
    stop_interrupting = interrupt_after_step(monkeypatch, 2)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted, match="saved step 2"):
        train(tiny(5, *extra), tmp_path / "cut", progress=False)
    assert signal.getsignal(signal.SIGINT) is before  # restored
    stop_interrupting()
    train(tiny(5, *extra), tmp_path / "cut", resume=True, progress=False)
    same_params(tmp_path / "full/checkpoints/last.pt", tmp_path / "cut/checkpoints/last.pt")


def test_second_ctrl_c_stops_at_once_keeping_the_last_checkpoint(tmp_path, monkeypatch):
    interrupt_after_step(monkeypatch, 4, times=2)
    with pytest.raises(TrainingInterrupted, match=r"stopped at once at step 4; the last good checkpoint .* \(step 3\)"):
        train(tiny(6, "train.eval_every=100", "train.checkpoint_every=3"), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 3


# ------------------------------------------------------------------------------------------------
# 5. the non-finite guard protects checkpoints; stale temp files; metrics
# ------------------------------------------------------------------------------------------------


_nan_on = nan_on


def test_no_checkpoint_after_a_skipped_step(tmp_path, monkeypatch):
    import attnflow.training.loop as loop

    saved = []
    original = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda state, path: (saved.append((state["step"], path.name)), original(state, path))[1])
    _nan_on(monkeypatch, {2})
    train(tiny(4, "train.eval_every=100", "train.checkpoint_every=2"), tmp_path, progress=False)
    # step 2 was skipped: its checkpoint is deferred to step 3; step 4 is saved before and after
    # the final evaluation (a first evaluation: a new best)
    assert saved == [(3, "last.pt"), (4, "last.pt"), (4, "best.pt"), (4, "last.pt")]
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert state["step"] == 4 and state["bad_steps"] == 0


_DDP_NAN_SCRIPT = """
import sys
import torch
from attnflow.models.multiscale import MultiScaleFlow
original, calls = MultiScaleFlow.forward, []
def forward(self, batch):  # the loss of the second training step is NaN on every process
    out = original(self, batch)
    if self.training and torch.is_grad_enabled():
        calls.append(1)
        return out * float("nan") if len(calls) == 2 else out
    return out
MultiScaleFlow.forward = forward
from attnflow.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ddp_defers_a_skipped_checkpoint_on_every_process(tmp_path):
    """torchrun, two gloo processes: step 2 is skipped where a checkpoint is due, so the checkpoint
    is deferred to step 3, by every process alike: the main process saves it, the others meet it at
    the barrier after the save (else the main process would wait there for ever)."""
    script = tmp_path / "nan_at_step_2.py"
    script.write_text(_DDP_NAN_SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), *_cli_args(tmp_path / "run", 4),
         "--set", "train.checkpoint_every=2"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 4
    assert [r["step"] for r in records(tmp_path / "run") if r["split"] == "train"] == [1, 3, 4]


def test_skipped_final_step_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _nan_on(monkeypatch, {4})
    with pytest.warns(RuntimeWarning, match=r"last good checkpoint .* \(step 2\)"):
        summary = train(tiny(4, "train.eval_every=100", "train.checkpoint_every=2"), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 2
    assert summary["checkpoint_step"] == 2


def test_persistent_nan_names_the_last_good_checkpoint(tmp_path, monkeypatch):
    _nan_on(monkeypatch, set(range(3, 100)))
    with pytest.raises(TrainingError, match=r"the last good checkpoint is .*last\.pt \(step 2\)"):
        train(tiny(10, "train.max_bad_steps=2", "train.checkpoint_every=1", "train.eval_every=100"),
              tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert state["step"] == 2


def test_non_finite_parameters_are_never_saved(tmp_path, monkeypatch):
    original = torch.optim.Adamax.step
    calls = {"n": 0}

    def poisoning_step(self, *a, **k):
        out = original(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.Adamax, "step", poisoning_step)
    with pytest.warns(RuntimeWarning, match=r"\(step 2\)"):
        train(tiny(4, "train.eval_every=100", "train.checkpoint_every=1"), tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if isinstance(v, torch.Tensor) and v.is_floating_point())


def test_stale_temp_files_are_removed(tmp_path):
    out = tmp_path / "run"
    train(tiny(2), out, progress=False)
    (out / "checkpoints/.last.pt.x1y2.tmp").write_bytes(b"torn")
    (out / ".config.yaml.123.tmp").write_text("torn")
    train(tiny(3), out, resume=True, progress=False)
    assert not list(out.rglob(".*.tmp"))


def test_metrics_have_no_duplicate_steps_after_resume(tmp_path):
    extra = ("train.checkpoint_every=2", "train.eval_every=2")
    out = tmp_path / "run"
    train(tiny(4, *extra), out, progress=False)
    # as if the run had been killed after writing step 4's lines, with last.pt still at step 2
    train(tiny(2, *extra), tmp_path / "two", progress=False)
    save_checkpoint(load_checkpoint(tmp_path / "two/checkpoints/last.pt"), out / "checkpoints/last.pt")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "split": "tr')  # and a torn last line
    train(tiny(4, *extra), out, resume=True, progress=False)
    rec = records(out)
    assert [r["step"] for r in rec if r["split"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in rec if r["split"] == "test"] == [2, 4]


def test_print_json_writes_valid_json(capsys):
    from attnflow.cli.common import print_json

    print_json({"a": float("nan"), "b": [float("inf"), -math.inf, 1.5], "c": Path("x"), "d": 3})
    out = capsys.readouterr().out
    assert json.loads(out) == {"a": None, "b": [None, None, 1.5], "c": "x", "d": 3}
    assert "NaN" not in out and "Infinity" not in out
