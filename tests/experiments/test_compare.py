"""compare: paired seeds (same data order and noise for every variant), the paired-difference
interval, the table, resume without retraining."""

from __future__ import annotations

import contextlib
import json
import math
import warnings

import pytest
import torch

from attnflow.config import apply_overrides, load_preset
from attnflow.experiments.compare import compare, cross_variants, paired_difference, parse_variant
from attnflow.experiments.compare import runs as runs_module
from attnflow.models import TrainableModel
from attnflow.training import train

TINY = [
    "model.levels=1", "model.hidden=4", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
    "model.prior_layers=1", "model.steps=1", "train.batch_size=8", "train.eval_batch_size=50",
    "train.eval_max_batches=1", "train.n_samples=2", "train.sample_temperatures=[0.7]",
    "train.log_every=1", "train.warmup_steps=1", "train.eval_every=2", "train.steps=2",
]
T_975_DF1 = 12.706204736174698  # Student's t, 0.975 quantile, 1 degree of freedom (tables)


def tiny(*extra: str) -> dict:
    return apply_overrides(load_preset("mnist"), [*TINY, *extra])


def test_paired_difference_by_hand():
    d = paired_difference([3.0, 2.5, 2.9], [2.0, 2.0, 2.0])  # differences 1.0, 0.5, 0.9
    mean = 2.4 / 3
    sd = math.sqrt(((1.0 - mean) ** 2 + (0.5 - mean) ** 2 + (0.9 - mean) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert d["mean"] == pytest.approx(mean) and d["sd"] == pytest.approx(sd)
    assert d["ci"] == pytest.approx([mean - half, mean + half])
    assert paired_difference([1.0], [0.5]) == {"mean": 0.5, "sd": None, "ci": None, "n": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # equal differences: an exact interval of width 0, no warning
        assert paired_difference([2.0, 3.0], [1.0, 2.0]) == {"mean": 1.0, "sd": 0.0, "ci": [1.0, 1.0], "n": 2}


def test_variant_names_and_parsing():
    assert cross_variants([("model.attention", ["none", "imap"]), ("model.heads", [1, 2])]) == [
        ("none-heads1", ["model.attention=none", "model.heads=1"]),
        ("none-heads2", ["model.attention=none", "model.heads=2"]),
        ("imap-heads1", ["model.attention=imap", "model.heads=1"]),
        ("imap-heads2", ["model.attention=imap", "model.heads=2"]),
    ]
    assert parse_variant("t=attention=itrans,patches=[4,49],train.lr=1e-3") == (
        "t", ["model.attention=itrans", "model.patches=[4,49]", "train.lr=1e-3"])
    assert parse_variant("base=") == ("base", [])
    with pytest.raises(ValueError, match="NAME=KEY=VALUE"):
        parse_variant("no-equals")


@contextlib.contextmanager
def _training_inputs():
    """Every training forward of a model records the global RNG state (the dequantisation noise it
    is about to draw) and the batch."""
    seen: list = []

    def hook(module, args):
        if isinstance(module, TrainableModel) and module.training:
            seen.append((torch.get_rng_state().clone(), args[0].clone()))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def test_noise_and_data_do_not_depend_on_the_attention_kind(tmp_path):
    runs = {}
    for kind in ("none", "imap", "itrans"):
        with _training_inputs() as seen:
            train(tiny(f"model.attention={kind}", "model.patches=4"), tmp_path / kind, progress=False)
        runs[kind] = seen
    none = runs["none"]
    assert len(none) == 2
    for kind in ("imap", "itrans"):
        for (rng_a, batch_a), (rng_b, batch_b) in zip(none, runs[kind], strict=True):
            assert torch.equal(batch_a, batch_b) and torch.equal(rng_a, rng_b), kind
    # another seed: another data order and noise
    with _training_inputs() as seen:
        train(tiny("model.attention=none", "train.seed=1"), tmp_path / "seed1", progress=False)
    assert not torch.equal(seen[0][0], none[0][0]) and not torch.equal(seen[0][1], none[0][1])


def test_compare_two_variants_two_seeds(tmp_path, monkeypatch):
    variants = [("none", ["model.attention=none"]), ("imap", ["model.attention=imap"]),
                ("imap_again", ["model.attention=imap"])]
    result = compare(tiny(), tmp_path, variants=variants, baseline="imap", seeds=2, progress=False)
    summary = json.loads((tmp_path / "comparison.json").read_text())
    rows = {r["variant"]: r for r in summary["variants"]}
    assert summary["seeds"] == [0, 1] and summary["baseline"] == "imap" and len(result["results"]) == 3
    # two variants with identical models: identical results, seed by seed
    assert rows["imap_again"]["test_bpd"] == rows["imap"]["test_bpd"]
    assert rows["imap_again"]["diff_to_baseline"]["mean"] == 0.0
    # the interval by hand: two seeds, t with one degree of freedom
    a, b = rows["none"]["test_bpd"], rows["imap"]["test_bpd"]
    d = [a[0] - b[0], a[1] - b[1]]
    mean = (d[0] + d[1]) / 2
    sd = abs(d[0] - d[1]) / math.sqrt(2)
    half = T_975_DF1 * sd / math.sqrt(2)
    got = rows["none"]["diff_to_baseline"]
    assert got["mean"] == pytest.approx(mean) and got["ci"] == pytest.approx([mean - half, mean + half])
    assert rows["none"]["test_bpd_mean"] == pytest.approx(sum(a) / 2)
    assert rows["none"]["test_bpd_sd"] == pytest.approx(abs(a[0] - a[1]) / math.sqrt(2))
    assert rows["imap"]["step_time_ratio"] == pytest.approx(1.0)
    assert rows["none"]["parameters"] < rows["imap"]["parameters"]
    table = (tmp_path / "comparison.md").read_text()
    assert f"| none | {rows['none']['parameters']:,} |" in table and "(baseline)" in table
    assert f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]" in table
    assert (tmp_path / "comparison.png").is_file()
    for name in rows:
        for seed in (0, 1):
            assert (tmp_path / name / f"seed_{seed}.json").is_file()
            assert (tmp_path / name / f"seed_{seed}" / "checkpoints/last.pt").is_file()

    # a rerun of the finished comparison trains nothing and rebuilds the same table
    (tmp_path / "comparison.md").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runs_module, "train", no_training)
    compare(tiny(), tmp_path, variants=variants, baseline="imap", seeds=2, progress=False)
    assert (tmp_path / "comparison.md").read_text() == table


def test_unfinished_runs_are_resumed(tmp_path, monkeypatch):
    """A run folder without its result (a compare killed mid-run) is continued, exactly."""
    from conftest import interrupt_after_step

    from attnflow.training import TrainingInterrupted

    settings = ("model.attention=none", "train.checkpoint_every=2", "name=mnist-none", "train.steps=4")
    full = tmp_path / "full"
    train(tiny(*settings), full, progress=False)
    split = tmp_path / "split"
    stop_interrupting = interrupt_after_step(monkeypatch, 2)
    with pytest.raises(TrainingInterrupted):  # Ctrl-C after 2 of 4 steps
        train(tiny(*settings), split / "none" / "seed_0", progress=False)
    stop_interrupting()
    compare(tiny("train.steps=4", "train.checkpoint_every=2"), split, variants=[("none", ["model.attention=none"])],
            progress=False)
    a = torch.load(full / "checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(split / "none/seed_0/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
    assert json.loads((split / "none/seed_0.json").read_text())["steps"] == 4


def test_bad_baseline_and_duplicate_names(tmp_path):
    with pytest.raises(ValueError, match="--baseline 'x' is not a variant"):
        compare(tiny(), tmp_path, variants=[("a", [])], baseline="x", progress=False)
    with pytest.raises(ValueError, match="a given twice"):
        compare(tiny(), tmp_path, variants=[("a", []), ("a", [])], progress=False)
