"""SRFlow / cAttnFlow for super-resolution: exact inverses, brute-force log-dets, geometry and errors,
parameter counts against the paper, a tiny training run, and the SR evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from attnflow.config import ConfigError, list_presets, load_preset
from attnflow.core import initialize_data_dependent
from attnflow.evaluation.super_resolution import bicubic_upscale, evaluate_bicubic
from attnflow.layers import InvConv1x1, ITrans
from attnflow.models import build_model, dequantization_noise
from attnflow.models.rrdb_encoder import RRDBEncoder
from attnflow.models.srflow import SRFlow, conditional_step
from attnflow.models.srflow_layers import FactoredGlowNet
from attnflow.models.steps import AttentionConfig
from attnflow.models.upsampled_concat import UpsampledConcat, dense_map
from attnflow.nn import GlowNet
from attnflow.testing import check_flow, check_model, perturb_parameters, train_steps

TINY_ENCODER = dict(features=8, blocks=2, growth=4, taps=[0, 1])


def tiny(scale=8, levels=2, attention="none", position="pos3", patches=4, **kw) -> SRFlow:
    kw.setdefault("steps", 1)
    kw.setdefault("hidden", 8)
    kw.setdefault("unconditional_steps", 1)
    kw.setdefault("encoder", TINY_ENCODER)
    att = AttentionConfig(kind=attention, position=position, patches=patches, heads=2)
    return SRFlow(scale=scale, levels=levels, image_shape=(3, 16, 16), attention=att, **kw)


def pair(scale: int, lr_size: int | tuple[int, int], batch: int, dtype=torch.float64):
    h, w = (lr_size, lr_size) if isinstance(lr_size, int) else lr_size
    lr = torch.randint(0, 256, (batch, 3, h, w)).to(dtype)
    hr = torch.randint(0, 256, (batch, 3, h * scale, w * scale)).to(dtype)
    return hr, lr


def moved(model: SRFlow, scale: int, lr_size: int) -> SRFlow:
    """float64, ActNorm initialised on a batch of 16, perturbed, then two Adam steps of the NLL.

    The perturbation is kept at 0.02: random noise on every entry of the LU factors of a 192x192
    1x1 conv (the deepest level at 8x) makes its condition number explode (~1e3 at 0.05), which
    says nothing about the model and only amplifies rounding.
    """
    model = model.double()
    hr, lr = pair(scale, lr_size, 16)
    model.initialize((hr, lr))
    perturb_parameters(model, 0.02)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        loss = -model.log_prob(hr, lr).mean() / hr[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


# ------------------------------------------------------------------------------------------------
# exact inverse and log-det of whole models, given the condition
# ------------------------------------------------------------------------------------------------

MODEL_CASES = [
    # scale, levels, attention, position, patches, LR side, extra   (HR = LR * scale)
    (8, 2, "none", "pos3", 4, 1, {}),  # the paper's 2/K layout (no split), 1x1 -> 8x8
    (8, 1, "itrans", "pos3", 4, 1, {}),  # the paper's 1/1 layout
    (8, 4, "itrans", "pos4", [4, 4, 4, 1], 2, {}),  # full SRFlow: splits at levels 1, 2; level 4 below LR
    (4, 3, "imap", "pos1", 4, 2, {}),  # 4x, full layout (L = log2(4) + 1), 2x2 -> 8x8
    (4, 2, "itrans", "pos2", 4, 2, {}),
    (8, 3, "imap", "pos3", 4, 1, {"split": False, "top_prior": "conditional", "steps": [1, 2, 1]}),
]


@pytest.mark.parametrize("scale,levels,attention,position,patches,lr_size,extra", MODEL_CASES)
def test_model_inverse_and_logdet(scale, levels, attention, position, patches, lr_size, extra):
    model = moved(tiny(scale, levels, attention, position, patches, **extra), scale, lr_size)
    hr, lr = pair(scale, lr_size, 2)
    with dequantization_noise(model, False):
        report = check_model(model, hr, lr)
    assert report.roundtrip_error < 1e-10
    assert report.jacobian_logdet_error < 1e-8
    if attention != "none":
        kinds = {type(m).__name__ for m in model.modules()}
        assert {"imap": "IMap", "itrans": "ITrans"}[attention] in kinds


def test_check_model_detects_a_wrong_logdet():
    """The checker is not vacuous here: a log-det off by a constant fails it."""
    model = moved(tiny(8, 2), 8, 1)
    hr, lr = pair(8, 1, 1)
    step = model.levels[0].flow[2]  # a conditional step
    orig = step.forward

    def broken(x, cond=None):
        y, ld = orig(x, cond)
        return y, ld + 1e-3

    step.forward = broken
    with dequantization_noise(model, False), pytest.raises(AssertionError, match="log-det"):
        check_model(model, hr, lr)


# ------------------------------------------------------------------------------------------------
# one conditional step through the layer checker
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["none", "imap", "itrans"])
@pytest.mark.parametrize("position", ["pos1", "pos4"])
def test_conditional_step_check_flow(attention, position, device):
    shape, cc = (2, 12, 4, 4), 5
    cond = torch.randn(shape[0], cc, 4, 4, dtype=torch.float64, device=device)

    def factory():
        att = AttentionConfig(kind=attention, position=position, heads=2).make(shape[1], 0)
        return conditional_step(shape[1], cc, hidden=8, attention=att, position=position)

    step = factory().to(device=device, dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64, device=device)
    initialize_data_dependent(step, lambda: step(x, cond))
    perturb_parameters(step, 0.05)
    train_steps(step, shape, cond=cond, steps=3, lr=1e-2)
    check_flow(step, shape, cond=cond, device=device, factory=factory)


# ------------------------------------------------------------------------------------------------
# encoder, batch independence, geometry
# ------------------------------------------------------------------------------------------------


def test_encoder_levels_and_channels():
    enc = RRDBEncoder([2, 1, 0, -1], features=8, blocks=3, growth=4, taps=[0, 2]).double()
    lr = torch.rand(2, 3, 4, 6, dtype=torch.float64) * 255
    maps = enc(lr)
    assert enc.out_channels == 24
    assert [tuple(m.shape) for m in maps] == [(2, 24, 16, 24), (2, 24, 8, 12), (2, 24, 4, 6), (2, 24, 2, 3)]
    assert len(enc.upconvs) == 2
    # above the LR resolution the tapped blocks stay at the LR resolution (factored maps)
    assert [type(m) for m in maps] == [UpsampledConcat, UpsampledConcat, torch.Tensor, torch.Tensor]
    assert [m.factor for m in maps[:2]] == [4, 2] and maps[0].coarse is maps[1].coarse
    assert tuple(maps[0].coarse.shape) == (2, 16, 4, 6) and maps[0].fine_channels == 8
    up = torch.nn.functional.interpolate(maps[2][:, 8:], scale_factor=4, mode="nearest")
    torch.testing.assert_close(maps[0].dense()[:, 8:], up, rtol=0, atol=0)
    maps = [dense_map(m) for m in maps]
    # below the LR resolution the features are 2x2 averages of the LR-level features
    torch.testing.assert_close(maps[3], torch.nn.functional.avg_pool2d(maps[2], 2))
    # the default SRFlow encoder: 64 + 4 * 64 = 320 conditioning channels
    assert RRDBEncoder([2]).out_channels == 320
    with pytest.raises(ValueError, match="taps"):
        RRDBEncoder([0], blocks=2, taps=[2])


def test_batch_independence():
    model = moved(tiny(8, 4, "itrans", patches=[4, 4, 4, 1]), 8, 2).eval()
    hr, lr = pair(8, 2, 3)
    with dequantization_noise(model, False), torch.no_grad():
        joint = model.log_prob(hr, lr)
        single = torch.cat([model.log_prob(hr[i : i + 1], lr[i : i + 1]) for i in range(3)])
        conds = model.level_conditions(lr)
        conds1 = model.level_conditions(lr[1:2])
    torch.testing.assert_close(joint, single, rtol=1e-12, atol=1e-9)
    for c, c1 in zip(conds, conds1):
        torch.testing.assert_close(dense_map(c)[1:2], dense_map(c1), rtol=1e-12, atol=1e-12)


def test_sampling_shapes_any_lr_size():
    model = moved(tiny(4, 2, "imap"), 4, 4).float().eval()
    lr = torch.randint(0, 256, (1, 3, 3, 5)).float()  # odd, non-square, not the training size
    assert model.lr_multiple == 1
    assert model.data_shape(lr) == (3, 12, 20)
    out = model.sample(4, lr, temperature=0.7)
    assert out.shape == (4, 3, 12, 20) and out.dtype == torch.uint8
    lr2 = torch.randint(0, 256, (2, 3, 3, 5)).float()
    assert model.sample(2, lr2, temperature=0.7).shape == (2, 3, 12, 20)
    sr = model.super_resolve(lr2, samples=3, temperature=0.5)
    assert sr.shape == (2, 3, 3, 12, 20)
    # temperature 0 is the (deterministic) mode path
    torch.testing.assert_close(model.sample(1, lr, temperature=0.0), model.sample(1, lr, temperature=0.0))
    # training-grid hook: LR (nearest x4) next to SR
    vis = model.visualize(lr2, sr[:, 0])
    assert vis.shape == (2, 3, 12, 40) and vis.dtype == torch.uint8
    torch.testing.assert_close(vis[:, :, ::4, :20:4], lr2.to(torch.uint8))
    assert model.example_batch(5)[1].shape == (5, 3, 4, 4)


def test_scale_8_and_4_geometry():
    m8 = tiny(8, 4)
    assert m8.level_octaves == [2, 1, 0, -1] and m8.lr_multiple == 2
    assert [s[1:] for s in m8.latent_shapes_for((3, 160, 160), 1)] == [
        (6, 80, 80), (12, 40, 40), (192, 10, 10)
    ]
    m4 = tiny(4, 3)
    assert m4.level_octaves == [1, 0, -1] and m4.lr_multiple == 2
    assert tiny(8, 2, "itrans", patches=9).lr_multiple == 3  # 3x3 patch grid on LR*4, LR*2 sides


# ------------------------------------------------------------------------------------------------
# clear errors
# ------------------------------------------------------------------------------------------------


def test_wrong_sizes_are_clear_value_errors():
    model = tiny(8, 4).double()
    hr, lr = pair(8, 2, 2)
    with pytest.raises(ValueError, match=r"times scale=8.*must be \(2, 3, 16, 16\)"):
        model.log_prob(hr[:, :, :8, :8], lr)
    with pytest.raises(ValueError, match="times scale=8"):
        model.encode(hr[:1], lr)  # batch mismatch
    with pytest.raises(ValueError, match=r"LR image as \[B, 3, h, w\]"):
        model.log_prob(hr, lr[:, :1])
    with pytest.raises(ValueError, match="multiples of 2"):
        model.log_prob(torch.zeros(2, 3, 24, 24, dtype=torch.float64), torch.zeros(2, 3, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs the low-resolution image"):
        model.log_prob(hr)
    with pytest.raises(ValueError, match="n must be 2"):
        model.sample(3, lr)
    latents, _ = model.encode(hr, lr)
    with pytest.raises(ValueError, match="latents for LR"):
        model.decode(latents, torch.zeros(2, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="iTrans"):
        tiny(8, 2, "itrans", patches=9).sample(1, torch.zeros(1, 3, 4, 4))


def test_bad_configs_are_config_errors():
    cfg = load_preset("sr-demo")
    for key, value, match in [
        ("scale", 3, "power of two"),
        ("image_shape", [3, 60, 60], "not divisible by scale"),
        ("levels", 0, "levels"),
    ]:
        bad = json.loads(json.dumps(cfg))
        bad["model"][key] = value
        with pytest.raises(ConfigError, match=match):
            build_model(bad)
    bad = json.loads(json.dumps(cfg))
    bad["model"]["cond"]["width"] = 3
    with pytest.raises(ConfigError, match="unknown key.*width"):
        build_model(bad)
    bad = json.loads(json.dumps(cfg))
    bad["model"]["cond"]["top_prior"] = "flow"
    with pytest.raises(ConfigError, match="top_prior"):
        build_model(bad)


# ------------------------------------------------------------------------------------------------
# presets and parameter counts
# ------------------------------------------------------------------------------------------------


def _reference_equivalent(model: SRFlow) -> int:
    """Parameters SRFlow's code would have for the same architecture.

    SRFlow stores a full 1x1-conv matrix (C^2) where the LU form here stores 2C^2 + C; it also builds
    the RRDB's remaining upsampling conv(s) up to 8x, its HR conv and output conv (used only to
    pretrain the RRDB as a regressor) and a 3x3 conv ``f`` (320 -> 96 channels) that the flow never
    calls; the paper's counts include all of them.
    """
    n = sum(p.numel() for p in model.parameters())
    n -= sum(m.channels**2 + m.channels for m in model.modules() if isinstance(m, InvConv1x1))
    conv = 64 * 64 * 9 + 64
    n += (3 - len(model.conditioner.upconvs)) * conv + conv + (64 * 3 * 9 + 3) + (320 * 96 * 9 + 96)
    return n


@pytest.mark.parametrize("preset,ours,paper", [
    ("celeba-sr-8x-1-1-none", 6.27, 6.62),
    ("celeba-sr-8x-2-8-none", 12.93, 13.25),
])
def test_parameter_counts_match_the_paper(preset, ours, paper):
    model = build_model(load_preset(preset))
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - ours) < 0.005
    assert abs(_reference_equivalent(model) / 1e6 - paper) < 0.005


def test_sr_presets():
    names = [n for n in list_presets() if n.startswith("celeba-sr-")]
    expected = {f"celeba-sr-8x-{v}-{a}" for v in ("1-1", "2-8") for a in ("none", "imap", "itrans")}
    expected |= {"celeba-sr-8x-4-16", "celeba-sr-8x-imap", "celeba-sr-8x-itrans", "celeba-sr-8x-none"}
    assert expected <= set(names)
    for name in names:
        cfg = load_preset(name)
        m, t, d = cfg["model"], cfg["train"], cfg["data"]
        assert m["backbone"] == "srflow" and m["scale"] == 8 and m["image_shape"] == [3, 160, 160]
        assert d["name"] == "celeba" and d["options"]["scale"] == 8
        assert t["batch_size"] == 16 and t["optimizer"] == "adam" and t["lr"] == 5e-4
        assert t["lr_milestones"] == [0.5, 0.75, 0.9, 0.95]
    for a in ("none", "imap", "itrans"):
        alias, full = load_preset(f"celeba-sr-8x-{a}"), load_preset(f"celeba-sr-8x-1-1-{a}")
        alias.pop("name"), full.pop("name")
        assert alias == full
    l4 = load_preset("celeba-sr-8x-4-16")["model"]
    assert (l4["levels"], l4["steps"]) == (4, 16)
    demo = build_model(load_preset("sr-demo"))
    assert sum(p.numel() for p in demo.parameters()) < 2e6


# ------------------------------------------------------------------------------------------------
# training and evaluation
# ------------------------------------------------------------------------------------------------


def _tiny_config(tmp_steps: int = 20) -> dict:
    cfg = load_preset("sr-demo")
    cfg["model"].update(image_shape=[3, 32, 32], levels=2, steps=1, hidden=16)
    cfg["model"]["cond"].update(features=16, blocks=1, growth=8, taps=[0])
    cfg["data"]["options"] = {"image_size": 32, "scale": 8}
    cfg["train"].update(
        steps=tmp_steps, batch_size=8, eval_batch_size=8, lr=2e-3, warmup_steps=0, log_every=1,
        eval_every=10_000, eval_max_batches=1, checkpoint_every=10_000, n_samples=4,
        sample_temperatures=[0.8], lr_milestones=[],
    )
    return cfg


def test_tiny_training_run_lowers_the_loss(tmp_path):
    from attnflow.training import train

    summary = train(_tiny_config(), tmp_path / "run", progress=False)
    bpd = [json.loads(line)["bpd"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
           if json.loads(line)["split"] == "train"]
    assert len(bpd) == 20
    first, last = sum(bpd[:5]) / 5, sum(bpd[-5:]) / 5
    assert last < first - 0.3, (first, last)
    assert math.isfinite(summary["test_bpd"])
    grids = list((tmp_path / "run" / "samples").glob("*.png"))
    assert grids  # written through model.visualize


def test_evaluate_sr_metrics():
    from attnflow.data import get_dataset
    from attnflow.evaluation import evaluate_sr, format_sr_table, lr_psnr, psnr
    from attnflow.evaluation.super_resolution import bicubic_upscale

    model = build_model(_tiny_config()).eval()
    data = get_dataset("celeba-bundled", None, "test", image_size=32, scale=8)
    calls = []

    def fake_lpips(a, b):
        calls.append(a.shape)
        assert a.min() >= -1 and a.max() <= 1
        return (a - b).abs().mean(dim=(1, 2, 3))

    res = evaluate_sr(model, data, temperatures=(0.5, 0.9), samples=2, lpips=fake_lpips,
                      batch_size=3, max_batches=2, examples=2)
    assert res["images"] == 6 and res["samples_per_image"] == 2 and len(calls) == 4 + 2  # SR + bicubic
    assert [r["temperature"] for r in res["per_temperature"]] == [0.5, 0.9]
    for k in ("psnr", "ssim", "ssim_uniform", "lr_psnr", "lpips"):
        vals = [r[k] for r in res["per_temperature"]]
        assert res["mean"][k] == pytest.approx(sum(vals) / 2)
        assert all(math.isfinite(v) for v in vals)
    assert math.isfinite(res["bits_per_dim"])
    assert res["examples"][0.5].shape == (2, 3, 32, 128)  # LR (nearest) | bicubic | SR | HR
    table = format_sr_table(res)
    assert "| **mean** |" in table and "LPIPS" in table and "SSIM (uniform 7x7" in table
    assert "| bicubic |" in table and set(res["bicubic"]) == set(res["mean"])

    # same seed -> same numbers; the first batch's metrics equal a direct computation
    res2 = evaluate_sr(model, data, temperatures=(0.5,), samples=1, batch_size=3, max_batches=1,
                       bits_per_dim=False)
    torch.manual_seed(0)
    hr, lr = zip(*[data[i] for i in range(3)])
    hr, lr = torch.stack(hr), torch.stack(lr)
    sr = model.super_resolve(lr.float(), samples=1, temperature=0.5)[:, 0]
    assert res2["per_temperature"][0]["psnr"] == pytest.approx(float(psnr(sr, hr).mean()))
    assert res2["per_temperature"][0]["lr_psnr"] == pytest.approx(float(lr_psnr(lr, sr, 8).mean()))
    assert "lpips" not in res2["mean"]
    bicubic = bicubic_upscale(lr, 8)
    assert res2["bicubic"]["psnr"] == pytest.approx(float(psnr(bicubic, hr).mean()))
    assert res2["bicubic"]["lr_psnr"] == pytest.approx(float(lr_psnr(lr, bicubic, 8).mean()))
    assert evaluate_bicubic(data, 8, batch_size=3, max_batches=1) == pytest.approx(res2["bicubic"])
    grid = res["examples"][0.5]
    torch.testing.assert_close(grid[:, :, :, 32:64], bicubic_upscale(torch.stack([data[i][1] for i in range(2)]), 8))


def test_bicubic_baseline_matches_an_independent_bicubic():
    """Upscaling is plain Keys bicubic (a = -0.5, no antialiasing): away from the border, where
    MATLAB's symmetric padding and Pillow's edge handling differ, it equals Pillow's BICUBIC."""
    from PIL import Image

    yy, xx = np.mgrid[0:12, 0:10]  # smooth (no overshoot that Pillow would clip between its passes)
    lr = np.stack([128 + 60 * np.sin(yy / 3 + c) * np.cos(xx / 4 - c) for c in range(3)], -1).round().astype(np.uint8)
    ours = bicubic_upscale(torch.from_numpy(lr).permute(2, 0, 1)[None], 4)[0].permute(1, 2, 0).numpy()
    pil = np.asarray(Image.fromarray(lr).resize((40, 48), Image.BICUBIC))
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(ours[inner].astype(int) - pil[inner].astype(int)).max() <= 1


def test_itrans_layers_present_in_conditional_steps_only():
    model = tiny(8, 2, "itrans", steps=2)
    per_level = [sum(isinstance(m, ITrans) for m in lvl.modules()) for lvl in model.levels]
    assert per_level == [2, 2]
    parities = [m.parity for m in model.modules() if isinstance(m, ITrans)]
    assert parities == [0, 1, 0, 1]


def test_factored_conditions_give_the_dense_result(monkeypatch):
    """The levels above the LR resolution get factored maps, whose coarse part the networks convolve
    at the LR resolution: log-likelihood, every gradient and samples as with the dense maps."""
    model = moved(tiny(8, 3, "imap"), 8, 2).train()
    hr, lr = pair(8, 2, 3)
    conds = model.level_conditions(lr)
    assert [isinstance(c, UpsampledConcat) for c in conds] == [True, True, False]

    def run():
        torch.manual_seed(1)
        loss = -model.log_prob(hr, lr).mean()
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        torch.manual_seed(2)
        with torch.no_grad():
            sample = model.eval().sample(3, lr, temperature=0.7)
        model.train()
        return loss.detach(), grads, sample

    loss_f, grads_f, sample_f = run()
    # every network sees dense maps: the generic GlowNet's convolution on the built-out map
    monkeypatch.setattr(FactoredGlowNet, "first_conv", lambda net, x, w, b: GlowNet.first_conv(net, dense_map(x), w, b))
    loss_d, grads_d, sample_d = run()
    torch.testing.assert_close(loss_f, loss_d, rtol=1e-12, atol=0)
    for a, b in zip(grads_d, grads_f):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    assert torch.equal(sample_f, sample_d)
