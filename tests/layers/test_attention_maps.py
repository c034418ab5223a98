"""IMap.attention_map and ITrans.mixing_matrix return what the layers' forward uses; the model-level
maps and their TensorBoard summaries."""

from __future__ import annotations

import pytest
import torch
from conftest import move_layer

from attnflow.config import load_preset
from attnflow.layers import IMap, ITrans
from attnflow.models import attention_maps, attention_summary, build_model
from attnflow.training.logging import log_attention


@pytest.mark.parametrize("attention", ["spatial", "channel"])
@pytest.mark.parametrize("mask", ["spatial_channel", "channel", "random"])
def test_imap_output_is_x_times_a_on_unmasked_entries(attention, mask, device):
    shape = (3, 4, 6, 6)
    layer = move_layer(IMap(4, mask=mask, attention=attention, parity=1, seed=3), shape, device)
    x = torch.randn(shape, dtype=torch.float64, device=device)
    y, _ = layer(x)
    a = layer.attention_map(x)
    assert a.shape == ((3, 1, 6, 6) if attention == "spatial" else (3, 4, 1, 1))
    free = ~layer.mask(6, 6, device).expand_as(x)
    torch.testing.assert_close(y[free], (x * a)[free], rtol=0, atol=0)
    y_again, _ = layer(x)
    assert torch.equal(y, y_again)  # attention_map changes nothing


@pytest.mark.parametrize("mask", ["spatial_channel", "spatial"])
def test_itrans_w_is_the_matrix_forward_mixes_with(mask, device):
    shape = (2, 3, 8, 8)
    layer = move_layer(ITrans(3, heads=2, patches=4, mask=mask, parity=0), shape, device)
    x = torch.randn(shape, dtype=torch.float64, device=device)
    w = layer.mixing_matrix(x)
    assert w.shape == (2, 4, 4)
    scale = torch.exp(layer.log_scale.detach()).to(w.dtype)  # rows sum to the learned scale s
    torch.testing.assert_close(w.sum(-1), torch.full((2, 4), float(scale), dtype=w.dtype, device=device))
    keep, keep_f, free = layer._buffers_for(x)
    xp = layer._to_patches(x)
    torch.testing.assert_close(w, layer.weights(xp * keep_f), rtol=0, atol=0)
    # the unmasked entries of every output patch are W's rows applied to the input patches
    y, logdet = layer(x)
    yp = layer._to_patches(y)
    mixed = torch.einsum("bnm,bmxyc->bnxyc", w, xp)
    torch.testing.assert_close(yp[:, :, ~keep], mixed[:, :, ~keep])
    torch.testing.assert_close(yp[:, :, keep], xp[:, :, keep], rtol=0, atol=0)
    torch.testing.assert_close(logdet, free * torch.linalg.slogdet(w)[1])


def _tiny(kind: str):
    config = load_preset("mnist")
    config["model"].update(attention=kind, levels=2, steps=1, hidden=4, blocks=1, components=2,
                           prior_hidden=4, prior_layers=1)
    return build_model(config)


def test_model_maps_per_layer_and_level_leave_the_rng_alone():
    model = _tiny("itrans")
    batch = torch.randint(0, 256, (3, 1, 28, 28)).float()
    state = torch.get_rng_state()
    maps = attention_maps(model, batch)
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert [(m["level"], m["kind"], tuple(m["map"].shape)) for m in maps] == [
        (0, "itrans", (3, 4, 4)), (1, "itrans", (3, 49, 49))]
    assert attention_maps(_tiny("none"), batch) == []


def test_log_attention_writes_scalars():
    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars[tag] = (value, step)

    writer = Writer()
    data = [torch.randint(0, 256, (1, 28, 28)).float() for _ in range(4)]
    model = _tiny("imap")
    log_attention(writer, model, data, step=7)
    rows = attention_summary(model, torch.stack(data))
    assert writer.scalars == {
        "attention/L0.0-imap/a_mean": (rows[0]["a_mean"], 7), "attention/L0.0-imap/a_std": (rows[0]["a_std"], 7),
        "attention/L1.1-imap/a_mean": (rows[1]["a_mean"], 7), "attention/L1.1-imap/a_std": (rows[1]["a_std"], 7),
    }
