"""Invertible backpropagation (``train.invertible_backprop``) computes what the ordinary path does.

In float64: the loss is bit-for-bit the same, every parameter's gradient (and the condition's) the
same to 1e-8 relative, the RNG ends in the same state (dropout draws the same masks), and a short
training run ends at the same parameters.
"""

import pytest
import torch
from conftest import TINY_MODELS

from attnflow.config import DEFAULTS, ConfigError, apply_overrides, load_preset, merge
from attnflow.core import zeros_logdet
from attnflow.invertible_backprop import invertible_forward
from attnflow.layers import ConditionalAffineCoupling, InvConv1x1, MixtureLogisticCoupling
from attnflow.models import build_model
from attnflow.testing import perturb_parameters
from attnflow.training import loop, train
from attnflow.training.checkpoint import load_checkpoint

TINY = TINY_MODELS
CASES = {
    "marflow-dropout": ("marflow", dict(dropout=0.3)),
    "glow-imap": ("glow", dict(attention="imap")),
    "glow-itrans": ("glow", dict(attention="itrans")),
    "srflow": ("srflow", dict()),
    "fullglow": ("fullglow", dict()),
}


def _model(backbone: str, extra: dict):
    torch.manual_seed(0)
    model = build_model(merge(DEFAULTS, {"model": {"backbone": backbone, **TINY[backbone], **extra}})).double()
    model.initialize(model.example_batch(4))
    perturb_parameters(model, 0.05)  # off the zero-initialised outputs: every path (and cond) matters
    return model.train()


def _grads(model, batch, invertible: bool, seed: int = 1):
    model.set_invertible_backprop(invertible)
    x, cond = model.unpack(batch)
    inputs = [p for p in model.parameters() if p.requires_grad]
    if cond is not None:
        cond = cond.clone().requires_grad_(True)
        inputs.append(cond)
    torch.manual_seed(seed)
    loss = model((x, cond) if cond is not None else x)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return loss.detach(), grads, torch.get_rng_state(), loss.grad_fn


def _node_names(fn) -> set[str]:
    seen, todo, names = set(), [fn], set()
    while todo:
        f = todo.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        names.add(type(f).__name__)
        todo += [g for g, _ in f.next_functions]
    return names


def assert_same_grads(ga, gb):
    scale = max(float(g.abs().max()) for g in ga if g is not None)
    assert len(ga) == len(gb)
    for a, b in zip(ga, gb):
        assert (a is None) == (b is None)
        if a is not None:  # absolute floor: gradients that are analytically zero (a softmax's key bias)
            torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-12 * scale)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_equal_the_ordinary_path(case):
    model = _model(*CASES[case])
    batch = model.example_batch(3)
    loss_a, ga, rng_a, _ = _grads(model, batch, False)
    loss_b, gb, rng_b, fn = _grads(model, batch, True)
    assert "_InvertibleStepsBackward" in _node_names(fn)  # the option took effect
    assert torch.equal(loss_a, loss_b)  # the same value, bit for bit
    assert torch.equal(rng_a, rng_b)  # the same random numbers were drawn
    assert_same_grads(ga, gb)
    if model.conditional:  # the condition's gradient (RRDB features, source activations) arrives
        assert ga[-1] is not None and ga[-1].abs().sum() > 0


def test_float32_marflow_recomputes_in_backward():
    """A float32 mARFlow (32 images, its Flow++ attention in the fused kernel): invertible backprop
    re-runs each step inside backward and gets the ordinary gradients to float32 rounding."""
    torch.manual_seed(0)
    config = merge(DEFAULTS, {"model": {"backbone": "marflow", **TINY["marflow"], "image_shape": [1, 12, 12]}})
    model = build_model(config)
    model.initialize(model.example_batch(4))
    perturb_parameters(model, 0.05)
    model.train()
    batch = model.example_batch(32)
    loss_a, ga, _, _ = _grads(model, batch, False)
    loss_b, gb, _, fn = _grads(model, batch, True)
    assert "_InvertibleStepsBackward" in _node_names(fn)
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=0)
    scale = max(float(g.abs().max()) for g in ga if g is not None)
    for a, b in zip(ga, gb):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5 * scale)


def test_no_grad_and_eval_paths_are_untouched():
    model = _model("srflow", {}).set_invertible_backprop(True)
    batch = model.example_batch(2)
    torch.manual_seed(3)
    with torch.no_grad():
        a = model.log_prob(*model.unpack(batch))
    model.set_invertible_backprop(False)
    torch.manual_seed(3)
    with torch.no_grad():
        b = model.log_prob(*model.unpack(batch))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dropout_masks_are_replayed_and_conditions_get_gradients():
    """The primitive on its own: a dropout coupling, a 1x1 conv and a conditional coupling, with a
    condition shared by two layers and one of its own."""
    torch.manual_seed(0)
    layers = [
        MixtureLogisticCoupling(4, hidden=8, components=3, blocks=1, heads=2, dropout=0.5),
        InvConv1x1(4),
        ConditionalAffineCoupling(4, 3, hidden=8),
        ConditionalAffineCoupling(4, 3, hidden=8),
    ]
    for layer in layers:
        layer.double().train()
        for p in layer.parameters():  # off the zero initialisation, so every path matters
            p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    c1 = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    c2 = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    conds = [None, None, c1, c2]
    params = [p for layer in layers for p in layer.parameters()]

    def run(invertible: bool, seed: int = 5):
        torch.manual_seed(seed)
        if invertible:
            y, ld = invertible_forward([[(layers[0], None), (layers[1], None)], [(layers[2], c1), (layers[3], c2)]],
                                       x, zeros_logdet(x))
        else:
            y, ld = x, zeros_logdet(x)
            for layer, c in zip(layers, conds):
                y, d = layer(y, c)
                ld = ld + d
        loss = (y.square().sum() + ld.sum()) / 10
        return loss.detach(), torch.autograd.grad(loss, [x, c1, c2, *params])

    (loss_a, ga), (loss_b, gb) = run(False), run(True)
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-14, atol=0)
    assert_same_grads(ga, gb)
    # other dropout masks give other gradients: the masks were replayed
    assert not torch.allclose(run(False, seed=6)[1][0], ga[0])


TRAIN = [
    "model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
    "model.prior_layers=1", "model.steps=2", "model.levels=2", "model.dropout=0.2",
    "train.batch_size=4", "train.eval_batch_size=50", "train.eval_max_batches=1", "train.n_samples=2",
    "train.sample_temperatures=[0.7]", "train.warmup_steps=1", "train.steps=3", "train.eval_every=3",
    "train.checkpoint_every=3", "train.lr=1e-3",
]


def test_training_reaches_the_same_parameters(tmp_path, monkeypatch):
    """Three training steps (mARFlow with iMap and dropout, float64) with and without the option."""
    monkeypatch.setattr(loop, "build_model", lambda config: build_model(config).double())
    states = []
    for flag in ("false", "true"):
        cfg = apply_overrides(load_preset("mnist"), [*TRAIN, f"train.invertible_backprop={flag}"])
        train(cfg, tmp_path / flag, progress=False)
        states.append(load_checkpoint(tmp_path / flag / "checkpoints" / "last.pt")["model"])
    plain, inv = states
    assert plain.keys() == inv.keys()
    weights = [v for v in plain.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert weights[0].dtype == torch.float64  # the run was in float64
    for key, value in plain.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(inv[key], value, rtol=1e-9, atol=1e-12)

def test_the_option_must_be_a_bool(tmp_path):
    cfg = apply_overrides(load_preset("mnist"), [*TRAIN, "train.invertible_backprop=1"])
    with pytest.raises(ConfigError, match="invertible_backprop"):
        train(cfg, tmp_path / "run", progress=False)
