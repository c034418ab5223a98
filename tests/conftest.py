"""Shared test options: ``--device`` (cpu or cuda) and float64 by default."""

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for the tests: cpu (default) or cuda")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("--device cuda given but CUDA is not available")
    return dev


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
