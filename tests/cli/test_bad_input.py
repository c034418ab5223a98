"""Every bad input is refused before any work starts: exit status 2 and one line
``attnflow CMD: error: ...`` naming the option, the value and what is allowed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnflow.cli import main
from attnflow.config import apply_overrides, load_preset
from attnflow.training import train
from attnflow.training.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY_SETS = [
    "model.levels=1", "model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
    "model.prior_layers=1", "model.steps=1", "train.batch_size=8", "train.eval_batch_size=50",
    "train.eval_max_batches=1", "train.n_samples=4", "train.sample_temperatures=[0.7]",
    "train.warmup_steps=1",
]
TINY = [a for kv in TINY_SETS for a in ("--set", kv)]


def fails(capsys, *argv: str, code: int = 2) -> str:
    """Run ``attnflow ARGV`` in-process; it must exit ``code`` with one line on stderr."""
    assert main(list(argv)) == code
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"attnflow {argv[0]}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(apply_overrides(load_preset("mnist"), [*TINY_SETS, "train.steps=2"]), out, progress=False)
    return out / "checkpoints" / "last.pt"


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("train.batch_size=0", "train.batch_size must be an integer >= 1, got 0"),
        ("train.eval_every=0", "train.eval_every must be an integer >= 1, got 0"),
        ("train.checkpoint_every=-2", "train.checkpoint_every must be an integer >= 1, got -2"),
        ("train.log_every=0", "train.log_every must be an integer >= 1, got 0"),
        ("train.steps=0", "train.steps must be an integer >= 1, got 0"),
        ("train.batch_size=2.5", "train.batch_size must be an integer >= 1, got 2.5"),
        ("model.levels=1.7", "model.levels must be an integer >= 1, got 1.7"),
        ("model.hidden=0", "model.hidden must be an integer >= 1, got 0"),
        ("train.lr=-1", "train.lr must be a finite number > 0, got -1"),
        ("train.eval_max_batches=0", "train.eval_max_batches must be an integer >= 1 or null, got 0"),
    ],
)
def test_bad_config_values(capsys, tmp_path, setting, expected):
    out = tmp_path / "run"
    line = fails(capsys, "train", "--out", str(out), "--no-progress", *TINY, "--set", setting)
    assert expected in line
    assert not out.exists()  # refused before any work


def test_a_section_replaced_by_a_value(capsys, tmp_path):
    line = fails(capsys, "train", "--out", str(tmp_path / "run"), "--set", "train=5")
    assert "'train' is a config section, not a value" in line and "train.KEY=VALUE" in line and "steps" in line


def test_steps_option_must_be_positive(capsys, tmp_path):
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "--steps must be >= 1, got '0'" in err


def test_cuda_device_without_cuda(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (["train", "--out", str(tmp_path / "run")], ["sample", "x.pt"], ["demo"]):
        assert main([*argv, "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [err], err
        assert "--device 'cuda': CUDA is not available on this machine; use cpu" in err
    assert main(["train", "--out", str(tmp_path / "run"), "--device", "gpu"]) == 2
    assert "is not a device; use cpu, cuda or cuda:N" in capsys.readouterr().err


def test_cuda_in_the_config_without_cuda(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    line = fails(capsys, "train", "--out", str(out), *TINY, "--set", "train.device=cuda", "--no-progress")
    assert "train.device 'cuda': CUDA is not available" in line


@pytest.mark.parametrize("dataset", ["mnist", "mnist-idx", "cifar10", "folder", "celeba", "sr-folder",
                                     "cityscapes", "pairs", "celeba-bundled", "synthetic-pairs"])
def test_data_dir_missing_or_empty(capsys, tmp_path, dataset):
    missing = tmp_path / "nope"
    line = fails(capsys, "train", "--out", str(tmp_path / "run"), "--set", f"data.name={dataset}",
                 "--data-dir", str(missing))
    assert f"--data-dir {missing} does not exist" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = fails(capsys, "train", "--out", str(tmp_path / "run"), "--set", f"data.name={dataset}",
                 "--data-dir", str(empty))
    assert f"--data-dir {empty} is an empty folder" in line
    assert not (tmp_path / "run").exists()


def test_data_dir_for_a_built_in_dataset_is_not_silently_ignored(capsys, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(b"\0")
    line = fails(capsys, "train", "--out", str(tmp_path / "run"), "--data-dir", str(folder))
    assert "dataset 'mnist' is built in and reads no folder" in line and "mnist-idx" in line
    file = tmp_path / "file.txt"
    file.write_text("x")
    line = fails(capsys, "train", "--out", str(tmp_path / "run"), "--data-dir", str(file))
    assert "is a file, not a folder" in line


def test_evaluate_data_dir_missing(capsys, tmp_path, checkpoint):
    line = fails(capsys, "evaluate", str(checkpoint), "--data", "mnist-idx", "--data-dir", str(tmp_path / "nope"))
    assert "does not exist" in line


def test_checkpoint_whose_config_does_not_match_its_weights(capsys, tmp_path, checkpoint):
    state = load_checkpoint(checkpoint)
    state["config"]["model"]["hidden"] = 16
    bad = tmp_path / "bad.pt"
    save_checkpoint(state, bad)
    line = fails(capsys, "sample", str(bad), "--n", "1", "--out", str(tmp_path / "s.png"))
    assert "its weights do not fit the model its config describes" in line and "of another shape" in line
    line = fails(capsys, "evaluate", str(bad), "--max-batches", "1")
    assert "do not fit" in line


def test_a_directory_given_as_a_checkpoint(capsys, checkpoint):
    run = checkpoint.parent.parent
    line = fails(capsys, "sample", str(run))
    assert "is a directory, not a checkpoint file" in line and "did you mean" in line and "last.pt" in line
    line = fails(capsys, "evaluate", str(checkpoint.parent))
    assert "is a directory" in line


def test_existing_run_without_resume(capsys, checkpoint):
    run = checkpoint.parent.parent
    line = fails(capsys, "train", "--out", str(run), *TINY, "--no-progress")
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line


def test_resume_with_changed_settings_names_them(capsys, checkpoint):
    run = checkpoint.parent.parent
    line = fails(capsys, "train", "--resume", "--out", str(run), "--set", "model.hidden=16", "--no-progress")
    assert "model.hidden: 8 in the run, 16 given" in line


def test_resume_and_overwrite_are_exclusive(capsys, tmp_path):
    assert main(["train", "--out", str(tmp_path), "--resume", "--overwrite"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_run_folder_in_use(capsys, tmp_path):
    import json
    import socket

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "run"
        out.mkdir()
        (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        line = fails(capsys, "train", "--out", str(out), *TINY, "--no-progress")
        assert f"process {holder.pid}" in line and "in use by another run" in line
    finally:
        holder.kill()
        holder.wait()


def test_debug_shows_the_traceback(tmp_path):
    from attnflow.config import ConfigError

    with pytest.raises(ConfigError, match="train.batch_size"):
        main(["--debug", "train", "--out", str(tmp_path / "run"), "--set", "train.batch_size=0"])


def test_as_a_user_sees_it(tmp_path):
    """Through a real process: exit 2, one line, no traceback."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "attnflow.cli", "train", "--out", str(tmp_path / "run"),
                           "--set", "model.levels=1.7"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "attnflow train: error: model.levels must be an integer >= 1, got 1.7"


def test_a_system_error_is_one_line_not_a_traceback(capsys, tmp_path, monkeypatch):
    """E.g. a full disk while writing: exit 1 and one line (the last good checkpoint stays)."""
    import errno

    import attnflow.cli.presets as presets

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(presets, "cmd_presets", full)  # main() builds its parser after the patch
    assert main(["presets"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "attnflow presets: system error: [Errno 28] No space left on device"
