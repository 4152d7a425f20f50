"""One model function, three modes: what each returns."""

import pytest
import torch

from cnn_mnist.model.config import ModelParams
from cnn_mnist.model.model_fn import Mode, build_optimizer, cnn_model_fn, jensen_shannon, learning_rate_at
from cnn_mnist.model.network import ConvNet


@pytest.fixture
def batch():
    return torch.rand(8, 28, 28), torch.randint(0, 10, (8,))


def test_predict_returns_classes_and_probabilities_only(batch):
    images, _ = batch
    spec = cnn_model_fn(ConvNet(), images, None, Mode.PREDICT)
    assert spec.loss is None and not spec.eval_metrics
    probabilities = spec.predictions["probabilities"]
    assert probabilities.shape == (8, 10)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(8))
    assert torch.equal(spec.predictions["classes"], probabilities.argmax(dim=1))


def test_train_returns_a_differentiable_cross_entropy_loss_with_dropout_on(batch):
    images, labels = batch
    net = ConvNet()
    spec = cnn_model_fn(net, images, labels, Mode.TRAIN)
    assert net.training
    logits = torch.log(spec.predictions["probabilities"])
    torch.testing.assert_close(spec.loss, torch.nn.functional.nll_loss(logits, labels), rtol=1e-4, atol=1e-5)
    spec.loss.backward()
    assert net.conv1.weight.grad is not None


def test_eval_has_per_example_accuracy_and_dropout_off(batch):
    images, labels = batch
    net = ConvNet()
    spec = cnn_model_fn(net, images, labels, Mode.EVAL)
    assert not net.training
    expected = (spec.predictions["classes"] == labels).float()
    assert torch.equal(spec.eval_metrics["accuracy"], expected)
    again = cnn_model_fn(net, images, labels, Mode.EVAL)
    assert torch.equal(spec.loss, again.loss)  # deterministic without dropout


def test_label_smoothing_changes_the_training_loss_only(batch):
    images, labels = batch
    net = ConvNet()
    params = ModelParams(label_smoothing=0.1)
    train = cnn_model_fn(net.eval(), images, labels, Mode.TRAIN, params=params)  # dropout is drawn: compare
    log_probabilities = torch.log(train.predictions["probabilities"])  # with what this pass computed
    smoothed = 0.9 * torch.nn.functional.nll_loss(log_probabilities, labels) - 0.1 * log_probabilities.mean(1).mean()
    torch.testing.assert_close(train.loss, smoothed, rtol=1e-4, atol=1e-5)
    evaluated = cnn_model_fn(net, images, labels, Mode.EVAL, params=params)
    plain = cnn_model_fn(net, images, labels, Mode.EVAL)
    assert torch.equal(evaluated.loss, plain.loss)  # evaluation losses stay comparable across recipes


def test_jensen_shannon_is_zero_for_agreeing_views_and_at_most_log_2_for_two():
    logits = torch.randn(7, 10)
    assert float(jensen_shannon(torch.stack([logits, logits]))) == pytest.approx(0, abs=1e-6)
    apart = torch.full((2, 1, 10), -50.0)
    apart[0, 0, 3] = apart[1, 0, 5] = 50.0  # certain of different classes
    assert float(jensen_shannon(apart)) == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-5)
    p, q = torch.softmax(logits, -1), torch.softmax(logits.flip(0), -1)
    m = (p + q) / 2
    expected = ((p * (p / m).log()).sum(-1) + (q * (q / m).log()).sum(-1)).mean() / 2
    torch.testing.assert_close(jensen_shannon(torch.stack([logits, logits.flip(0)])), expected)


def test_two_views_learn_labels_from_the_clean_one_and_agreement_from_both(batch):
    images, labels = batch
    views = torch.stack([images, 1 - images], 1).unsqueeze(2)  # (8, 2, 1, 28, 28)
    net = ConvNet(dropout_rate=0.0)  # no dropout, so passes can be compared
    plain = cnn_model_fn(net, views, labels, Mode.TRAIN, params=ModelParams(label_smoothing=0.1))
    clean = cnn_model_fn(net, views[:, 0], labels, Mode.TRAIN, params=ModelParams(label_smoothing=0.1))
    torch.testing.assert_close(plain.loss, clean.loss, rtol=1e-4, atol=1e-5)
    consistent = cnn_model_fn(net, views, labels, Mode.TRAIN, params=ModelParams(label_smoothing=0.1,
                                                                                  consistency=2.0))
    logits = torch.stack([net(views[:, v]) for v in (0, 1)])
    torch.testing.assert_close(consistent.loss, plain.loss + 2.0 * jensen_shannon(logits), rtol=1e-4, atol=1e-5)
    first = cnn_model_fn(net, views[:, 0], labels, Mode.PREDICT)  # predictions: the first view's
    torch.testing.assert_close(consistent.predictions["probabilities"], first.predictions["probabilities"])
    consistent.loss.backward()
    assert net.conv1.weight.grad is not None


@pytest.mark.parametrize("name, kind, extra", [("sgd", torch.optim.SGD, {"momentum": 0}),
                                               ("momentum", torch.optim.SGD, {"momentum": 0.9}),
                                               ("adam", torch.optim.Adam, {"eps": 1e-8})])
def test_optimizers(name, kind, extra):
    optimizer = build_optimizer(ConvNet().parameters(), ModelParams(optimizer=name, learning_rate=0.01))
    assert isinstance(optimizer, kind)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01
    for key, value in extra.items():
        assert group[key] == value


def test_constant_schedule_is_the_learning_rate():
    params = ModelParams(learning_rate=0.001)
    assert [learning_rate_at(step, 100, params) for step in (0, 50, 99)] == [0.001] * 3


def test_one_cycle_warms_up_then_decays_to_zero_at_the_last_step():
    params = ModelParams(learning_rate=0.01, lr_schedule="one_cycle", warmup_fraction=0.2)
    rates = [learning_rate_at(step, 100, params) for step in range(100)]
    assert rates[0] == pytest.approx(0.01 / 20) and rates[19] == pytest.approx(0.01)
    assert max(rates) == pytest.approx(0.01)
    assert rates[20:] == sorted(rates[20:], reverse=True) and rates[99] == pytest.approx(0.01 / 80)
    assert learning_rate_at(100, 100, params) == 0
