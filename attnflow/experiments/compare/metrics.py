"""What a comparison measures besides the test bits/dim every task has, per ``model.task``."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TASK_METRICS", "SR_COLUMNS", "COLUMNS", "task_metrics", "bicubic_metrics"]

#: super-resolution metric -> its column title in the table
SR_COLUMNS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lr_psnr": "LR-PSNR (dB)"}
#: model.task -> the extra columns of its table
COLUMNS = {"super_resolution": SR_COLUMNS}


def _test_data(config: dict):
    from ...data import dataset_from_config

    return dataset_from_config(config["data"], config["data"]["test_split"], config["model"]["image_shape"])


def _no_metrics(model, config: dict, device, options: dict) -> dict:
    return {}


def _sr_metrics(model, config: dict, device, options: dict) -> dict:
    """PSNR, SSIM and LR-PSNR of SR samples averaged over temperatures, on the test split."""
    from ...evaluation import evaluate_sr

    t = config["train"]
    result = evaluate_sr(model, _test_data(config), temperatures=options["sr_temperatures"], device=device,
                         batch_size=t["eval_batch_size"], max_batches=t["eval_max_batches"],
                         seed=t["seed"], bits_per_dim=False)
    return {k: result["mean"][k] for k in SR_COLUMNS}


#: model.task -> function ``(model, config, device, options) -> {metric: value}`` of a trained run
TASK_METRICS: dict[str, Callable[..., dict]] = {
    "generation": _no_metrics,
    "translation": _no_metrics,
    "super_resolution": _sr_metrics,
}


def task_metrics(model, config: dict, device, options: dict) -> dict:
    """The metrics of ``model.task`` (:data:`TASK_METRICS`; none for a task not listed)."""
    return TASK_METRICS.get(model.task, _no_metrics)(model, config, device, options)


def bicubic_metrics(config: dict) -> dict:
    """PSNR, SSIM and LR-PSNR of bicubic upscaling (MATLAB ``imresize``) on the test split."""
    from ...evaluation.super_resolution import evaluate_bicubic

    t = config["train"]
    result = evaluate_bicubic(_test_data(config), config["model"]["scale"],
                              batch_size=t["eval_batch_size"], max_batches=t["eval_max_batches"])
    return {k: result[k] for k in SR_COLUMNS}
