"""The tutorial's network: exact size, accepted input shapes, dropout only in training, TF initialisation."""

import math

import pytest
import torch

from cnn_mnist.kernels.cpu import fast_linear
from cnn_mnist.model.network import NUM_PARAMETERS, STAGE_LABELS, ConvNet, as_image_batch, count_parameters


def test_parameter_count_is_the_tutorials():
    assert NUM_PARAMETERS == 3_274_634
    assert count_parameters(ConvNet()) == NUM_PARAMETERS


def test_layers_are_the_tutorials():
    net = ConvNet()
    assert (net.conv1.in_channels, net.conv1.out_channels, net.conv1.kernel_size) == (1, 32, (5, 5))
    assert (net.conv2.in_channels, net.conv2.out_channels, net.conv2.kernel_size) == (32, 64, (5, 5))
    assert (net.dense.in_features, net.dense.out_features) == (7 * 7 * 64, 1024)
    assert (net.logits.in_features, net.logits.out_features) == (1024, 10)
    assert net.dropout.p == 0.4
    x = torch.rand(2, 1, 28, 28)
    assert net.conv1(x).shape == (2, 32, 28, 28)  # 'same' padding
    assert net.pool(net.conv1(x)).shape == (2, 32, 14, 14)


@pytest.mark.parametrize("shape", [(3, 784), (3, 28, 28), (3, 1, 28, 28)])
def test_accepts_the_three_image_layouts(shape):
    images = torch.rand(*shape)
    net = ConvNet().eval()
    logits = net(images)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, net(images.reshape(3, 1, 28, 28)))


@pytest.mark.parametrize("shape", [(3, 783), (3, 28, 27), (3, 3, 28, 28), (784,)])
def test_rejects_other_shapes_with_the_accepted_ones_named(shape):
    with pytest.raises(ValueError, match=r"\(N, 784\), \(N, 28, 28\) or \(N, 1, 28, 28\)"):
        ConvNet()(torch.rand(*shape))


def test_uint8_pixels_are_scaled_to_unit_range():
    pixels = torch.tensor([[0, 51, 255]], dtype=torch.uint8).repeat(1, 262)[:, :784]
    batch = as_image_batch(pixels)
    assert batch.dtype == torch.float32 and batch.shape == (1, 1, 28, 28)
    assert batch.max() == 1.0 and batch.min() == 0.0
    assert batch.flatten()[1] == pytest.approx(0.2)


def test_dropout_is_active_in_training_only():
    net = ConvNet()
    images = torch.rand(4, 784)
    net.eval()
    torch.testing.assert_close(net(images), net(images))
    net.train()
    assert not torch.equal(net(images), net(images))


def test_initialisation_is_glorot_uniform_with_zero_biases():
    net = ConvNet(generator=torch.Generator().manual_seed(0))
    for layer, fan_in, fan_out in [(net.conv1, 25, 25 * 32), (net.conv2, 25 * 32, 25 * 64),
                                   (net.dense, 3136, 1024), (net.logits, 1024, 10)]:
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= limit
        assert layer.weight.abs().max() > 0.95 * limit  # uniform over the whole range, not a narrower one
        assert torch.count_nonzero(layer.bias) == 0


def test_same_generator_seed_gives_same_weights():
    a = ConvNet(generator=torch.Generator().manual_seed(3))
    b = ConvNet(generator=torch.Generator().manual_seed(3))
    c = ConvNet(generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.dense.weight, b.dense.weight)
    assert not torch.equal(a.dense.weight, c.dense.weight)


def test_pytorch_initializer_gives_pytorchs_smaller_default_weights():
    glorot = ConvNet(generator=torch.Generator().manual_seed(0))
    default = ConvNet(generator=torch.Generator().manual_seed(0), initializer="pytorch")
    # nn.Linear's default bound is 1/sqrt(fan_in), well under Glorot's sqrt(6/(fan_in+fan_out)), and biases are not 0
    assert default.dense.weight.abs().max() <= 1 / math.sqrt(3136)
    assert glorot.dense.weight.abs().max() > 1.5 * default.dense.weight.abs().max()
    assert torch.count_nonzero(default.dense.bias) > 0
    again = ConvNet(generator=torch.Generator().manual_seed(0), initializer="pytorch")
    assert torch.equal(default.conv1.weight, again.conv1.weight)
    with pytest.raises(ValueError, match="initializer"):
        ConvNet(initializer="he")


def test_pooling_before_relu_matches_the_tutorials_order_in_values_and_gradients():
    net = ConvNet().eval()
    images = torch.rand(4, 1, 28, 28, requires_grad=True)

    def tutorial_order(x):  # conv -> ReLU -> pool, as the tutorial wrote it
        x = net.pool(torch.relu(net.conv1(x)))
        x = net.pool(torch.relu(net.conv2(x)))
        x = x.permute(0, 2, 3, 1).flatten(1)  # (7, 7, 64) row by row, as TensorFlow flattened NHWC
        return net.logits(torch.relu(fast_linear.linear(x, net.dense.weight, net.dense.bias)))

    ours, theirs = net(images), tutorial_order(images)
    assert torch.equal(ours, theirs)
    (grad_ours,) = torch.autograd.grad(ours.sum(), images)
    (grad_theirs,) = torch.autograd.grad(theirs.sum(), images)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=0, atol=1e-7)


def test_dense_layer_reads_the_feature_map_row_by_row_like_tensorflow():
    # TensorFlow reshaped the (N, 7, 7, 64) NHWC map: input column (h * 7 + w) * 64 + c.
    net = ConvNet().eval()
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        x = torch.relu(net.pool(net.conv2(torch.relu(net.pool(net.conv1(images))))))  # (3, 64, 7, 7)
        h, w, c = 2, 5, 17
        column = (h * 7 + w) * 64 + c
        probe = torch.zeros(3136)
        probe[column] = 1.0
        dense_in = x.permute(0, 2, 3, 1).reshape(3, -1)
        assert torch.equal(dense_in @ probe, x[:, c, h, w])
        torch.testing.assert_close(net(images), net.logits(torch.relu(dense_in @ net.dense.weight.T + net.dense.bias)))


def test_dropout_drops_the_rate_and_scales_the_rest_only_in_training():
    net = ConvNet(dropout_rate=0.4)
    x = torch.ones(200, 1024)
    net.train()
    out = net._dropout(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.6) < 0.01  # 204,800 draws: 0.01 is > 10 standard deviations
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.6))
    assert not torch.equal(net._dropout(x), out)  # a fresh mask each call
    net.eval()
    assert torch.equal(net._dropout(x), x)
    assert torch.equal(ConvNet(dropout_rate=0.0).train()._dropout(x), x)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_pooling_kernel_changes_no_value_and_no_gradient_of_a_training_step(precision, monkeypatch):
    from cnn_mnist.kernels.cpu import native, pool_relu
    from cnn_mnist.kernels.precision import autocast

    if native.library("pool_relu") is None:
        pytest.skip("no C compiler: the pooling kernel is off")
    images = torch.randint(0, 256, (16, 784), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    def one_step():
        net = ConvNet(generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last).train()
        torch.manual_seed(5)  # the same dropout mask both times
        with autocast(precision):
            logits = net(images).float()
        logits.logsumexp(1).sum().backward()
        return [logits] + [p.grad for p in net.parameters()]

    with_kernel = one_step()
    assert pool_relu._loaded and pool_relu._loaded[0] is not None  # the kernel ran
    monkeypatch.setattr(pool_relu, "_loaded", [None])  # PyTorch's max_pool2d and relu instead
    without_kernel = one_step()
    for ours, theirs in zip(with_kernel, without_kernel, strict=True):
        assert torch.equal(ours, theirs)


def test_the_summary_is_the_tutorials_network_layer_by_layer():
    network = ConvNet().train()
    before = torch.random.get_rng_state()
    summary = network.summary()
    assert network.training and torch.equal(torch.random.get_rng_state(), before)  # no dropout draw, mode kept
    assert [(layer.name, layer.output) for layer in summary.layers] == [
        ("input", (28, 28, 1)), ("conv1", (28, 28, 32)), ("pool1", (14, 14, 32)), ("conv2", (14, 14, 64)),
        ("pool2", (7, 7, 64)), ("flatten", (3136,)), ("dense", (1024,)), ("dropout", (1024,)), ("logits", (10,))]
    assert summary.parameters == NUM_PARAMETERS == count_parameters(network)
    assert [layer.parameters for layer in summary.layers if layer.parameters] == [832, 51_264, 3_212_288, 10_250]
    assert str(summary).splitlines()[-1].split() == ["total", "3,274,634"]
    assert summary._repr_markdown_().splitlines()[-1] == "| total |  |  | 3,274,634 |"


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels-last"])
def test_the_stages_are_the_forward_spelt_out(channels_last):
    network = ConvNet(generator=torch.Generator().manual_seed(0)).eval()
    if channels_last:  # as the Estimator and the Predictor keep it
        network = network.to(memory_format=torch.channels_last)
    images = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        stages = network.stages(images)
        logits = network(images)
    assert [(stage.name, stage.label) for stage in stages] == list(STAGE_LABELS.items())
    for stage in stages:  # each label gives its stage's shape, in TensorFlow's (height, width, channels) order
        shape = stage.output.shape[1:]
        nhwc = (*shape[1:], shape[0]) if len(shape) == 3 else tuple(shape)
        assert stage.label.endswith(f"[batch, {', '.join(map(str, nhwc))}]"), stage.label
    assert torch.equal(stages[-1].output, logits)  # the forward's logits, bit for bit


def test_in_training_the_stages_drop_out_as_the_forward_does():
    network = ConvNet(generator=torch.Generator().manual_seed(0)).train()
    images = torch.rand(4, 1, 28, 28)
    torch.manual_seed(7)
    logits = network(images)
    torch.manual_seed(7)
    assert torch.equal(network.stages(images)[-1].output, logits)
