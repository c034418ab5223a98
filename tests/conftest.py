"""Shared test options, fixtures and helpers.

Options: ``--device`` (cpu or cuda) and ``--dtype`` (float64, the default, or float32; the
brute-force layer checks use the ``check_tolerances`` of that dtype). Every test runs with one torch
thread: the tensors are tiny, so one thread is faster, and immune to oversubscription when other
processes compete for the cores (two OpenMP pools on a busy 2-core machine can be 100x slower).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnflow.core import initialize_data_dependent
from attnflow.testing import perturb_parameters, train_steps

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: brute-force check tolerances (rtol of the log-det, round-trip error) per dtype
TOLERANCES = {torch.float64: dict(rtol=1e-8, roundtrip_tol=1e-10), torch.float32: dict(rtol=2e-4, roundtrip_tol=2e-5)}


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for the tests: cpu (default) or cuda")
    parser.addoption("--dtype", default="float64", choices=sorted(DTYPES), help="dtype of the layer checks")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given but CUDA is not available")
    return dev


@pytest.fixture(scope="session")
def dtype(request) -> torch.dtype:
    return DTYPES[request.config.getoption("--dtype")]


@pytest.fixture(scope="session")
def check_tolerances(dtype) -> dict:
    """Keyword arguments of :func:`attnflow.testing.check_flow` for the session's dtype."""
    return dict(dtype=dtype, **TOLERANCES[dtype])


@pytest.fixture(autouse=True)
def _seed_and_single_thread():
    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def move_layer(layer, shape, device, cond=None, *, steps: int = 3, seed: int = 0, dtype=torch.float64):
    """A layer moved off its initialisation as training moves it: data-dependent init on random
    input, a small random perturbation, then a few Adam steps of maximum likelihood."""
    layer = layer.to(device=device, dtype=dtype)
    x = torch.randn(shape, dtype=dtype, device=device)
    initialize_data_dependent(layer, lambda: layer(x, cond))
    perturb_parameters(layer, 0.05, seed=seed)
    train_steps(layer, shape, cond=cond, steps=steps, lr=1e-2, seed=seed)
    return layer


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` imported as a module (the scripts are not a package); registered in
    ``sys.modules`` because dataclasses look their module up."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_cli(*args: str, check: bool = True, cwd=None, env_extra: dict | None = None, timeout: int = 600):
    """``attnflow ARGS`` in a subprocess (one OpenMP thread, unbuffered), as a user runs it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-m", "attnflow.cli", *args], capture_output=True, text=True,
        cwd=cwd if cwd is not None else ROOT, env=env, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"attnflow {' '.join(args)} failed ({proc.returncode}):\nstdout:\n{proc.stdout[-2000:]}\n"
            f"stderr:\n{proc.stderr[-3000:]}"
        )
    return proc


def nan_on(monkeypatch, steps: set[int] | None) -> None:
    """Make the model's training forward return NaN at the given (1-based) calls (all if None)."""
    from attnflow.models.multiscale import MultiScaleFlow

    original = MultiScaleFlow.forward
    counter = {"n": 0}

    def forward(self, batch):
        out = original(self, batch)
        if self.training and torch.is_grad_enabled():
            counter["n"] += 1
            if steps is None or counter["n"] in steps:
                return out * float("nan")
        return out

    monkeypatch.setattr(MultiScaleFlow, "forward", forward)


def interrupt_after_step(monkeypatch, step: int, *, times: int = 1):
    """Ctrl-C (SIGINT, ``times`` in a row) right after the training loop logs training step
    ``step``, as a user would press it mid-run; returns a function that stops doing so."""
    import attnflow.training.loop as loop

    original = loop.log_jsonl

    def log_and_interrupt(path, record):
        original(path, record)
        if record.get("step") == step and record.get("split") == "train":
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop, "log_jsonl", log_and_interrupt)
    return lambda: monkeypatch.setattr(loop, "log_jsonl", original)


def assert_same_checkpoints(a, b, *, optimizer: bool = True) -> None:
    """Two checkpoint files hold the same model (bit for bit) and, by default, optimiser state."""
    from attnflow.training.checkpoint import load_checkpoint

    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["model"].keys() == cb["model"].keys()
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]) if isinstance(v, torch.Tensor) else v == cb["model"][k], k
    if optimizer:
        sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
        assert sa.keys() == sb.keys()
        for i, state in sa.items():
            for name, v in state.items():
                assert torch.equal(v, sb[i][name]) if isinstance(v, torch.Tensor) else v == sb[i][name], (i, name)


#: overrides of the ``mnist`` preset that make a training step take a few milliseconds (levels=1)
TINY_MNIST = [
    "model.levels=1", "model.hidden=8", "model.blocks=1", "model.components=2", "model.prior_hidden=4",
    "model.prior_layers=1", "model.steps=1", "train.batch_size=8", "train.eval_batch_size=50",
    "train.eval_max_batches=1", "train.n_samples=4", "train.sample_temperatures=[0.7]",
    "train.warmup_steps=2",
]


def tiny_mnist_config(steps: int, *extra: str) -> dict:
    """The ``mnist`` preset with :data:`TINY_MNIST`, ``steps`` training steps and ``extra`` overrides."""
    from attnflow.config import apply_overrides, load_preset

    return apply_overrides(load_preset("mnist"), [*TINY_MNIST, f"train.steps={steps}", *extra])


#: a tiny model of every family (model sections; tests build them with ``tiny_model_config``)
TINY_MODELS = {
    "marflow": dict(image_shape=[1, 8, 8], levels=2, steps=2, hidden=8, components=3, blocks=1,
                    coupling_heads=2, dropout=0.0, prior_hidden=4, prior_layers=1, attention="imap"),
    "glow": dict(image_shape=[3, 8, 8], levels=2, steps=2, hidden=8, prior="gaussian", attention="itrans",
                 heads=2, patches=[4, 4]),
    "srflow": dict(image_shape=[3, 16, 16], scale=4, levels=2, steps=2, hidden=8, attention="imap",
                   cond={"features": 8, "blocks": 2, "growth": 4, "taps": [0, 1]}),
    "fullglow": dict(image_shape=[3, 8, 8], levels=2, steps=2, hidden=8, attention="itrans", heads=2,
                     patches=[4, 1], cond={"cond_hidden": 8, "cond_mlp": [4]}),
}


def tiny_model_config(backbone: str, **model) -> dict:
    """A full config of the tiny ``backbone`` model, ``model`` keys overriding."""
    from attnflow.config import DEFAULTS, merge

    return merge(DEFAULTS, {"model": {"backbone": backbone, **TINY_MODELS[backbone], **model}})
