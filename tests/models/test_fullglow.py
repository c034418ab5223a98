"""Full-Glow / cAttnFlow for label-to-photo translation: layers, whole model, data, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import move_layer
from PIL import Image

from attnflow.config import DEFAULTS, ConfigError, load_preset, merge
from attnflow.core import initialize_data_dependent
from attnflow.data import get_dataset, write_synthetic_pairs
from attnflow.images import CITYSCAPES_COLORS, label_colors
from attnflow.layers.conditional import (
    ConditionalActNorm,
    ConditionalInvConv1x1,
    CondNetAffineCoupling,
    CondVectorNet,
)
from attnflow.layers.conv import lu_weight
from attnflow.models import FullGlow, build_model, dequantization_noise
from attnflow.testing import FlowCheckError, check_flow, check_model, perturb_parameters

F64 = torch.float64


# ------------------------------------------------------------------------------------------------
# conditional layers
# ------------------------------------------------------------------------------------------------

COND_CH = 3
SHAPES = [(2, 4, 4, 4), (3, 5, 2, 6)]
LAYERS = {
    "actnorm-flatten": lambda s: ConditionalActNorm(s[1], COND_CH, size=s[2:], hidden=(6, 5)),
    "actnorm-pool": lambda s: ConditionalActNorm(s[1], COND_CH, grid=2, hidden=(6,)),
    "invconv-flatten": lambda s: ConditionalInvConv1x1(s[1], COND_CH, size=s[2:], hidden=(6, 5)),
    "invconv-pool": lambda s: ConditionalInvConv1x1(s[1], COND_CH, grid=1, hidden=(4,)),
    "coupling": lambda s: CondNetAffineCoupling(s[1], COND_CH, hidden=8, cond_hidden=6),
}


def _moved(name, shape, device, seed=0):
    torch.manual_seed(seed)
    cond = torch.randn(shape[0], COND_CH, *shape[2:], dtype=F64, device=device)
    return move_layer(LAYERS[name](shape), shape, device, cond, seed=seed), cond


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(LAYERS))
def test_conditional_layers_pass_the_brute_force_checker(name, shape, device):
    layer, cond = _moved(name, shape, device)
    check_flow(layer, shape, cond=cond, device=device, factory=lambda: LAYERS[name](shape))


@pytest.mark.parametrize("name", list(LAYERS))
def test_conditional_layers_depend_on_the_condition_per_sample(name, device):
    """Output and log-det change with ``cond``; actnorm / 1x1 conv log-dets differ per sample."""
    shape = SHAPES[0]
    layer, cond = _moved(name, shape, device)
    x = torch.randn(shape, dtype=F64, device=device)
    with torch.no_grad():
        y1, ld1 = layer(x, cond)
        y2, ld2 = layer(x, cond + torch.randn_like(cond))
        _, ld_same = layer(x[:1].expand(shape[0], *shape[1:]), cond)
    assert (y1 - y2).abs().max() > 1e-6
    assert (ld1 - ld2).abs().max() > 1e-9
    assert (ld_same[0] - ld_same[1]).abs() > 1e-9  # same input, different conditions


def test_conditional_layers_start_as_their_unconditional_counterparts():
    layer = ConditionalInvConv1x1(4, COND_CH, size=(3, 3)).double()
    x = torch.randn(2, 4, 3, 3, dtype=F64)
    y, ld = layer(x, torch.randn(2, COND_CH, 3, 3, dtype=F64))
    w = lu_weight(layer.perm, layer.lower, layer.upper, layer.sign, layer.log_s)
    assert torch.allclose(y, torch.einsum("ij,bjhw->bihw", w, x), atol=1e-12)
    assert torch.allclose(ld, 9 * torch.linalg.slogdet(w)[1].expand(2), atol=1e-12)
    norm = ConditionalActNorm(4, COND_CH, size=(3, 3)).double()
    initialize_data_dependent(norm, lambda: norm(x, torch.randn(2, COND_CH, 3, 3, dtype=F64)))
    out, _ = norm(x, torch.randn(2, COND_CH, 3, 3, dtype=F64))
    flat = out.transpose(0, 1).reshape(4, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(4, dtype=F64), atol=1e-10)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(4, dtype=F64), atol=1e-8)


def test_conditional_layer_input_errors_name_the_layer():
    layer = ConditionalActNorm(4, COND_CH, size=(3, 3))
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match=r"ConditionalActNorm: .*needs cond"):
        layer(x)
    with pytest.raises(ValueError, match=r"ConditionalInvConv1x1: expected cond of shape \(2, 3, 3, 3\)"):
        ConditionalInvConv1x1(4, COND_CH, size=(3, 3))(x, torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match=r"CondNetAffineCoupling: built for 4 channels"):
        CondNetAffineCoupling(4, COND_CH, hidden=4)(torch.randn(2, 6, 3, 3), torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"CondVectorNet: built for 3x3"):
        CondVectorNet(COND_CH, 4, size=(3, 3))(torch.randn(1, COND_CH, 4, 4))
    with pytest.raises(ValueError, match="exactly one of"):
        CondVectorNet(COND_CH, 4)


# ------------------------------------------------------------------------------------------------
# whole model
# ------------------------------------------------------------------------------------------------


def tiny_config(attention="none", position="pos3", shape=(3, 4, 4), **cond) -> dict:
    m = dict(
        backbone="fullglow", image_shape=list(shape), levels=2, steps=2, hidden=8, prior="gaussian",
        attention=attention, position=position, heads=2, patches=[4, 1],
        cond=dict(cond_hidden=6, cond_mlp=[6], **cond),
    )
    return merge(DEFAULTS, {"model": m})


def _labels(model: FullGlow, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    _, h, w = model.image_shape
    if model.label_mode == "color":
        return torch.randint(0, 256, (batch, 3, h, w), generator=gen).to(F64)
    ids = torch.randint(0, model.source_channels + 1, (batch, h, w), generator=gen)
    onehot = torch.nn.functional.one_hot(ids, model.source_channels + 1)[..., :-1]  # last: "no label"
    return onehot.permute(0, 3, 1, 2).to(F64)


def _moved_model(cfg: dict, batch: int | None = None, seed: int = 0):
    # one-hot maps of 3 tiny images give ActNorm near-degenerate init statistics (scales ~1e3, an
    # ill-conditioned flow whose float64 round trip loses 1e-8): initialise those from 6 images
    batch = batch or (6 if cfg["model"]["cond"].get("label_mode") == "onehot" else 3)
    torch.manual_seed(seed)
    model = build_model(cfg).double()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randint(0, 256, (batch, *model.image_shape), generator=gen).to(F64)
    a = _labels(model, batch, seed)
    model.initialize((x, a))
    perturb_parameters(model, 0.03, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(2):
        loss = model((x, a))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, x, a


CASES = [
    ("none", "pos3", {}),
    ("imap", "pos1", {}),
    ("imap", "pos4", {}),
    ("itrans", "pos2", {}),
    ("itrans", "pos3", {}),
    ("none", "pos3", {"label_mode": "onehot", "classes": 5}),
    ("imap", "pos3", {"cond_grid": 2}),
]


@pytest.mark.parametrize("attention,position,cond", CASES, ids=lambda v: str(v))
def test_model_exact_inverse_and_brute_force_logdet(attention, position, cond):
    model, x, a = _moved_model(tiny_config(attention, position, **cond))
    with dequantization_noise(model, False):
        report = check_model(model, x, a, jacobian_samples=1)
    assert report.roundtrip_error < 1e-10 and report.jacobian_logdet_error < 1e-8


def test_check_model_catches_a_wrong_conditional_logdet():
    model, x, a = _moved_model(tiny_config("imap"))
    layer = model.levels[1].flow[1][1]  # a ConditionalInvConv1x1 of the second level
    assert isinstance(layer, ConditionalInvConv1x1)
    orig = layer.forward
    layer.forward = lambda h, c=None: (lambda y, ld: (y, ld + 1e-3))(*orig(h, c))
    with dequantization_noise(model, False), pytest.raises(FlowCheckError, match="Jacobian"):
        check_model(model, x, a, jacobian_samples=1)


def test_attention_layers_sit_at_their_position_with_alternating_parity():
    model = build_model(tiny_config("itrans", "pos2"))
    steps = [step for level in model.levels for step in list(level.flow)[1:]]
    assert [type(layer).__name__ for layer in steps[0]] == [
        "ConditionalActNorm", "ITrans", "ConditionalInvConv1x1", "CondNetAffineCoupling"]
    assert [step[1].parity for step in steps] == [0, 1, 0, 1]
    assert model.routes[0][0] == (0, None, 1, 2)


@pytest.mark.parametrize("attention", ["none", "imap", "itrans"])
def test_batch_gives_the_same_per_sample_results_as_batch_one(attention):
    model, x, a = _moved_model(tiny_config(attention, "pos3"), batch=4)
    with dequantization_noise(model, False), torch.no_grad():
        for mode in (model.eval, model.train):
            mode()
            lp, obj = model.log_prob(x, a), model.objective_log_prob(x, a)
            zs, ld = model.encode(x, a)
            for b in range(x.shape[0]):
                xb, ab = x[b : b + 1], a[b : b + 1]
                assert torch.allclose(model.log_prob(xb, ab), lp[b : b + 1], rtol=1e-12, atol=1e-9)
                assert torch.allclose(model.objective_log_prob(xb, ab), obj[b : b + 1], rtol=1e-12, atol=1e-9)
                zb, ldb = model.encode(xb, ab)
                assert torch.allclose(ldb, ld[b : b + 1], rtol=1e-12, atol=1e-9)
                for z, z1 in zip(zs, zb):
                    assert torch.allclose(z1, z[b : b + 1], rtol=1e-12, atol=1e-10)


def test_objective_is_conditional_plus_lambda_times_source_likelihood():
    model, x, a = _moved_model(tiny_config("imap"))
    with dequantization_noise(model, False), torch.no_grad():
        cond, src, obj = model.log_prob(x, a), model.source_log_prob(a), model.objective_log_prob(x, a)
        assert torch.allclose(obj, cond + 1e-4 * src, rtol=1e-12)
        model.source_weight = 0.25
        assert torch.allclose(model.objective_log_prob(x, a), cond + 0.25 * src, rtol=1e-12)
        # the conditional likelihood depends on the labels, the source term on the labels only
        a2 = _labels(model, x.shape[0], seed=7)
        assert (model.log_prob(x, a2) - cond).abs().min() > 1e-6
    # bits_per_dim (what `attnflow evaluate` reports) is the conditional bits/dim -log2 p(x|a) / D
    d = x[0].numel()
    with dequantization_noise(model, False), torch.no_grad():
        bpd = model.bits_per_dim((x, a))
    assert torch.allclose(bpd, -cond / (d * math.log(2)), rtol=1e-12)


@pytest.mark.parametrize("cond", [{}, {"label_mode": "onehot", "classes": 4}], ids=["color", "onehot"])
def test_source_glow_is_exact_and_its_activation_path_gives_the_same_density(cond):
    """log p(labels): the source Glow passes the brute-force check, and the pass that also keeps
    the activations for the target computes the same density as the generic MultiScaleFlow one."""
    model, x, a = _moved_model(tiny_config(**cond))
    levels = model.source_levels(a)
    if cond:  # one-hot labels are modelled as 8-bit levels {0, 255}
        assert torch.equal(levels.unique(), torch.tensor([0.0, 255.0], dtype=F64))
    with dequantization_noise(model, False):
        check_model(model.source, levels, jacobian_samples=1)
        with torch.no_grad():
            assert torch.allclose(model.source_log_prob(a), model.source.log_prob(levels), rtol=1e-12)
    assert model.source.sample(2, temperature=0.5).shape == (2, model.source_channels, 4, 4)


def test_sampling_shapes_temperature_and_seed():
    model, x, a = _moved_model(tiny_config("imap"))
    model.eval()
    torch.manual_seed(3)
    s1 = model.sample(5, a[:1], temperature=0.8)
    torch.manual_seed(3)
    s2 = model.sample(5, a[:1], temperature=0.8)
    assert s1.shape == (5, 3, 4, 4) and s1.dtype == torch.uint8
    assert torch.equal(s1, s2)
    assert len({tuple(s.flatten().tolist()) for s in s1}) > 1  # several photos for one label map
    with dequantization_noise(model, False):
        cold = model.sample(3, a[:1], temperature=0.0)
    assert torch.equal(cold[0], cold[1]) and torch.equal(cold[1], cold[2])
    assert model.sample(3, a, temperature=1.0).shape == (3, 3, 4, 4)  # one label map per photo
    with pytest.raises(ValueError, match="give 1 or n=4 label maps"):
        model.sample(4, a, temperature=1.0)
    pics = model.visualize(a, s1[:3])
    assert pics.shape == (3, 3, 4, 8) and pics.dtype == torch.uint8
    assert torch.equal(pics[:, :, :, :4], a.to(torch.uint8))


def test_decode_of_sampled_latents_and_prior_match():
    model, x, a = _moved_model(tiny_config("itrans"))
    model.eval()
    zs = [torch.randn(s, dtype=F64) for s in model.latent_shapes(3)]
    with dequantization_noise(model, False), torch.no_grad():
        x_cont = model.decode(zs, a)
        zs2, _ = model.encode(x_cont, a)
    for z, z2 in zip(zs, zs2):
        assert torch.allclose(z, z2, atol=1e-9)


def test_label_colors_for_onehot_maps():
    ids = torch.tensor([[[0, 7], [26, 34]]])
    onehot = torch.nn.functional.one_hot(ids, 35)[..., :34].permute(0, 3, 1, 2).float()
    rgb = label_colors(onehot, "onehot")
    assert rgb[0, :, 0, 1].tolist() == [128, 64, 128]  # road
    assert rgb[0, :, 1, 0].tolist() == [0, 0, 142]  # car
    assert rgb[0, :, 1, 1].tolist() == [0, 0, 0]  # no label


def test_wrong_inputs_are_clear_errors():
    model = build_model(tiny_config())
    x = torch.randint(0, 256, (2, 3, 4, 4)).float()
    with pytest.raises(ValueError, match=r"expected photos \[B, 3, 4, 4\]"):
        model.log_prob(torch.zeros(2, 3, 8, 8), x)
    with pytest.raises(ValueError, match="needs colour label maps"):
        model.log_prob(x)
    with pytest.raises(ValueError, match="label_mode probably differs"):
        model.log_prob(x, torch.zeros(2, 34, 4, 4))
    with pytest.raises(ValueError, match="3 label maps for 2 photos"):
        model.log_prob(x, torch.zeros(3, 3, 4, 4))


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown key.*labelmode.*valid keys: label_mode"):
        build_model(tiny_config(labelmode="color"))
    with pytest.raises(ConfigError, match="model.prior must be 'gaussian'"):
        build_model(merge(tiny_config(), {"model": {"prior": "ar"}}))
    with pytest.raises(ConfigError, match="label_mode must be 'color' or 'onehot'"):
        build_model(tiny_config(label_mode="ids"))
    with pytest.raises(ConfigError, match="divisible by 2\\*\\*levels"):
        build_model(tiny_config(shape=(3, 6, 6)))


def test_preset_parameter_counts_are_near_the_paper():
    counts = {}
    for name in ("cityscapes-none", "cityscapes-imap", "cityscapes-itrans", "cityscapes-fullglow-4-16"):
        with torch.device("meta"):
            model = build_model(load_preset(name))
        counts[name] = sum(p.numel() for p in model.parameters()) / 1e6
    for name in ("cityscapes-none", "cityscapes-imap", "cityscapes-itrans"):
        assert abs(counts[name] / 34.7 - 1) < 0.05, counts  # paper: 34.7M
    assert abs(counts["cityscapes-fullglow-4-16"] / 155 - 1) < 0.05, counts  # paper: 155M


# ------------------------------------------------------------------------------------------------
# data through get_dataset, into the model
# ------------------------------------------------------------------------------------------------


def _write_cityscapes(root, split="val", n=2, size=(8, 16)):
    rng = np.random.default_rng(0)
    for i in range(n):
        city = "aachen" if i % 2 == 0 else "bonn"
        stem = f"{city}_{i:06d}_000019"
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        ids = rng.integers(0, 34, size, dtype=np.uint8)
        Image.fromarray(ids, mode="L").save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(CITYSCAPES_COLORS[ids]).save(root / "gtFine" / split / city / f"{stem}_gtFine_color.png")


@pytest.mark.parametrize("label_mode", ["color", "onehot"])
def test_cityscapes_tree_feeds_the_model(tmp_path, label_mode):
    _write_cityscapes(tmp_path)
    ds = get_dataset("cityscapes", tmp_path, "val", image_size=4, label_mode=label_mode)
    photo, labels = ds[0]
    assert photo.shape == (3, 4, 4) and photo.dtype == torch.uint8
    model = build_model(tiny_config(label_mode=label_mode))
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    x, a = batch[0].float(), batch[1].float()
    model.initialize((x, a))
    assert torch.isfinite(model.log_prob(x, a)).all()
    if label_mode == "onehot":
        assert labels.shape == (34, 4, 4)


def test_paired_folders_and_synthetic_pairs_feed_the_model(tmp_path):
    write_synthetic_pairs(tmp_path / "val", n=3, size=8, seed=1, split="val")
    paired = get_dataset("pairs", tmp_path, "val", image_size=8)
    synth = get_dataset("synthetic-pairs", None, "val", image_size=8, n=3, seed=1)
    for i in range(3):
        assert all(torch.equal(u, v) for u, v in zip(paired[i], synth[i]))
    model = build_model(tiny_config(shape=(3, 8, 8)))
    batch = torch.utils.data.default_collate([paired[i] for i in range(3)])
    x, a = batch[0].float(), batch[1].float()
    model.initialize((x, a))
    assert torch.isfinite(model.objective_log_prob(x, a)).all()


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------


def test_a_tiny_training_run_lowers_the_loss():
    torch.manual_seed(0)
    ds = get_dataset("synthetic-pairs", None, "train", image_size=8, n=8)
    x = torch.stack([ds[i][0] for i in range(8)]).float()
    a = torch.stack([ds[i][1] for i in range(8)]).float()
    model = build_model(tiny_config("imap", shape=(3, 8, 8)))
    model.initialize((x, a))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def bpd() -> float:
        with torch.no_grad(), dequantization_noise(model, False):
            return float(model.bits_per_dim((x, a)).mean())

    start = bpd()
    for _ in range(25):
        loss = model.objective((x, a))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert bpd() < start - 0.3, (start, bpd())
