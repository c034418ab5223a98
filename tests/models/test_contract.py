"""Every model family through the same calls, without knowing which family it is."""

import math

import pytest
import torch

from attnflow.config import DEFAULTS, merge
from attnflow.evaluation import evaluate_bpd
from attnflow.models import TASKS, FlowModel, build_model, dequantization_noise

TINY = {
    "marflow": dict(image_shape=[1, 8, 8], levels=2, steps=1, hidden=8, components=3, blocks=1,
                    coupling_heads=2, dropout=0.0, prior_hidden=4, prior_layers=1, attention="imap"),
    "glow": dict(image_shape=[3, 8, 8], levels=2, steps=1, hidden=8, prior="gaussian", attention="itrans",
                 heads=2, patches=[4, 4]),
    "srflow": dict(image_shape=[3, 16, 16], scale=4, levels=2, steps=1, hidden=8, attention="imap",
                   cond={"features": 8, "blocks": 2, "growth": 4, "taps": [0, 1]}),
    "fullglow": dict(image_shape=[3, 8, 8], levels=2, steps=1, hidden=8, attention="itrans", heads=2,
                     patches=[4, 1], cond={"cond_hidden": 8, "cond_mlp": [4]}),
}


@pytest.fixture(params=sorted(TINY))
def model(request) -> FlowModel:
    torch.manual_seed(0)
    m = build_model(merge(DEFAULTS, {"model": {"backbone": request.param, **TINY[request.param]}})).double()
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
    assert evaluate_bpd(model, [batch, batch]) == pytest.approx(float(model.bits_per_dim(batch).mean()), rel=0.05)


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
