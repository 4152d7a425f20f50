"""The weight average: the moving average's arithmetic, in the same tensors every step, and a restart."""

import torch

from cnn_mnist.model.network import ConvNet
from cnn_mnist.training.averaging import WeightAverage


def nudge(network: torch.nn.Module, seed: int) -> None:
    """What an optimizer step does to the live weights, near enough: each moves a little."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator), alpha=0.01)


def test_each_update_moves_the_average_toward_the_weights_by_one_minus_decay():
    network = ConvNet(generator=torch.Generator().manual_seed(0))
    average = WeightAverage(network, decay=0.9)
    expected = [p.detach().clone() for p in network.parameters()]
    for step in range(3):
        nudge(network, step)
        average.update()
        expected = [torch.lerp(old, new.detach(), 0.1) for old, new in zip(expected, network.parameters(), strict=True)]
    for mine, theirs in zip(average.network.parameters(), expected, strict=True):
        assert torch.equal(mine, theirs)  # the same arithmetic: bit for bit, not close
    assert not torch.equal(average.network.dense.weight, network.dense.weight)


def test_the_average_is_a_frozen_copy_updated_in_the_same_tensors():
    network = ConvNet(generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last)
    average = WeightAverage(network, decay=0.5)
    addresses = [p.data_ptr() for p in average.network.parameters()]
    assert not set(addresses) & {p.data_ptr() for p in network.parameters()}
    assert not any(p.requires_grad for p in average.network.parameters())
    assert average.network.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    nudge(network, 0)
    average.update()
    average.restart()
    # A captured CUDA graph replays the update at these addresses: they never change.
    assert [p.data_ptr() for p in average.network.parameters()] == addresses


def test_a_restart_starts_again_from_the_weights_as_they_are():
    network = ConvNet(generator=torch.Generator().manual_seed(0))
    average = WeightAverage(network, decay=0.9)
    nudge(network, 1)
    average.update()
    average.restart()
    assert average.state_dict().keys() == network.state_dict().keys()
    for name, value in network.state_dict().items():
        assert torch.equal(average.state_dict()[name], value), name
