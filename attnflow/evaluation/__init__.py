"""Evaluation: likelihood (bits/dim), image metrics (PSNR, SSIM, LR-PSNR), LPIPS, FID / KID / IS,
super-resolution evaluation and MATLAB-compatible ``imresize``.

Nothing here imports a model or training code: every function takes a model through its contract
(:class:`attnflow.models.FlowModel`: ``bits_per_dim``, ``sample``, ``super_resolve``). Pretrained
networks (AlexNet for LPIPS, Inception-v3 for FID/KID/IS) are never downloaded: their weights come
from a path the user gives, and a missing path is a :class:`MissingWeightsError` that says which
file to supply and where it comes from.
"""

from .image_metrics import lr_psnr, psnr, ssim
from .imresize import imresize
from .likelihood import bits_per_dim, evaluate_bpd, evaluate_metric
from .lpips import LPIPS, to_lpips_range
from .sample_quality import InceptionExtractor, SampleQuality, fid_kid_is, load_inception, sample_quality
from .super_resolution import DEFAULT_TEMPERATURES, SR_DATASETS, evaluate_sr, format_sr_table
from .weights import MissingWeightsError

__all__ = [
    "bits_per_dim",
    "evaluate_bpd",
    "evaluate_metric",
    "psnr",
    "ssim",
    "lr_psnr",
    "imresize",
    "LPIPS",
    "to_lpips_range",
    "InceptionExtractor",
    "SampleQuality",
    "fid_kid_is",
    "load_inception",
    "sample_quality",
    "DEFAULT_TEMPERATURES",
    "SR_DATASETS",
    "evaluate_sr",
    "format_sr_table",
    "MissingWeightsError",
]
