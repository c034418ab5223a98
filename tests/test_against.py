"""``benchmarks/against.py`` keeps working: its worker logic, the temporary worktree, the round-robin
and the table, on a tiny config for one round against HEAD itself (no command line)."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
    "model.prior_layers=1", "model.steps=1", "model.levels=2",
]


def _against():
    spec = importlib.util.spec_from_file_location("benchmarks_against", ROOT / "benchmarks" / "against.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    proc = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=ROOT, capture_output=True)
    return proc.returncode == 0


@pytest.mark.skipif(not _in_git_checkout(), reason="needs git and a checkout of the repository")
def test_against_head_on_a_tiny_config():
    against = _against()
    before = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    lines = []
    result = against.compare(
        [against.Config("tiny", "mnist", 2, TINY)], base="HEAD", repeats=1, warmup=0, threads=1,
        log=lines.append,
    )
    (row,) = result["rows"]
    for side in ("ours", "base"):
        assert row[f"{side}_train_ms"] > 0 and row[f"{side}_sample_ms"] > 0
    assert row["ours_params_M"] == row["base_params_M"]  # the same model on both sides
    assert row["train_ratio"] == pytest.approx(row["ours_train_ms"] / row["base_train_ms"])
    assert [line.split(":")[0] for line in lines] == ["round 1/1 tiny ours", "round 1/1 tiny base"]
    table = against.format_table(result)
    assert table.count("\n") == 2 and "| tiny | 2 |" in table
    after = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == before  # the temporary worktree is gone


def test_the_worker_measures_in_this_process():
    against = _against()
    answer = against.measure({"preset": "mnist", "overrides": TINY, "batch": 2, "warmup": 0})
    assert answer["train_ms"] > 0 and answer["sample_ms"] > 0 and answer["params_M"] > 0


@pytest.mark.skipif(not _in_git_checkout(), reason="needs git and a checkout of the repository")
def test_ours_only_overrides_reach_this_tree_only():
    """``--set-ours`` (a setting the base may lack) changes our side's config, not the base's."""
    against = _against()
    result = against.compare([against.Config("tiny", "mnist", 2, TINY)], base="HEAD", repeats=1, warmup=0,
                             threads=1, ours_overrides=["model.hidden=12"])
    (row,) = result["rows"]
    assert row["ours_params_M"] > row["base_params_M"]
