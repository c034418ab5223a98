"""SRFlow's pretrained conditioner: the L1-trained ``rrdb`` SR network, loading its weights (ours
or the reference's RRDBNet names) into SRFlow's encoder exactly, and the freeze/delay schedule
(``train.freeze_conditioner_until``, SRFlow's ``train_RRDB_delay``) with an exact resume."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import assert_same_checkpoints, interrupt_after_step

from attnflow.config import DEFAULTS, ConfigError, apply_overrides, load_preset, merge
from attnflow.models import RRDBNet, SRFlow, TrainableModel, build_model
from attnflow.models.rrdb_encoder import RRDBEncoder
from attnflow.models.srflow_weights import map_pretrained_keys
from attnflow.training import TrainingInterrupted, train
from attnflow.training.checkpoint import load_checkpoint, save_checkpoint

ENC = ["model.cond.features=8", "model.cond.blocks=2", "model.cond.growth=4"]
RUN = ["train.batch_size=4", "train.eval_batch_size=4", "train.eval_max_batches=1", "train.n_samples=2",
       "train.log_every=1", "train.warmup_steps=0", "train.eval_every=100", "train.checkpoint_every=100"]
SR_TINY = [*ENC, "model.cond.taps=[0, 1]", "model.steps=1", "model.hidden=8", "model.levels=2",
           "model.cond.unconditional_steps=1", "train.sample_temperatures=[0.5]", *RUN]


def rrdb_config(steps: int, *extra: str) -> dict:
    return apply_overrides(load_preset("sr-demo-rrdb"), [*ENC, *RUN, f"train.steps={steps}", *extra])


def srflow_config(steps: int, *extra: str) -> dict:
    return apply_overrides(load_preset("sr-demo"), [*SR_TINY, f"train.steps={steps}", *extra])


def reference_names(enc: RRDBEncoder) -> dict[str, str]:
    """Our encoder's tensor names -> the reference RRDBNet's (written out independently of the
    loader: conv_first, RRDB_trunk.N.RDBk.convj, trunk_conv, upconvu)."""
    names = {}
    for key in enc.state_dict():
        parts = key.split(".")
        if parts[0] == "blocks":  # blocks.N.dense.K.convs.J.param
            names[key] = f"RRDB_trunk.{parts[1]}.RDB{int(parts[3]) + 1}.conv{int(parts[5]) + 1}.{parts[6]}"
        elif parts[0] == "upconvs":
            names[key] = f"upconv{int(parts[1]) + 1}.{parts[2]}"
        else:
            names[key] = key
    return names


def reference_state(enc: RRDBEncoder, extra_upconvs: int = 1, seed: int = 1) -> dict[str, torch.Tensor]:
    """A synthetic 8x reference RRDBNet state dict for ``enc``'s sizes (random values): the encoder's
    tensors under the reference names, plus the SR head (upconv3 at 8x, HRconv, conv_last)."""
    gen = torch.Generator().manual_seed(seed)
    state = {ref: torch.randn(enc.state_dict()[ours].shape, generator=gen)
             for ours, ref in reference_names(enc).items()}
    nf = enc.features
    for u in range(len(enc.upconvs) + 1, len(enc.upconvs) + 1 + extra_upconvs):
        state[f"upconv{u}.weight"], state[f"upconv{u}.bias"] = torch.randn(nf, nf, 3, 3), torch.randn(nf)
    state["HRconv.weight"], state["HRconv.bias"] = torch.randn(nf, nf, 3, 3), torch.randn(nf)
    state["conv_last.weight"], state["conv_last.bias"] = torch.randn(3, nf, 3, 3), torch.randn(3)
    return state


def tiny_srflow(**kw) -> SRFlow:
    return build_model(srflow_config(2, *(f"model.cond.{k}={v}" for k, v in kw.items())))


# ------------------------------------------------------------------------------------------------
# the rrdb network
# ------------------------------------------------------------------------------------------------


def test_rrdb_is_a_trainable_sr_model_and_reduces_l1():
    model = build_model(rrdb_config(2))
    assert isinstance(model, RRDBNet) and isinstance(model, TrainableModel)
    assert model.task == "super_resolution" and not model.stochastic
    assert len(model.encoder.upconvs) == 3  # 8x: upconv1..3, then hr_conv and conv_last
    hr, lr = model.example_batch(4)
    assert model.super_resolve(lr, samples=2).shape == (4, 2, 3, 64, 64)
    assert model.sample(3, lr[:1]).dtype == torch.uint8
    assert model.evaluation_metric((hr, lr)).shape == (4,)
    hr = torch.nn.functional.interpolate(lr, scale_factor=8, mode="nearest")  # a learnable target
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss = model((hr, lr))  # forward is the L1 objective
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    torch.testing.assert_close(model.objective((hr, lr)), (model.predict(lr) - hr / 255).abs().mean())
    with pytest.raises(ConfigError, match="no attention"):
        build_model(merge(DEFAULTS, {"model": {"backbone": "rrdb", "attention": "imap", "image_shape": [3, 64, 64]}}))
    with pytest.raises(ConfigError, match="unknown key.*taps"):
        build_model(apply_overrides(rrdb_config(2), ["model.cond.taps=[0]"]))


# ------------------------------------------------------------------------------------------------
# loading: both formats, exactly
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_state_dict_loads_exactly_with_the_key_mapping(prefix):
    enc = RRDBEncoder([2, 1, 0, -1], features=8, blocks=2, growth=4, taps=[0, 1])
    ref = reference_state(enc)
    head = enc.load_pretrained_state({prefix + k: v for k, v in ref.items()}, "test")
    assert head == sorted(k for k in ("upconv3.weight", "upconv3.bias", "HRconv.weight",
                                                "HRconv.bias", "conv_last.weight", "conv_last.bias"))
    own = enc.state_dict()
    for ours, name in reference_names(enc).items():
        assert torch.equal(own[ours], ref[name]), ours
    # every encoder tensor is covered by the mapping, one to one
    mapped, _, unexpected, _ = map_pretrained_keys(ref, len(enc.upconvs))
    assert set(mapped) == set(own) and not unexpected


def test_the_full_reference_key_set_of_an_8x_rrdbnet():
    """The names andreas128/SRFlow's RRDBNet (nf=64, nb=8, scale 8) saves, as its __init__ builds them."""
    enc = RRDBEncoder([2, 1, 0, -1])  # the full SRFlow encoder
    names = {"conv_first.weight", "conv_first.bias", "trunk_conv.weight", "trunk_conv.bias",
             "HRconv.weight", "HRconv.bias", "conv_last.weight", "conv_last.bias"}
    names |= {f"upconv{u}.{p}" for u in (1, 2, 3) for p in ("weight", "bias")}
    names |= {f"RRDB_trunk.{n}.RDB{k}.conv{j}.{p}" for n in range(8) for k in (1, 2, 3) for j in range(1, 6)
              for p in ("weight", "bias")}
    assert set(reference_state(enc)) == names
    mapped, head, unexpected, _ = map_pretrained_keys(dict.fromkeys(names, torch.zeros(1)), len(enc.upconvs))
    assert set(mapped) == set(enc.state_dict()) and len(head) == 6 and not unexpected


def test_srflow_loads_a_reference_file_and_an_rrdb_checkpoint(tmp_path):
    model = tiny_srflow()
    ref = reference_state(model.conditioner)
    path = tmp_path / "RRDB_CelebA_8X.pth"
    torch.save(ref, path)
    model.pretrained = str(path)
    assert model.load_pretrained() == [str(path)]
    for ours, name in reference_names(model.conditioner).items():
        assert torch.equal(model.conditioner.state_dict()[ours], ref[name])

    rrdb = build_model(rrdb_config(2))
    ckpt = tmp_path / "rrdb.pt"
    save_checkpoint({"model": rrdb.state_dict(), "config": rrdb_config(2)}, ckpt)
    model = tiny_srflow(pretrained=str(ckpt))
    assert model.pretrained == str(ckpt)
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    model.load_pretrained()
    got = model.conditioner.state_dict()
    for k, v in rrdb.encoder.state_dict().items():
        if not k.startswith("upconvs.2."):
            assert torch.equal(got[k], v), k
    assert set(got) == {k for k in rrdb.encoder.state_dict() if not k.startswith("upconvs.2.")}
    # only the encoder changed
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("conditioner."))
    # building the model (evaluate, resume) reads nothing: the file may be gone
    ckpt.unlink()
    assert isinstance(tiny_srflow(pretrained=str(ckpt)), SRFlow)


def _error(model: SRFlow, state, tmp_path, name="w.pt") -> str:
    path = tmp_path / name
    torch.save(state, path)
    model.pretrained = str(path)
    with pytest.raises(ConfigError) as info:
        model.load_pretrained()
    text = str(info.value)
    assert "\n" not in text and text.startswith("model.cond.pretrained: ")
    return text


def test_mismatched_keys_are_one_line_errors_naming_them(tmp_path):
    model = tiny_srflow()
    ref = reference_state(model.conditioner)
    missing = dict(ref)
    del missing["RRDB_trunk.1.RDB2.conv3.weight"]
    assert "missing 1 (blocks.1.dense.1.convs.2.weight)" in _error(model, missing, tmp_path)
    extra = {**ref, "flowUpsamplerNet.layers.0.weight": torch.zeros(1)}
    assert "unexpected 1 (flowUpsamplerNet.layers.0.weight)" in _error(model, extra, tmp_path)
    wide = reference_state(RRDBEncoder([2, 1], features=16, blocks=2, growth=4, taps=[]))
    assert "of another shape" in _error(model, wide, tmp_path)
    deeper = reference_state(RRDBEncoder([2, 1], features=8, blocks=3, growth=4, taps=[]))
    assert "unexpected 30 (RRDB_trunk.2." in _error(model, deeper, tmp_path)
    # the model is left as it was after a failed load
    assert not torch.equal(model.conditioner.conv_first.weight, ref["conv_first.weight"])


def test_bad_files_are_one_line_errors(tmp_path):
    model = tiny_srflow()
    for path, match in ((tmp_path / "nope.pt", "does not exist"), (tmp_path, "is a directory")):
        model.pretrained = str(path)
        with pytest.raises(ConfigError, match=match):
            model.load_pretrained()
    (tmp_path / "text.pt").write_text("not a weights file")
    model.pretrained = str(tmp_path / "text.pt")
    with pytest.raises(ConfigError, match="could not be read") as info:
        model.load_pretrained()
    assert "\n" not in str(info.value)
    assert "neither an attnflow checkpoint nor a state dict" in _error(model, {"a": 1}, tmp_path)
    flow = {"model": model.state_dict(), "config": srflow_config(2)}
    assert "checkpoint of backbone 'srflow'" in _error(model, flow, tmp_path)
    rrdb4 = apply_overrides(rrdb_config(2), ["model.scale=4", "model.image_shape=[3, 32, 32]"])
    state = {"model": build_model(rrdb4).state_dict(), "config": rrdb4}
    assert "rrdb network for 4x; this SRFlow is 8x" in _error(model, state, tmp_path)
    with pytest.raises(ConfigError, match="path of a weights file or null"):
        tiny_srflow(pretrained=3)


# ------------------------------------------------------------------------------------------------
# the freeze / delay schedule in the training loop
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rrdb_checkpoint(tmp_path_factory):
    """The rrdb network trained 8 steps by the loop (its test metric is the PSNR)."""
    out = tmp_path_factory.mktemp("rrdb") / "run"
    summary = train(rrdb_config(8, "train.eval_every=4"), out, progress=False)
    assert summary["best_test_psnr"] >= summary["test_psnr"] > 0 and "test_bpd" not in summary
    return out / "checkpoints" / "last.pt"


def test_encoder_is_frozen_bit_identical_then_trains(tmp_path, monkeypatch, rrdb_checkpoint):
    import attnflow.training.loop as loop

    saved = []
    original = loop.save_checkpoint

    def record(payload, path):
        if path.name == "last.pt":
            saved.append((payload["step"], {k: v.clone() for k, v in payload["model"].items()
                                            if isinstance(v, torch.Tensor)}))
        return original(payload, path)

    monkeypatch.setattr(loop, "save_checkpoint", record)
    extra = (f"model.cond.pretrained={rrdb_checkpoint}", "train.freeze_conditioner_until=0.5",
             "train.checkpoint_every=1")
    summary = train(srflow_config(4, *extra), tmp_path, progress=False)
    assert summary["pretrained"] == [str(rrdb_checkpoint)] and summary["conditioner_frozen_steps"] == 2
    encoder = {k: v for k, v in load_checkpoint(rrdb_checkpoint)["model"].items()
               if k.startswith("encoder.") and not k.startswith("encoder.upconvs.2.")}
    steps = {}
    for step, state in saved:
        steps[step] = state
    for step in (1, 2):  # frozen: bit-identical to the pretrained encoder
        for k, v in encoder.items():
            assert torch.equal(steps[step]["conditioner." + k[len("encoder."):]], v), (step, k)
    # the flow trained meanwhile, and the encoder trains after the delay
    flow_keys = [k for k in steps[1] if not k.startswith("conditioner.")]
    assert any(not torch.equal(steps[1][k], steps[2][k]) for k in flow_keys)
    changed = [k for k in encoder if not torch.equal(steps[4]["conditioner." + k[len("encoder."):]], encoder[k])]
    assert len(changed) > len(encoder) // 2


@pytest.mark.parametrize("cut", [1, 3])  # stopped while frozen / after the encoder started training
def test_resume_across_the_freeze_boundary_is_exact(tmp_path, monkeypatch, rrdb_checkpoint, cut):
    extra = (f"model.cond.pretrained={rrdb_checkpoint}", "train.freeze_conditioner_until=0.5")
    train(srflow_config(4, *extra), tmp_path / "full", progress=False)
    stop_interrupting = interrupt_after_step(monkeypatch, cut)
    with pytest.raises(TrainingInterrupted, match=f"saved step {cut}"):
        train(srflow_config(4, *extra), tmp_path / "cut", progress=False)
    stop_interrupting()
    os.rename(rrdb_checkpoint, str(rrdb_checkpoint) + ".away")  # a resume does not read it again
    try:
        train(srflow_config(4, *extra), tmp_path / "cut", resume=True, progress=False)
    finally:
        os.rename(str(rrdb_checkpoint) + ".away", rrdb_checkpoint)
    assert_same_checkpoints(tmp_path / "full/checkpoints/last.pt", tmp_path / "cut/checkpoints/last.pt")


def test_freeze_values_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="freeze_conditioner_until must be a fraction"):
        train(srflow_config(2, "train.freeze_conditioner_until=1.5"), tmp_path / "a", progress=False)
    mnist = apply_overrides(load_preset("mnist"), ["train.freeze_conditioner_until=0.5", "model.levels=1",
                                                   "model.hidden=8", "model.blocks=1", "model.steps=1"])
    with pytest.raises(ConfigError, match="no conditioner to freeze"):
        train(mnist, tmp_path / "b", progress=False)
