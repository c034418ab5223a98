"""``train.autocast``: the conditioner networks under bfloat16 autocast, everything else (log-dets,
mixture CDF, priors) in float32; the loss stays float32, near the float32 loss, and differentiable."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODELS, tiny_model_config

from attnflow.config import ConfigError
from attnflow.models import build_model
from attnflow.nn import network_autocast, run_network
from attnflow.testing import perturb_parameters
from attnflow.training import train


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_bf16_networks_keep_the_loss_float32_and_close(family, monkeypatch):
    torch.manual_seed(0)
    model = build_model(tiny_model_config(family))
    batch = model.example_batch(4)
    model.initialize(batch)
    perturb_parameters(model, 0.02)
    model.eval()
    torch.manual_seed(1)
    exact = model.bits_per_dim(batch)
    seen = []
    original = torch.nn.Conv2d._conv_forward

    def record(self, x, weight, bias):
        out = original(self, x, weight, bias)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", record)
    with network_autocast(torch.bfloat16):
        torch.manual_seed(1)
        low = model.bits_per_dim(batch)
    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", original)
    assert low.dtype == torch.float32 and torch.bfloat16 in seen  # the networks ran in bf16
    assert (low - exact).abs().max() < 0.05 and not torch.equal(low, exact)
    with network_autocast(torch.bfloat16):
        model.train()
        model.objective(batch).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_run_network_is_plain_outside_the_context():
    net = torch.nn.Conv2d(2, 3, 1)
    x = torch.randn(1, 2, 4, 4)
    assert torch.equal(run_network(net, x), net(x))
    with network_autocast(torch.bfloat16):
        out = run_network(net, x)
        assert out.dtype == torch.float32 and not torch.equal(out, net(x))
    with network_autocast(None):
        assert torch.equal(run_network(net, x), net(x))


def test_train_autocast_values_are_checked(tmp_path):
    config = tiny_model_config("glow")
    config["train"].update(autocast="int8")
    with pytest.raises(ConfigError, match="train.autocast must be .bf16., .fp16. or null"):
        train(config, tmp_path / "a", progress=False)
