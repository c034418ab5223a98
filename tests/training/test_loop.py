"""The training loop: it learns, resumes exactly, survives NaNs and interruptions, saves atomically."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from conftest import nan_on

from attnflow.config import apply_overrides, load_preset, validate_config
from attnflow.training import TrainingError, train
from attnflow.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

TINY = [
    "model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
    "model.prior_layers=1", "model.steps=1", "train.batch_size=8", "train.eval_batch_size=50",
    "train.eval_max_batches=1", "train.n_samples=4", "train.sample_temperatures=[0.7]",
    "train.log_every=1", "train.warmup_steps=2",
]


def tiny(steps: int, *extra: str) -> dict:
    return apply_overrides(load_preset("mnist"), [*TINY, f"train.steps={steps}", *extra])


def _params(path) -> dict:
    return load_checkpoint(path)["model"]


def _same(a, b) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_training_lowers_the_loss_and_writes_everything(tmp_path):
    cfg = tiny(30, "train.eval_every=15", "train.checkpoint_every=15", "train.lr=5e-3")
    summary = train(cfg, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_bpd = [r["bpd"] for r in records if r["split"] == "train"]
    test_bpd = [r["bpd"] for r in records if r["split"] == "test"]
    assert len(test_bpd) == 2 and summary["test_bpd"] == test_bpd[-1]
    assert sum(train_bpd[-5:]) / 5 < sum(train_bpd[:5]) / 5 - 0.5  # clearly learning
    assert test_bpd[-1] < test_bpd[0]
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "curves.png", "config.yaml",
                 "samples/step_0000030_t0.70.png"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tb").iterdir())


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    extra = ("train.eval_every=4", "train.checkpoint_every=4")
    train(tiny(8, *extra), tmp_path / "full", progress=False)
    train(tiny(4, *extra), tmp_path / "split", progress=False)
    train(tiny(8, *extra), tmp_path / "split", resume=True, progress=False)
    a, b = _params(tmp_path / "full/checkpoints/last.pt"), _params(tmp_path / "split/checkpoints/last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert _same(a[k], b[k]), k


def test_ctrl_c_keeps_a_good_checkpoint_and_resume_matches(tmp_path, monkeypatch):
    from attnflow.data.bundled import BundledMNIST

    extra = ("train.eval_every=100", "train.checkpoint_every=100")
    train(tiny(6, *extra), tmp_path / "full", progress=False)

    calls = {"n": 0}
    original = BundledMNIST.__getitem__

    def interrupting(self, i):
        calls["n"] += 1
        if calls["n"] == 8 * 4 + 8 + 1:  # init batch (8) + 4 steps of 8, then Ctrl-C in step 5
            raise KeyboardInterrupt
        return original(self, i)

    monkeypatch.setattr(BundledMNIST, "__getitem__", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(6, *extra), tmp_path / "cut", progress=False)
    monkeypatch.setattr(BundledMNIST, "__getitem__", original)
    assert load_checkpoint(tmp_path / "cut/checkpoints/last.pt")["step"] == 4
    train(tiny(6, *extra), tmp_path / "cut", resume=True, progress=False)
    a, b = _params(tmp_path / "full/checkpoints/last.pt"), _params(tmp_path / "cut/checkpoints/last.pt")
    for k in a:
        assert _same(a[k], b[k]), k


_nan_on = nan_on


def test_non_finite_steps_are_skipped(tmp_path, monkeypatch):
    _nan_on(monkeypatch, {3, 4})
    train(tiny(6, "train.eval_every=6", "train.checkpoint_every=6"), tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert state["step"] == 6
    assert all(
        torch.isfinite(v).all()
        for v in state["model"].values()
        if isinstance(v, torch.Tensor) and v.is_floating_point()
    )
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 5, 6]  # 3 and 4 skipped


def test_persistent_nan_stops_with_a_clear_message(tmp_path, monkeypatch):
    _nan_on(monkeypatch, None)
    with pytest.raises(TrainingError, match="non-finite for 4 steps in a row"):
        train(tiny(10, "train.max_bad_steps=3"), tmp_path, progress=False)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/attnflow_pwned",))


def test_checkpoint_loading_never_unpickles_objects(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil(), "config": {}}, f)
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(path)
    assert not os.path.exists("/tmp/attnflow_pwned")


def test_unknown_config_key_is_an_error():
    from attnflow.config import ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'model.stepz'"):
        validate_config(apply_overrides(load_preset("mnist"), ["model.stepz=2"]))


def test_lr_warms_up_then_halves_at_the_milestones():
    from attnflow.training.optim import lr_factor

    factor = lr_factor({"steps": 100, "warmup_steps": 10, "lr_milestones": [0.5, 0.75]})
    assert [factor(s) for s in (0, 9, 49, 50, 74, 75)] == [0.1, 1.0, 1.0, 0.5, 0.5, 0.25]


SR_TINY = ["model.cond.features=8", "model.cond.blocks=2", "model.cond.growth=4", "model.cond.taps=[0, 1]",
           "model.steps=1", "model.hidden=8", "model.levels=2", "model.cond.unconditional_steps=1",
           "train.batch_size=4", "train.eval_batch_size=4", "train.eval_max_batches=1", "train.n_samples=2",
           "train.log_every=1", "train.warmup_steps=2", "train.eval_every=100", "train.sample_temperatures=[0.5]"]


def test_the_conditioner_is_frozen_for_the_first_part_then_trains(tmp_path, monkeypatch):
    """train.freeze_conditioner_until=0.5 of 6 steps: SRFlow's encoder stays as initialised for
    steps 1..3 while the flow trains, then it trains too."""
    import attnflow.training.loop as loop

    saved: dict[int, dict] = {}
    original = loop.save_checkpoint

    def record(payload, path):
        if path.name == "last.pt":
            saved[payload["step"]] = {k: v.clone() for k, v in payload["model"].items() if isinstance(v, torch.Tensor)}
        return original(payload, path)

    monkeypatch.setattr(loop, "save_checkpoint", record)
    config = apply_overrides(load_preset("sr-demo"), [*SR_TINY, "train.steps=6", "train.checkpoint_every=1",
                                                      "train.freeze_conditioner_until=0.5"])
    summary = train(config, tmp_path, progress=False)
    assert summary["conditioner_frozen_steps"] == 3
    encoder = [k for k in saved[1] if k.startswith("conditioner.")]
    flow = [k for k in saved[1] if not k.startswith("conditioner.")]
    assert encoder and all(torch.equal(saved[1][k], saved[3][k]) for k in encoder)  # frozen
    assert any(not torch.equal(saved[1][k], saved[3][k]) for k in flow)  # while the flow trains
    assert sum(not torch.equal(saved[3][k], saved[6][k]) for k in encoder) > len(encoder) // 2  # then it trains


def test_an_old_run_with_the_removed_pretraining_setting_still_loads_and_resumes(tmp_path):
    """``train.pretrain_conditioner_steps`` (the removed in-run pretraining): a stored config that
    holds it switched off loads and resumes; switched on, resuming it is a ConfigError saying how
    to do it with two runs."""
    from attnflow.config import ConfigError
    from attnflow.training.checkpoint import load_model

    extra = ("train.eval_every=100", "train.checkpoint_every=100")
    train(tiny(2, *extra), tmp_path / "old", progress=False)
    last = tmp_path / "old/checkpoints/last.pt"
    state = load_checkpoint(last)
    state["config"]["train"]["pretrain_conditioner_steps"] = 0  # as an old run stored it
    save_checkpoint(state, last)
    model, config, _ = load_model(last)  # what evaluate and sample read
    assert "pretrain_conditioner_steps" not in config["train"]  # dropped when the stored config is read
    summary = train(tiny(3, *extra), tmp_path / "old", resume=True, progress=False)
    assert summary["steps"] == 3 and "pretrain_conditioner_steps" not in load_checkpoint(last)["config"]["train"]
    dropped = validate_config(apply_overrides(load_preset("mnist"), ["train.pretrain_conditioner_steps=0"]))
    assert dropped == validate_config(load_preset("mnist"))
    state = load_checkpoint(last)
    state["config"]["train"]["pretrain_conditioner_steps"] = 250
    save_checkpoint(state, last)
    removed = r"pretrain_conditioner_steps=250: .* removed .* two runs.* model\.cond\.pretrained="
    with pytest.raises(ConfigError, match=removed):
        train(tiny(4, *extra), tmp_path / "old", resume=True, progress=False)
    with pytest.raises(ConfigError, match="pretrain_conditioner_steps=5: .* removed"):
        validate_config(apply_overrides(load_preset("mnist"), ["train.pretrain_conditioner_steps=5"]))
