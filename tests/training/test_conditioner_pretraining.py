"""``train.pretrain_conditioner_steps``: SRFlow's encoder first trained as a plain L1 SR network
(the ``rrdb`` network around the flow's own encoder) inside the same run, then the flow; its
schedule, checkpoints and an exact ``--resume`` on both sides of the switch."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_same_checkpoints, interrupt_after_step

from attnflow.config import ConfigError, apply_overrides, load_preset
from attnflow.models import RRDBNet, build_model, conditioner_pretraining_network
from attnflow.training import TrainingInterrupted, train
from attnflow.training.checkpoint import load_checkpoint
from attnflow.training.optim import lr_factor, pretraining_lr_factor

ENC = ["model.cond.features=8", "model.cond.blocks=2", "model.cond.growth=4"]
RUN = ["train.batch_size=4", "train.eval_batch_size=4", "train.eval_max_batches=1", "train.n_samples=2",
       "train.log_every=1", "train.warmup_steps=2", "train.eval_every=100", "train.checkpoint_every=100",
       "train.sample_temperatures=[0.5]"]
SR_TINY = [*ENC, "model.cond.taps=[0, 1]", "model.steps=1", "model.hidden=8", "model.levels=2",
           "model.cond.unconditional_steps=1", *RUN]


def config(steps: int, pre: int, *extra: str) -> dict:
    return apply_overrides(load_preset("sr-demo"), [*SR_TINY, f"train.steps={steps}",
                                                    f"train.pretrain_conditioner_steps={pre}", *extra])


def test_the_pretraining_network_is_the_rrdb_sr_network_around_the_flows_encoder():
    flow = build_model(config(4, 2))
    net = conditioner_pretraining_network(flow)
    assert isinstance(net, RRDBNet) and net.encoder is flow.conditioner  # shared, not copied
    assert len(flow.conditioner.upconvs) == 2 and len(net.extra_upconvs) == 1  # 8x: upconv3 is the head's
    # the same network as a stand-alone rrdb of the same sizes (its upconvs.2 is our extra_upconvs.0)
    alone = build_model(apply_overrides(load_preset("sr-demo-rrdb"), ENC))
    state = {}
    for k, v in net.state_dict().items():
        if k.startswith("encoder.") and k.split(".")[1] == "upconvs" or not k.startswith("encoder."):
            k = k.replace("extra_upconvs.0.", "encoder.upconvs.2.")
        state[k] = v
    alone.load_state_dict(state, strict=True)
    hr, lr = alone.example_batch(2)
    torch.testing.assert_close(net.objective((hr, lr)), alone.objective((hr, lr)), rtol=0, atol=0)
    assert conditioner_pretraining_network(build_model(apply_overrides(load_preset("mnist"), ["model.levels=1"]))) is None


def test_lr_schedules_of_the_two_phases():
    t = {"steps": 100, "warmup_steps": 10, "lr_milestones": [0.5, 0.75], "pretrain_conditioner_steps": 0}
    plain = lr_factor(t)
    assert [plain(s) for s in (0, 9, 49, 50, 75)] == [0.1, 1.0, 1.0, 0.5, 0.25]
    t["pretrain_conditioner_steps"] = 20  # the model's run is steps 20..99: warm-up 20..29, halvings at 60, 80
    model = lr_factor(t)
    assert [model(s) for s in (20, 29, 59, 60, 79, 80)] == [0.1, 1.0, 1.0, 0.5, 0.5, 0.25]
    pre = pretraining_lr_factor(t)
    assert [pre(s) for s in (0, 9, 19)] == [0.1, 1.0, 1.0]


def _saved_states(monkeypatch) -> dict[int, dict]:
    import attnflow.training.loop as loop

    saved: dict[int, dict] = {}
    original = loop.save_checkpoint

    def record(payload, path):
        if path.name == "last.pt":
            saved[payload["step"]] = {"model": {k: v.clone() for k, v in payload["model"].items()
                                                if isinstance(v, torch.Tensor)},
                                      "pretraining": "pretraining" in payload}
        return original(payload, path)

    monkeypatch.setattr(loop, "save_checkpoint", record)
    return saved


def test_only_the_encoder_trains_first_then_the_flow_starts_from_it(tmp_path, monkeypatch):
    saved = _saved_states(monkeypatch)
    summary = train(config(6, 3, "train.checkpoint_every=1", "train.eval_every=2"), tmp_path, progress=False)
    assert summary["conditioner_pretraining_steps"] == 3 and summary["steps"] == 6
    encoder = [k for k in saved[1]["model"] if k.startswith("conditioner.")]
    flow = [k for k in saved[1]["model"] if not k.startswith("conditioner.")]
    # steps 1..3: the encoder moves, the flow is untouched (not even initialised until step 3 ends)
    assert all(torch.equal(saved[1]["model"][k], saved[2]["model"][k]) for k in flow)
    assert sum(not torch.equal(saved[1]["model"][k], saved[3]["model"][k]) for k in encoder) > len(encoder) // 2
    # the head and its optimiser are in the checkpoints of the pretraining only
    assert [saved[s]["pretraining"] for s in range(1, 7)] == [True, True, False, False, False, False]
    # at the switch the flow gets its data-dependent init, then it trains
    initialised = [k for k in flow if k.endswith("initialized")]
    assert initialised and all(not saved[2]["model"][k].any() and saved[3]["model"][k].all() for k in initialised)
    assert sum(not torch.equal(saved[3]["model"][k], saved[6]["model"][k]) for k in flow) > len(flow) // 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [("pretrain_l1" in r, "bpd" in r) for r in train_rows] == [(True, False)] * 3 + [(False, True)] * 3
    tests = {r["step"]: r for r in rows if r["split"] == "test"}
    assert "pretrain_psnr" in tests[2] and "bpd" in tests[4] and "bpd" in tests[6]
    assert summary["test_bpd"] == tests[6]["bpd"]
    # the model's checkpoint loads as an ordinary SRFlow (the head is not part of it)
    model = build_model(config(6, 3))
    model.load_state_dict(load_checkpoint(tmp_path / "checkpoints/last.pt")["model"])


def test_the_freeze_schedule_counts_from_the_end_of_the_pretraining(tmp_path, monkeypatch):
    saved = _saved_states(monkeypatch)
    summary = train(config(6, 2, "train.freeze_conditioner_until=0.5", "train.checkpoint_every=1"), tmp_path,
                    progress=False)
    assert summary["conditioner_frozen_steps"] == 2  # steps 2 and 3: int(0.5 * (6 - 2))
    encoder = [k for k in saved[1]["model"] if k.startswith("conditioner.")]
    assert any(not torch.equal(saved[1]["model"][k], saved[2]["model"][k]) for k in encoder)  # pretraining
    assert all(torch.equal(saved[2]["model"][k], saved[4]["model"][k]) for k in encoder)  # frozen
    assert any(not torch.equal(saved[4]["model"][k], saved[6]["model"][k]) for k in encoder)  # trains


@pytest.mark.parametrize("cut", [1, 3])  # stopped during the pretraining / on the step that ends it
def test_resume_across_the_switch_is_exact(tmp_path, monkeypatch, cut):
    train(config(5, 3), tmp_path / "full", progress=False)
    stop_interrupting = interrupt_after_step(monkeypatch, cut)
    with pytest.raises(TrainingInterrupted, match=f"saved step {cut}"):
        train(config(5, 3), tmp_path / "cut", progress=False)
    stop_interrupting()
    assert ("pretraining" in load_checkpoint(tmp_path / "cut/checkpoints/last.pt")) == (cut < 3)
    train(config(5, 3), tmp_path / "cut", resume=True, progress=False)
    assert_same_checkpoints(tmp_path / "full/checkpoints/last.pt", tmp_path / "cut/checkpoints/last.pt")


def test_bad_values_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"pretrain_conditioner_steps \(4\) must be fewer than train.steps \(4\)"):
        train(config(4, 4), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="pretrain_conditioner_steps must be an integer >= 0"):
        train(config(4, -1), tmp_path / "b", progress=False)
    mnist = apply_overrides(load_preset("mnist"), ["train.pretrain_conditioner_steps=1", "model.levels=1",
                                                   "model.hidden=8", "model.blocks=1", "model.steps=1"])
    with pytest.raises(ConfigError, match="no conditioner to pretrain"):
        train(mnist, tmp_path / "c", progress=False)
