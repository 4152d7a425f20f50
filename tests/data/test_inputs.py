"""Input functions: index-slice batches, shuffling per epoch, order kept for evaluation, exact resume."""

import torch

from cnn_mnist.data.inputs import numpy_input_fn


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_each_shuffled_epoch_covers_every_example_once_in_a_new_order():
    images = torch.arange(50).reshape(50, 1).to(torch.uint8)
    stream = numpy_input_fn(images, torch.arange(50), batch_size=10, num_epochs=None, seed=1)()
    first = torch.cat([labels for _, labels in take(stream, 5)])
    second = torch.cat([labels for _, labels in take(stream, 5)])
    assert sorted(first.tolist()) == list(range(50)) == sorted(second.tolist())
    assert not torch.equal(first, second) and not torch.equal(first, torch.arange(50))


def test_images_and_labels_stay_paired():
    images = torch.arange(30).reshape(30, 1)
    stream = numpy_input_fn({"x": images}, torch.arange(30), batch_size=7, num_epochs=None)()
    for batch_images, batch_labels in take(stream, 10):
        assert torch.equal(batch_images.flatten(), batch_labels)


def test_same_seed_same_order_other_seed_other_order():
    def order(seed):
        stream = numpy_input_fn(torch.zeros(40, 1), torch.arange(40), batch_size=40, seed=seed)()
        return next(stream)[1]

    assert torch.equal(order(0), order(0)) and not torch.equal(order(0), order(1))


def test_repeating_batches_span_the_epoch_boundary():
    stream = numpy_input_fn(torch.zeros(25, 1), torch.arange(25), batch_size=10, num_epochs=None)()
    sizes = [len(labels) for _, labels in take(stream, 5)]
    assert sizes == [10] * 5 and stream.epoch == 2 and stream.offset == 0


def test_one_unshuffled_epoch_keeps_order_and_the_last_partial_batch():
    stream = numpy_input_fn(torch.zeros(25, 1), torch.arange(25), batch_size=10, num_epochs=1, shuffle=False)()
    batches = [labels for _, labels in stream]
    assert [len(b) for b in batches] == [10, 10, 5]
    assert torch.equal(torch.cat(batches), torch.arange(25))


def test_images_only_input_yields_no_labels():
    stream = numpy_input_fn(torch.zeros(3, 784), batch_size=2, shuffle=False)()
    assert [labels for _, labels in stream] == [None, None]


def test_restored_position_continues_with_the_same_batches():
    make = numpy_input_fn(torch.zeros(33, 1), torch.arange(33), batch_size=8, num_epochs=None, seed=5)
    uninterrupted = make()
    expected = [labels for _, labels in take(uninterrupted, 12)]
    first = make()
    take(first, 5)
    resumed = make()
    assert resumed.load_state_dict(first.state_dict())
    continued = [labels for _, labels in take(resumed, 7)]
    for a, b in zip(expected[5:], continued, strict=True):
        assert torch.equal(a, b)


def test_position_of_other_data_is_not_applied():
    state = numpy_input_fn(torch.zeros(10, 1), torch.arange(10), batch_size=4, seed=0)().state_dict()
    other = numpy_input_fn(torch.zeros(11, 1), torch.arange(11), batch_size=4, seed=0)()
    assert not other.load_state_dict({**state, "offset": 4})
    assert (other.epoch, other.offset) == (0, 0)


def test_a_stream_moved_to_its_own_device_is_itself():
    stream = numpy_input_fn(torch.zeros(10, 1), torch.arange(10), batch_size=4)()
    assert stream.to("cpu") is stream and stream.to(torch.device("cpu")) is stream


def test_a_moved_stream_keeps_its_position_and_draws_on_the_new_device():
    """The meta device stands in for a GPU: the copy holds its arrays there, at the same position."""
    stream = numpy_input_fn(torch.zeros(10, 1), torch.arange(10), batch_size=4, seed=3)()
    take(stream, 3)
    moved = stream.to("meta")
    assert moved is not stream and moved.images.device.type == moved.labels.device.type == "meta"
    assert (moved.epoch, moved.offset, moved.seed, moved.batch_size) == (stream.epoch, stream.offset, 3, 4)
    assert moved.state_dict() == stream.state_dict()
