"""MATLAB-compatible bicubic resizing (``imresize(x, scale, 'bicubic')``) in pure PyTorch.

Super-resolution papers (SRFlow, and the paper's 8x CelebA setting) make their low-resolution
inputs with MATLAB's ``imresize``; PyTorch's / OpenCV's bicubic use a different kernel (a = -0.75),
no antialiasing and different boundary handling, which shifts PSNR by a visible amount. This module
reproduces MATLAB's algorithm:

* Keys cubic convolution kernel with a = -0.5 (support [-2, 2]);
* when downscaling (scale < 1) with ``antialias=True`` the kernel is stretched by ``1/scale``
  (``h(t) = scale * cubic(scale * t)``, support ``4/scale``), exactly as MATLAB does;
* output pixel ``x`` (1-based) samples the input at ``u = x/scale + 0.5 * (1 - 1/scale)``;
  the taps are ``floor(u - width/2) + 0 .. ceil(width) + 1``;
* the weights of every output pixel are normalised to sum to one;
* out-of-range taps are mirrored *with* edge repetition (MATLAB's ``symmetric`` padding:
  ``... 2 1 | 1 2 3 ... n | n n-1 ...``);
* the two spatial dimensions are resized separately, the one with the smaller scale first
  (MATLAB's order; in floating point the order only affects the last bits).

Border note: MATLAB outputs published in 2011 and 2013 (see ``tests/test_imresize.py``) match
*replicate* padding (out-of-range taps clamped to the edge pixel); current MATLAB and the
MATLAB-verified ports (e.g. bicubic_pytorch, checked against R2019b) mirror
them as above. The two only differ in output pixels whose kernel reaches outside the image.

The resize is a pair of matrix products with precomputed (float64, cached) weight matrices, so it is
differentiable, works on any float dtype and device, and never rounds or clips: callers that want
uint8 do ``x.add(0.5).floor().clamp(0, 255)`` themselves (see :func:`attnflow.data.common.to_uint8`).

When ``scale`` is given the output size is ``ceil(in * scale)`` (MATLAB's rule) and the index
mapping uses ``scale`` itself; when ``size`` is given the scale of each dimension is ``out / in``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["imresize", "cubic", "triangle", "resize_weights", "KERNELS"]


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys (1981) cubic convolution kernel with a = -0.5, MATLAB's ``cubic``."""
    at = np.abs(t)
    at2 = at * at
    at3 = at2 * at
    inner = 1.5 * at3 - 2.5 * at2 + 1.0
    outer = -0.5 * at3 + 2.5 * at2 - 4.0 * at + 2.0
    return np.where(at <= 1.0, inner, np.where(at <= 2.0, outer, 0.0))


def triangle(t: np.ndarray) -> np.ndarray:
    """Linear (tent) kernel, MATLAB's ``triangle`` used by ``imresize(..., 'bilinear')``."""
    return np.clip(1.0 - np.abs(t), 0.0, None)


# name -> (kernel, support width); "cubic" is the default and what the paper's SR setting uses.
KERNELS = {"cubic": (cubic, 4.0), "linear": (triangle, 2.0)}


@functools.lru_cache(maxsize=128)
def _weights_cached(
    in_len: int, out_len: int, scale: float, antialias: bool, kernel_name: str
) -> np.ndarray:
    base, width = KERNELS[kernel_name]
    if scale < 1.0 and antialias:
        width = width / scale

        def kernel(t: np.ndarray) -> np.ndarray:
            return scale * base(scale * t)
    else:
        kernel = base
    x = np.arange(1, out_len + 1, dtype=np.float64)  # 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # matching input coordinate (1-based)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input indices
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    # symmetric (edge-repeating) mirror: 0-based index m -> m in [0, n), else reflect with repeat
    m = np.mod(idx.astype(np.int64) - 1, 2 * in_len)
    m = np.where(m >= in_len, 2 * in_len - 1 - m, m)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], m.shape)
    np.add.at(mat, (rows, m), w)
    mat.setflags(write=False)
    return mat


def resize_weights(
    in_len: int, out_len: int, scale: float, antialias: bool = True, kernel: str = "cubic"
) -> np.ndarray:
    """The ``[out_len, in_len]`` float64 matrix that resizes one dimension (read-only, cached)."""
    if kernel not in KERNELS:
        raise ValueError(f"imresize: unknown kernel {kernel!r}; valid: {sorted(KERNELS)}")
    return _weights_cached(int(in_len), int(out_len), float(scale), bool(antialias), kernel)


def _as_pair(value, name: str) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"imresize: {name} must be a number or a pair (H, W), got {value!r}")
        return tuple(value)
    return (value, value)


def _integral(v, name: str) -> int:
    if isinstance(v, bool):
        raise ValueError(f"imresize: size entries must be positive integers, got {name}={v!r}")
    if isinstance(v, (int, np.integer)):
        iv = int(v)
    elif isinstance(v, (float, np.floating)) and float(v).is_integer():
        iv = int(v)
    elif isinstance(v, Tensor) and v.numel() == 1 and float(v.item()).is_integer():
        iv = int(v.item())
    else:
        raise ValueError(f"imresize: size entries must be positive integers, got {name}={v!r}")
    if iv <= 0:
        raise ValueError(f"imresize: size entries must be positive integers, got {name}={v!r}")
    return iv


def imresize(
    x: Tensor,
    scale: float | Sequence[float] | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
    kernel: str = "cubic",
) -> Tensor:
    """Resize the last two dimensions of ``x`` like MATLAB's ``imresize(x, ..., 'bicubic')``.

    Args:
        x: float tensor ``[B, C, H, W]`` or ``[C, H, W]`` (any leading dims; ``[H, W]`` works too).
        scale: resize factor (e.g. ``1/8``), or a pair ``(scale_h, scale_w)``. Output size is
            ``ceil(H * scale)``.
        size: output ``(H_out, W_out)``; exactly one of ``scale`` / ``size`` must be given.
        antialias: stretch the kernel when downscaling (MATLAB's default, ``True``).
        kernel: ``"cubic"`` (MATLAB ``'bicubic'``, the default) or ``"linear"`` (MATLAB
            ``'bilinear'``, same machinery with the tent kernel; mostly useful for checking).

    Returns:
        A tensor of the same dtype and device, not rounded or clipped.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale= or size= (got "
                         f"scale={scale!r}, size={size!r})")
    if kernel not in KERNELS:
        raise ValueError(f"imresize: unknown kernel {kernel!r}; valid: {sorted(KERNELS)}")
    if not isinstance(x, Tensor):
        raise TypeError(f"imresize: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"imresize: expected a floating-point tensor, got dtype {x.dtype}; "
                        "convert first (e.g. x.double()) and round/clip the result yourself")
    if x.dim() < 2:
        raise ValueError(f"imresize: expected [B, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    if in_h == 0 or in_w == 0:
        raise ValueError(f"imresize: empty spatial size {tuple(x.shape)}")
    if size is not None:
        sh, sw = _as_pair(size, "size")
        out_h, out_w = _integral(sh, "H"), _integral(sw, "W")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    else:
        scale_h, scale_w = (float(s) for s in _as_pair(scale, "scale"))
        for s in (scale_h, scale_w):
            if not math.isfinite(s) or s <= 0:
                raise ValueError(f"imresize: scale must be a positive finite number, got {scale!r}")
        # MATLAB: ceil(in * scale); the small tolerance keeps e.g. 30 * (1/3) at 10, not 11.
        out_h = max(1, int(math.ceil(in_h * scale_h - 1e-9)))
        out_w = max(1, int(math.ceil(in_w * scale_w - 1e-9)))

    out = x
    dims = [(scale_h, -2, in_h, out_h), (scale_w, -1, in_w, out_w)]
    dims.sort(key=lambda d: d[0])  # MATLAB resizes the dimension with the smaller scale first
    for s, dim, n_in, n_out in dims:
        if n_in == n_out and s == 1.0:
            continue  # identity weights
        mat = torch.from_numpy(resize_weights(n_in, n_out, s, antialias, kernel).copy())
        mat = mat.to(device=x.device, dtype=x.dtype)
        if dim == -2:
            out = torch.matmul(mat, out)
        else:
            out = torch.matmul(out, mat.transpose(0, 1))
    if out is x:
        out = x.clone()
    return out
