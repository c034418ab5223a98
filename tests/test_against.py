"""``benchmarks/against.py`` keeps working: its worker logic, the temporary worktree, the round-robin
and the table, on a tiny config for one round against HEAD itself (no command line)."""

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
    "model.prior_layers=1", "model.steps=1", "model.levels=2",
]


def _against():
    return load_benchmark("against")


def _in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    proc = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=ROOT, capture_output=True)
    return proc.returncode == 0


@pytest.mark.skipif(not _in_git_checkout(), reason="needs git and a checkout of the repository")
def test_against_head_on_a_tiny_config(monkeypatch):
    against = _against()
    created, checkout = [], against.checkout

    @contextlib.contextmanager
    def remembered(commit, repo):
        with checkout(commit, repo) as (folder, sha):
            created.append(folder)
            yield folder, sha

    monkeypatch.setattr(against, "checkout", remembered)
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
    for key in ("train", "sample"):  # one round: its ratio is the ratio of the medians
        assert row[f"{key}_round_ratios"] == [pytest.approx(row[f"ours_{key}_ms"] / row[f"base_{key}_ms"])]
    assert [line.split(":")[0] for line in lines] == ["round 1/1 tiny ours", "round 1/1 tiny base"]
    table = against.format_table(result)
    assert table.count("\n") == 2 and "| tiny | 2 |" in table
    assert table.splitlines()[0].count("per round") == 2
    assert f"| {row['train_ratio']:.3f} ({row['train_ratio']:.3f}-{row['train_ratio']:.3f}) |" in table
    after = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    (folder,) = created
    assert str(folder) not in after and not folder.exists()  # the temporary worktree is gone


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


def test_the_table_shows_the_per_round_ratios_median_and_range():
    against = _against()
    row = {"config": "c", "batch": 4, "ours_train_ms": 10.0, "base_train_ms": 20.0, "train_ratio": 0.5,
           "train_round_ratios": [0.9, 0.4, 0.6], "ours_sample_ms": 3.0, "base_sample_ms": 4.0,
           "sample_ratio": 0.75, "sample_round_ratios": [0.8, 0.7]}
    line = against.format_table({"base": "0123456789ab", "rows": [row]}).splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["c", "4", "10.0", "20.0", "0.500", "0.600 (0.400-0.900)", "3.0", "4.0", "0.750",
                     "0.750 (0.700-0.800)"]
