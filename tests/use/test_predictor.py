"""use/predictor.py: the weights it answers with, and a Prediction as a notebook shows it (answers
themselves are checked by every answering test: test_answers, test_service, test_cli)."""

import numpy as np
import pytest
from helpers import tf32_allowed, tf32_flags

from cnn_mnist import Estimator, ModelParams, RunConfig, load_mnist, numpy_input_fn
from cnn_mnist.use.explain import explain
from cnn_mnist.use.predictor import Prediction, Predictor


@pytest.fixture(scope="module")
def mnist(tiny_mnist_dir):
    return load_mnist(tiny_mnist_dir, download=False)


@pytest.fixture(scope="module")
def averaged_model(tmp_path_factory, mnist):
    """A model directory whose checkpoint holds a weight average, and the Estimator that trained it."""
    model_dir = tmp_path_factory.mktemp("averaged")
    estimator = Estimator(model_dir=model_dir, params=ModelParams(optimizer="adam", ema_decay=0.9),
                          config=RunConfig(precision="fp32", device="cpu"))
    estimator.train(numpy_input_fn(mnist.train.images, mnist.train.labels, batch_size=20, num_epochs=None), steps=5)
    return model_dir, estimator


def test_the_predictor_answers_with_the_weight_average_as_evaluate_does(averaged_model, mnist):
    model_dir, estimator = averaged_model
    predictor = Predictor(model_dir, precision="fp32", device="cpu")
    assert (predictor.global_step, predictor.uses_weight_average) == (5, True)
    assert predictor.checkpoint_path == estimator.latest_checkpoint()
    expected = [p["probabilities"] for p in estimator.predict(
        numpy_input_fn(mnist.test.images[:50], batch_size=50, shuffle=False))]
    np.testing.assert_array_equal(predictor.predict(mnist.test.images[:50]).probabilities, np.stack(expected))


def prediction(count: int) -> Prediction:
    classes = np.arange(count) % 10
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    return Prediction(classes, np.eye(10, dtype=np.float32)[classes], images=images)


def test_a_prediction_shows_each_digit_with_its_answer_and_marks_the_wrong_ones():
    shown = prediction(3).with_labels([0, 1, 7])
    html = shown._repr_html_()
    assert html.count("<img") == 3 and html.count("label ") == 3
    assert html.count('style="color: #b91c1c"') == 1  # 2 read where the label is 7
    assert repr(shown) == "Prediction(3 images, 2 right: classes [0 1 2])"
    assert repr(prediction(1)) == "Prediction(1 image: classes [0])"


def test_a_large_batch_shows_its_first_digits_and_counts_the_rest():
    html = prediction(100)._repr_html_()
    assert html.count("<img") == Prediction.SHOWN and f"the first {Prediction.SHOWN} shown" in html
    assert "classes [0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 ...]" in html


def test_without_images_the_answers_still_show():
    html = Prediction(np.array([3]), np.eye(10, dtype=np.float32)[[3]])._repr_html_()
    assert "<img" not in html and "<b>3</b> 100%" in html


def test_a_predictor_computes_fp32_without_tf32_and_leaves_the_users_flags_as_found(averaged_model, mnist):
    seen = []
    with tf32_allowed() as users:
        predictor = Predictor(averaged_model[0], precision="fp32", device="cpu")
        assert tf32_flags() == users
        predictor.network.register_forward_pre_hook(lambda module, args: seen.append(tf32_flags()))
        predictor.predict(mnist.test.images[:3])
        assert tf32_flags() == users
        explain(predictor, mnist.test.images[0].numpy())
        assert tf32_flags() == users
    assert len(seen) >= 2 and all(set(flags.values()) <= {"ieee", False} for flags in seen)
