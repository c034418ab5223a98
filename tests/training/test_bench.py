"""``attnflow.training.bench.training_step``: the step the benchmarks time does what a training step
does (loss of the given network, backward, clipping at norm 100, one optimiser step)."""

import torch

from attnflow.training.bench import training_step


class _Quadratic(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([3.0, -4.0], dtype=torch.float64))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return 1000.0 * (self.w * batch).sum()  # gradient 1000 * batch: norm 1000 * |batch|


def test_one_clipped_optimiser_step_of_the_given_network():
    model = _Quadratic()
    batch = torch.tensor([0.6, 0.8], dtype=torch.float64)
    step = training_step(model, batch, torch.optim.SGD(model.parameters(), lr=1.0))
    step()
    # gradient [600, 800] (norm 1000) clipped to norm 100: [60, 80]
    assert torch.allclose(model.w.detach(), torch.tensor([3.0 - 60.0, -4.0 - 80.0], dtype=torch.float64))
    step()  # gradients are reset between steps, not accumulated
    assert torch.allclose(model.w.detach(), torch.tensor([3.0 - 120.0, -4.0 - 160.0], dtype=torch.float64))


def test_the_loss_comes_from_net_and_the_clipping_from_model():
    model = _Quadratic()
    calls = []

    def net(batch):
        calls.append(batch)
        return model(batch) / 1000.0  # gradient [0.6, 0.8]: norm 1, not clipped

    batch = torch.tensor([0.6, 0.8], dtype=torch.float64)
    training_step(model, batch, torch.optim.SGD(model.parameters(), lr=1.0), net=net)()
    assert len(calls) == 1
    assert torch.allclose(model.w.detach(), torch.tensor([3.0 - 0.6, -4.0 - 0.8], dtype=torch.float64))
