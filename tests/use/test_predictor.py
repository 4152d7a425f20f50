"""use/predictor.py's Prediction as a notebook shows it (the Predictor itself is exercised by every
answering test: test_answers, test_service, test_cli)."""

import numpy as np

from cnn_mnist.use.predictor import Prediction


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
