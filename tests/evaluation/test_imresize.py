"""MATLAB-compatible bicubic resize: hand-derived values, published MATLAB outputs, invariants.

Reference values and where they come from:

* hand-derived (comments below): 4x4 ramp ``0..15`` downscaled by 1/2 and upscaled by 2;
* MATLAB outputs published on MATLAB Answers / Stack Overflow (4 printed decimals):
  - bicubic upscale of ``A = [3 1 2 6; 1 5 2 7; 1 3 6 2; 4 1 9 2]`` to 8x8, MATLAB Answers
    question 1628 "How does Matlab function imresize calculate values on borders of image" (2011);
  - bicubic and bilinear upscale of ``[0 0 1 1 0]`` to 1x10, Stack Overflow question 17380407
    "Why does imresize produce values greater than maximal?" (2013);
  - bilinear downscale with antialiasing of ``[0 0 1 1; 0 0 1 1; 0 0 0 0; 0 0 0 0]`` to 2x2,
    MATLAB Answers question 650593 (R2020b), with and without antialiasing;
  - bilinear ``imresize([1 2; 3 4], [4 4])`` and back to 2x2, Stack Overflow question "Python
    cv2.resize vs MATLAB imresize" (mirrored at manongdao.com/q-286597.html);
  - bilinear ``imresize([0 1 2], [1 5])``, Stack Overflow question 42020435.
  Those old MATLAB releases (2011/2013) clamped out-of-range taps (replicate padding); newer
  releases mirror them (symmetric padding, ``aux = [1:n, n:-1:1]``), which is what this module does
  and what the MATLAB-verified ports use. Replicate and symmetric padding only differ in output
  pixels whose taps leave the image, so those border entries are excluded from the comparison
  (and the symmetric border is checked by the hand-derived cases instead).
* ``bicubic_pytorch`` (sanghyun-son, verified against MATLAB R2019b): its documented example
  ``imresize(arange(16).view(4, 4), sides=(3, 3))`` (antialiased downscale, boundary-sensitive).
* Pillow's bicubic resize of float ("F") images: an independent implementation of the same Keys
  a = -0.5 kernel, stretched when reducing, with the same pixel-centre mapping. It differs only in
  how it treats the border, so interiors must agree to float32 precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from attnflow.evaluation.imresize import imresize, resize_weights

F64 = torch.float64


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


# ------------------------------------------------------------------------------ hand-derived values
def test_downscale_half_4x4_ramp_hand_derived():
    # 1-D, n = 4, scale 1/2, antialiased: kernel h(t) = 0.5 * cubic(0.5 t), width 8.
    # Output 1 maps to u = 1/0.5 + 0.5 (1 - 2) = 1.5; taps idx = -2..5 at distances 3.5 .. -3.5:
    # cubic(1.75) = -0.0234375, cubic(1.25) = -0.0703125, cubic(0.75) = 0.2265625,
    # cubic(0.25) = 0.8671875 (symmetric), sum 2 -> normalised weights
    # [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625,
    #  -0.01171875]. Symmetric padding maps idx -2, -1, 0 -> 3, 2, 1 and 5 -> 4, so on the ramp
    # v = [0, 1, 2, 3]: a0 = -0.0234375 - 0.03515625 + 0.43359375 + 0.2265625 - 0.10546875
    # - 0.03515625 = 0.4609375, and a1 = 3 - a0 = 2.5390625 by symmetry.
    w = resize_weights(4, 2, 0.5)
    expected_w0 = np.array([0.43359375 + 0.11328125, 0.43359375 - 0.03515625,
                            0.11328125 - 0.01171875, -0.03515625 - 0.01171875])
    np.testing.assert_allclose(w[0], expected_w0, rtol=0, atol=1e-15)
    a = t([0.4609375, 2.5390625])
    x = torch.arange(16, dtype=F64).view(1, 1, 4, 4)  # value 4 i + j
    expected = 4 * a[:, None] + a[None, :]  # separable: [[2.3046875, 4.3828125], [10.6171875, 12.6953125]]
    torch.testing.assert_close(expected, t([[2.3046875, 4.3828125], [10.6171875, 12.6953125]]))
    torch.testing.assert_close(imresize(x, 0.5)[0, 0], expected, rtol=0, atol=1e-12)


def test_upscale_two_4x4_ramp_hand_derived():
    # 1-D, scale 2 (no stretching): output x maps to u = x/2 + 0.25. Output 1: u = 0.75, taps
    # idx -1, 0, 1, 2 with cubic(1.75), cubic(0.75), cubic(0.25), cubic(1.25) =
    # -0.0234375, 0.2265625, 0.8671875, -0.0703125; symmetric padding maps idx -1 -> 2, 0 -> 1, so
    # on v = [0, 1, 2, 3] (v(idx) = idx - 1): -0.0234375 * 1 - 0.0703125 * 1 = -0.09375.
    # Output 2: u = 1.25, taps idx 0..3 weights -0.0703125, 0.8671875, 0.2265625, -0.0234375 on
    # values 0, 0, 1, 2 -> 0.1796875. Output 3: u = 1.75, taps 0..3 weights -0.0234375, 0.2265625,
    # 0.8671875, -0.0703125 on 0, 0, 1, 2 -> 0.7265625. Outputs 4, 5 are exact (1.25, 1.75) and the
    # rest follow from the mirror symmetry a[7 - k] = 3 - a[k].
    a = t([-0.09375, 0.1796875, 0.7265625, 1.25, 1.75, 2.2734375, 2.8203125, 3.09375])
    ramp = torch.arange(4, dtype=F64).view(1, 4)
    torch.testing.assert_close(imresize(ramp, size=(1, 8))[0], a, rtol=0, atol=1e-12)
    x = torch.arange(16, dtype=F64).view(4, 4)
    torch.testing.assert_close(imresize(x, 2.0), 4 * a[:, None] + a[None, :], rtol=0, atol=1e-12)


# --------------------------------------------------------------------- published MATLAB outputs
MATLAB_ANSWERS_1628 = t([
    [3.3109, 2.6187, 1.1206, 0.7166, 1.4067, 2.8883, 5.1615, 6.2060],
    [2.6454, 2.4435, 2.0052, 1.7138, 1.5692, 2.8062, 5.4248, 6.6307],
    [1.2008, 2.0609, 3.9181, 3.8763, 1.9355, 2.6382, 5.9844, 7.5302],
    [0.4985, 1.6796, 4.2357, 4.6921, 3.0489, 3.2618, 5.3307, 6.2876],
    [0.5384, 1.2996, 2.9579, 4.1612, 4.9094, 4.6769, 3.4639, 2.9028],
    [1.5500, 1.6768, 1.9697, 3.5367, 6.3776, 6.1378, 2.8173, 1.2798],
    [3.5334, 2.8110, 1.2710, 2.8185, 7.4537, 7.6444, 3.3907, 1.4186],
    [4.4466, 3.3344, 0.9529, 2.4891, 7.9430, 8.3334, 3.6605, 1.4930],
])


def test_matlab_bicubic_upscale_8x8_interior():
    a = t([[3, 1, 2, 6], [1, 5, 2, 7], [1, 3, 6, 2], [4, 1, 9, 2]])
    out = imresize(a, size=(8, 8))
    # first/last rows and columns use a tap outside the image (border handling differs, see top)
    torch.testing.assert_close(out[1:-1, 1:-1], MATLAB_ANSWERS_1628[1:-1, 1:-1], rtol=0, atol=6e-5)
    # the same numbers through the scale= path
    torch.testing.assert_close(imresize(a, 2.0), out)


def test_matlab_bicubic_upscale_1d():
    m = t([[0, 0, 1, 1, 0]])
    expected = t([[0, -0.0234, -0.0703, 0.2031, 0.7969, 1.0938, 1.0938, 0.7969, 0.2031]])
    out = imresize(m, size=(1, 10))
    torch.testing.assert_close(out[:, :9], expected, rtol=0, atol=6e-5)  # last entry: border tap
    assert out.min() < 0 and out.max() > 1  # overshoot is kept: no clipping


def test_bicubic_pytorch_documented_example():
    # bicubic_pytorch core.py docstring: imresize(arange(16).view(1, 1, 4, 4), sides=(3, 3)) =
    # [[0.7506, 2.1004, 3.4503], [6.1505, 7.5000, 8.8499], [11.5497, 12.8996, 14.2494]].
    # Entry [1, 0] is skipped: the input is 4 i + j, so out[1, 0] = out[0, 0] / 5 + 6 = 6.1501 by
    # the docstring's own [0, 0]; its printed 6.1505 is a typo. Replicate padding would give
    # out[0, 0] = 0.9161, so this case also pins the symmetric border.
    ref = t([[0.7506, 2.1004, 3.4503], [math.nan, 7.5000, 8.8499], [11.5497, 12.8996, 14.2494]])
    out = imresize(torch.arange(16, dtype=F64).view(1, 1, 4, 4), size=(3, 3))[0, 0]
    keep = ~torch.isnan(ref)
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=6e-5)


def test_matlab_bilinear_references():
    x = imresize(t([[1, 2], [3, 4]]), size=(4, 4), kernel="linear")
    torch.testing.assert_close(x, t([[1, 1.25, 1.75, 2], [1.5, 1.75, 2.25, 2.5],
                                     [2.5, 2.75, 3.25, 3.5], [3, 3.25, 3.75, 4]]))
    torch.testing.assert_close(imresize(x, size=(2, 2), kernel="linear"),
                               t([[1.5625, 2.1875], [2.8125, 3.4375]]))
    y = t([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(imresize(y, size=(2, 2), kernel="linear"),
                               t([[0.1094, 0.7656], [0.0156, 0.1094]]), rtol=0, atol=6e-5)
    torch.testing.assert_close(imresize(y, size=(2, 2), kernel="linear", antialias=False),
                               t([[0, 1], [0, 0]]))
    torch.testing.assert_close(imresize(t([[0, 0, 1, 1, 0]]), size=(1, 10), kernel="linear"),
                               t([[0, 0, 0, 0.25, 0.75, 1, 1, 0.75, 0.25, 0]]))
    torch.testing.assert_close(imresize(t([[0, 1, 2]]), size=(1, 5), kernel="linear"),
                               t([[0, 0.4, 1, 1.6, 2]]))


@pytest.mark.parametrize("size", [(12, 16), (24, 32), (96, 128)])
def test_interior_matches_pillow_float_bicubic(size):
    rng = np.random.default_rng(0)
    a = (rng.random((48, 64)) * 255).astype(np.float32)
    h, w = size
    ref = np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    out = imresize(torch.from_numpy(a).double(), size=size).numpy()
    m = 3 if h < 48 else 6  # skip the border, where Pillow renormalises instead of mirroring
    np.testing.assert_allclose(out[m:-m, m:-m], ref[m:-m, m:-m], rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("scale", [1 / 8, 1 / 4, 1 / 3, 0.7, 2.0, 3.5])
def test_constant_stays_constant(scale):
    x = torch.full((2, 3, 24, 18), 137.25, dtype=F64)
    out = imresize(x, scale)
    torch.testing.assert_close(out, torch.full_like(out, 137.25), rtol=0, atol=1e-10)
    out = imresize(x, size=(7, 13))
    torch.testing.assert_close(out, torch.full_like(out, 137.25), rtol=0, atol=1e-10)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_downscaled_plane_is_exact_away_from_borders(factor):
    n = 16 * factor
    i = torch.arange(n, dtype=F64)
    plane = 3.0 + 0.75 * i[:, None] - 1.25 * i[None, :]  # value at 0-based (r, c)
    out = imresize(plane, 1 / factor)
    # output x (1-based) samples u = x * factor - (factor - 1) / 2 (1-based), i.e. u - 1 0-based
    u = torch.arange(1, 17, dtype=F64) * factor - (factor - 1) / 2 - 1
    expected = 3.0 + 0.75 * u[:, None] - 1.25 * u[None, :]
    m = 3  # kernel half-width 2 * factor input pixels = 2 output pixels, plus one
    torch.testing.assert_close(out[m:-m, m:-m], expected[m:-m, m:-m], rtol=0, atol=1e-10)


def test_upscaled_ramp_is_exact_away_from_borders():
    ramp = torch.arange(10, dtype=F64).view(1, 10) * 2.5
    out = imresize(ramp, size=(1, 30))
    u = torch.arange(1, 31, dtype=F64) / 3 + 0.5 * (1 - 1 / 3) - 1
    torch.testing.assert_close(out[0, 6:-6], 2.5 * u[6:-6], rtol=0, atol=1e-10)


def test_weights_rows_sum_to_one():
    for n_in, n_out, s in [(160, 20, 1 / 8), (30, 10, 1 / 3), (7, 19, 19 / 7), (5, 5, 1.0)]:
        w = resize_weights(n_in, n_out, s)
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)


# ------------------------------------------------------------------------------ shapes and dtypes
def test_shapes():
    x = torch.rand(2, 3, 160, 160, dtype=F64)
    assert imresize(x, 1 / 8).shape == (2, 3, 20, 20)
    assert imresize(x, 1 / 4).shape == (2, 3, 40, 40)
    assert imresize(x[0], 1 / 8).shape == (3, 20, 20)
    assert imresize(x, size=(20, 20)).shape == (2, 3, 20, 20)
    assert imresize(torch.rand(1, 1, 30, 30), 1 / 4).shape == (1, 1, 8, 8)  # ceil(7.5), like MATLAB
    assert imresize(torch.rand(1, 1, 30, 33), 1 / 3).shape == (1, 1, 10, 11)  # no 10.000000001 -> 11
    assert imresize(torch.rand(3, 20, 15), 8.0).shape == (3, 160, 120)
    assert imresize(torch.rand(3, 20, 15), (0.5, 2.0)).shape == (3, 10, 30)


def test_lr_round_trip_relation_160_to_20():
    hr = torch.randint(0, 256, (3, 160, 160)).double()
    lr = imresize(hr, 1 / 8)
    up = imresize(lr, 8.0)
    assert lr.shape == (3, 20, 20) and up.shape == (3, 160, 160)
    # 8x8 block means of HR are close to LR (the antialiased kernel is a smooth low-pass)
    blocks = hr.view(3, 20, 8, 20, 8).mean((2, 4))
    assert (lr - blocks).abs().mean() < 30


def test_float32_matches_float64_and_dtype_kept():
    x = torch.rand(2, 3, 40, 40, dtype=F64) * 255
    y64 = imresize(x, 1 / 4)
    y32 = imresize(x.float(), 1 / 4)
    assert y32.dtype == torch.float32 and y64.dtype == F64
    torch.testing.assert_close(y32.double(), y64, rtol=1e-5, atol=1e-3)
    yb = imresize(x.to(torch.bfloat16), 1 / 4)
    assert yb.dtype == torch.bfloat16 and (yb.double() - y64).abs().max() < 2.0


def test_no_rounding_or_clipping():
    x = torch.zeros(1, 1, 8, 8, dtype=F64)
    x[..., 4:] = 255.0
    y = imresize(x, 2.0)
    assert y.min() < 0 and y.max() > 255
    assert not torch.equal(y, y.round())


def test_differentiable():
    x = torch.rand(1, 2, 6, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: imresize(v, 1 / 2), (x,))
    assert torch.autograd.gradcheck(lambda v: imresize(v, size=(9, 4)), (x,))


def test_on_device_matches_cpu(device):
    x = torch.rand(2, 3, 64, 48, dtype=torch.float32) * 255
    ref = imresize(x.double(), 1 / 8)
    out = imresize(x.to(device), 1 / 8)
    assert out.device.type == device.type
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=1e-3)


# ----------------------------------------------------------------------------------------- errors
def test_errors():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="exactly one of scale= or size="):
        imresize(x)
    with pytest.raises(ValueError, match="exactly one of scale= or size="):
        imresize(x, 0.5, size=(4, 4))
    with pytest.raises(ValueError, match="positive integers"):
        imresize(x, size=(4.5, 4))
    with pytest.raises(ValueError, match="positive integers"):
        imresize(x, size=(0, 4))
    with pytest.raises(ValueError, match="pair"):
        imresize(x, size=(4, 4, 4))
    with pytest.raises(ValueError, match="positive finite"):
        imresize(x, -0.5)
    with pytest.raises(ValueError, match="unknown kernel"):
        imresize(x, 0.5, kernel="lanczos")
    with pytest.raises(TypeError, match="floating-point"):
        imresize(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), 0.5)
    assert imresize(x, size=(4.0, 4)).shape == (1, 1, 4, 4)  # integral floats are fine
