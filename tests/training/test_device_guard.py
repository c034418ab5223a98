"""``train.device_guard``: the non-finite guard decided on the device takes the host guard's
decisions, bit for bit (a skipped step changes nothing; the runs end at the same parameters and
optimiser state), and its counters raise the same error at the next read."""

import copy
import json

import pytest
import torch
from conftest import assert_same_checkpoints, nan_on, tiny_mnist_config

from attnflow.config import ConfigError
from attnflow.training import TrainingError, train
from attnflow.training.guard import DeviceGuard


def tiny(steps: int, *extra: str) -> dict:
    return tiny_mnist_config(steps, "train.eval_every=100", *extra)


def _net_and_optimizer(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    return net, torch.optim.Adamax(net.parameters(), lr=1e-2)


def _backward(net, scale: float = 1.0) -> torch.Tensor:
    net.zero_grad(set_to_none=True)
    loss = net(torch.randn(5, 3, generator=torch.Generator().manual_seed(1))).square().sum() * scale
    loss.backward()
    return loss


def _snapshot(net, opt):
    params = [p.detach().clone() for p in net.parameters()]
    state = [{k: v.clone() for k, v in opt.state[p].items()} for p in net.parameters() if p in opt.state]
    return params, state


def _assert_same(a, b):
    for x, y in zip(a[0], b[0]):
        assert torch.equal(x, y)
    assert len(a[1]) == len(b[1])
    for sa, sb in zip(a[1], b[1]):
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_skipped_step_changes_nothing_and_a_taken_one_is_the_plain_step():
    net, opt = _net_and_optimizer()
    guard = DeviceGuard(torch.device("cpu"))
    _backward(net)
    guard.step(opt, torch.tensor(True))  # the first step: decided on the host, creates the state
    assert all(p in opt.state for p in net.parameters())
    before = _snapshot(net, opt)
    loss = _backward(net, float("nan"))  # NaN gradients
    finite = torch.isfinite(loss)
    guard.step(opt, finite)
    guard.record(loss, finite)
    _assert_same(_snapshot(net, opt), before)  # parameters, moments and step counters untouched
    assert guard.read()[0] == 1
    # a finite step is exactly the optimiser's own step
    ref_net, ref_opt = _net_and_optimizer()
    ref_net.load_state_dict(net.state_dict())
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # not sharing the state tensors
    loss = _backward(net)
    _backward(ref_net)
    guard.step(opt, torch.isfinite(loss))
    guard.record(loss, torch.isfinite(loss))
    ref_opt.step()
    _assert_same(_snapshot(net, opt), _snapshot(ref_net, ref_opt))
    bad, running, last, finite = guard.read()
    value = float(loss.detach())
    assert bad == 0 and finite and last == pytest.approx(value) and running == pytest.approx(value)


def test_without_optimiser_state_the_first_step_is_decided_on_the_host():
    net, opt = _net_and_optimizer()
    guard = DeviceGuard(torch.device("cpu"))
    before = _snapshot(net, opt)
    _backward(net, float("nan"))
    guard.step(opt, torch.tensor(False))
    _assert_same(_snapshot(net, opt), before)
    assert not opt.state  # no state was created by the skipped step
    # a new optimiser gets new buffers
    opt2 = torch.optim.Adam(net.parameters(), lr=1e-3)
    _backward(net)
    guard.step(opt2, torch.tensor(True))
    guard.step(opt2, torch.tensor(True))
    # a parameter and Adam's step, exp_avg and exp_avg_sq per parameter
    assert guard._optimizer is opt2 and len(guard._buffers) == 4 * len(list(net.parameters()))


@pytest.mark.parametrize("log_every", [1, 3])
def test_training_with_skipped_steps_ends_where_the_host_guard_does(tmp_path, monkeypatch, log_every):
    runs = {}
    for mode in ("false", "true"):
        nan_on(monkeypatch, {2, 3})
        out = tmp_path / mode
        train(tiny(6, f"train.device_guard={mode}", f"train.log_every={log_every}", "train.checkpoint_every=2"),
              out, progress=False)
        runs[mode] = out
    assert_same_checkpoints(runs["false"] / "checkpoints/last.pt", runs["true"] / "checkpoints/last.pt")
    logs = {}
    for mode, out in runs.items():
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        logs[mode] = [{k: v for k, v in r.items() if k != "time"} for r in rows]
    assert logs["false"] == logs["true"]  # the same steps logged, the same losses and norms
    assert [r["step"] for r in logs["true"] if r["split"] == "train"] == [
        s for s in range(log_every, 7, log_every) if s not in (2, 3)]


def test_persistent_nan_raises_at_the_next_read(tmp_path, monkeypatch):
    nan_on(monkeypatch, set(range(3, 100)))
    with pytest.raises(TrainingError, match=r"non-finite for 6 steps in a row \(read at step 8\)"):
        train(tiny(20, "train.device_guard=true", "train.max_bad_steps=2", "train.log_every=4",
                   "train.checkpoint_every=100"), tmp_path, progress=False)


def test_the_option_must_be_a_bool(tmp_path):
    with pytest.raises(ConfigError, match="train.device_guard must be true or false"):
        train(tiny(2, "train.device_guard=sometimes"), tmp_path, progress=False)
