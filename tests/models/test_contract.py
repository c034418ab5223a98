"""Every model family through the same calls, without knowing which family it is."""

import math

import pytest
import torch
from conftest import TINY_MODELS, tiny_model_config

from attnflow.evaluation import evaluate_bpd
from attnflow.models import TASKS, FlowModel, build_model, dequantization_noise


@pytest.fixture(params=sorted(TINY_MODELS))
def model(request) -> FlowModel:
    torch.manual_seed(0)
    m = build_model(tiny_model_config(request.param)).double()
    m.initialize(m.example_batch(4))
    return m


def test_the_five_calls(model):
    assert isinstance(model, FlowModel) and model.task in TASKS
    assert model.conditional == (model.task != "generation")
    batch = model.example_batch(3)
    x, cond = model.unpack(batch)
    assert x.dtype == torch.float64 and (cond is None) != model.conditional

    log_p = model.log_prob(x, cond)  # 1. log_prob: [B] nats
    assert log_p.shape == (3,) and torch.isfinite(log_p).all()

    torch.manual_seed(1)
    loss = model.objective(batch)  # 2. objective: a scalar that trains the model
    assert loss.shape == () and torch.isfinite(loss)
    torch.manual_seed(1)  # the same dequantisation noise
    torch.testing.assert_close(model(batch), loss, rtol=1e-12, atol=1e-12)  # forward is objective (DDP)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    with dequantization_noise(model, False), torch.no_grad():  # 3. encode / decode: exact
        latents, logdet = model.encode(x, cond)
        assert logdet.shape == (3,)
        assert [tuple(z.shape) for z in latents] == [tuple(s) for s in model.latent_shapes(3, cond)]
        torch.testing.assert_close(model.decode(latents, cond), x, rtol=0, atol=1e-8)

    one = None if cond is None else cond[:1]  # 4. sample: uint8 images of the data shape
    s = model.sample(2, one, temperature=0.5)
    assert s.dtype == torch.uint8 and tuple(s.shape) == (2, *model.data_shape(one))

    with dequantization_noise(model, False), torch.no_grad():  # 5. bits_per_dim of the batch
        bpd = model.bits_per_dim(batch)
        d = x[0].numel()
        expected = -model.log_prob(x, cond) / (d * math.log(2))
    torch.testing.assert_close(bpd, expected, rtol=1e-12, atol=1e-12)
    # ... and evaluation needs nothing but the contract
    assert evaluate_bpd(model, [batch, batch]) == pytest.approx(model.bits_per_dim(batch).detach().mean().item(), rel=0.05)


def test_bad_calls_are_clear_errors(model):
    batch = model.example_batch(2)
    x, cond = model.unpack(batch)
    with pytest.raises(ValueError, match="positive int"):
        model.sample(0, None if cond is None else cond[:1])
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="temperature"):
            model.sample(1, None if cond is None else cond[:1], temperature=bad)
    with pytest.raises(ValueError, match=type(model).__name__):
        model.log_prob(x[:, :, :-2], cond)
    if model.conditional:
        with pytest.raises(ValueError, match="needs"):
            model.log_prob(x, None)
    else:
        with pytest.raises(ValueError, match="unconditional"):
            model.log_prob(x, x)
