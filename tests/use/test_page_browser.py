"""The draw-a-digit page in a real Chromium: draw with the mouse, read the prediction off the page,
and keep screenshots (test-artifacts/) at desktop and phone widths.

Uses the model in $CNN_MNIST_PAGE_MODEL_DIR (default /tmp/models/fast) when it holds a checkpoint;
otherwise trains one for 200 Adam steps on the real MNIST (downloaded on first use, ~10 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `make test` sets CNN_MNIST_REQUIRE_BROWSER=1: there a missing piece fails the run instead of
# skipping it (conftest.py turns a skipped browser test into a failure too).
if os.environ.get("CNN_MNIST_REQUIRE_BROWSER") == "1":
    import fastapi  # noqa: F401
    from playwright import sync_api
else:
    pytest.importorskip("fastapi", reason="the page needs the [serve] extra")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (make install-test)")

from cnn_mnist.training import checkpoints  # noqa: E402
from cnn_mnist.use.service import create_app, running_server  # noqa: E402
from conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}

# Strokes in pad coordinates (0-1), drawn as a person would with a mouse.
DIGITS = {
    "1": [[(0.52, 0.18), (0.50, 0.82)]],
    "7": [[(0.28, 0.22), (0.72, 0.22), (0.44, 0.80)]],
    "0": [[(0.50, 0.18), (0.66, 0.24), (0.72, 0.42), (0.70, 0.62), (0.60, 0.78), (0.46, 0.81), (0.34, 0.72),
           (0.28, 0.52), (0.30, 0.32), (0.38, 0.21), (0.50, 0.18)]],
}


@pytest.fixture(scope="module")
def page_model_dir(tmp_path_factory) -> Path:
    ready = Path(os.environ.get("CNN_MNIST_PAGE_MODEL_DIR", "/tmp/models/fast"))
    if checkpoints.latest_checkpoint(ready) is not None:
        return ready
    from cnn_mnist.data.datasets import load_mnist
    from cnn_mnist.data.inputs import numpy_input_fn
    from cnn_mnist.model.config import ModelParams
    from cnn_mnist.training.estimator import Estimator

    model_dir = tmp_path_factory.mktemp("page_model") / "model"
    train = load_mnist().train  # $CNN_MNIST_DATA or ~/.cache/cnn_mnist, downloaded on first use
    estimator = Estimator(model_dir=model_dir, params=ModelParams(optimizer="adam", learning_rate=2e-3))
    estimator.train(numpy_input_fn(train.images, train.labels, batch_size=128, num_epochs=None), max_steps=200)
    return model_dir


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set CNN_MNIST_CHROMIUM to another binary)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def url(page_model_dir):
    with running_server(create_app(page_model_dir)) as base_url:
        yield base_url


def open_page(browser, url, viewport):
    page = browser.new_page(viewport=VIEWPORTS[viewport], device_scale_factor=2 if viewport == "phone" else 1)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(f"{url}/")
    page.wait_for_selector("#model-info:has-text('global step')")
    return page, errors


def draw(page, strokes):
    """Mouse strokes on the pad; coordinates are fractions of its side."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=6)
        page.mouse.up()


def shown_class(page) -> str:
    """The class on the page once the answer to the final drawing is in."""
    page.wait_for_selector("#result[data-settled='true']:not([data-state='empty'])")
    return page.locator("#top-class").text_content()


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_drawn_digits_are_read_and_shown(browser, url, viewport):
    page, errors = open_page(browser, url, viewport)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"page-{viewport}-empty.png", animations="disabled")
    for digit, strokes in DIGITS.items():
        page.click("#clear")
        draw(page, strokes)
        assert shown_class(page) == digit
        assert page.locator("#result").get_attribute("data-state") == "digit"
        assert page.locator(f"#bars li[data-digit='{digit}']").get_attribute("class") == "top"
        assert page.locator("#verdict-label").text_content() == f"It looks like a {digit}"
        page.screenshot(path=ARTIFACTS / f"page-{viewport}-{digit}.png", animations="disabled", full_page=True)
    assert errors == []
    page.close()


def test_a_no_digit_answer_shows_the_no_digit_state_and_clear_resets(browser, url):
    page, errors = open_page(browser, url, "desktop")
    # Any mark the page's pens make is big enough for images.py to call it a digit, so the server's
    # answer for a blank image (as test_service checks it) is handed to the page here.
    blank = {"global_step": 1, "checkpoint": "model.ckpt-1.pt", "predictions": [
        {"input": "body", "class": None, "name": None, "probabilities": None, "no_digit": True, "prepared": None,
         "detail": "image: no digit found (the image is blank or its ink too faint: 0% contrast)"}]}
    page.route("**/v1/predict*", lambda route: route.fulfill(json=blank))
    draw(page, DIGITS["1"])
    assert shown_class(page) == "?"
    assert page.locator("#result").get_attribute("data-state") == "no-digit"
    assert page.locator("#verdict-label").text_content() == "No digit found"
    page.screenshot(path=ARTIFACTS / "page-desktop-no-digit.png", animations="disabled")
    page.click("#clear")
    assert page.locator("#result").get_attribute("data-state") == "empty"
    assert page.locator("#bars li.top").count() == 0
    assert errors == []
    page.close()


def test_the_layout_does_not_shift_when_a_prediction_arrives(browser, url):
    for viewport in VIEWPORTS:
        page, _ = open_page(browser, url, viewport)
        boxes = ["#pad", "#seen", "#bars", "#top-class", "#clear"]
        before = [page.locator(selector).bounding_box() for selector in boxes]
        draw(page, DIGITS["7"])
        shown_class(page)
        after = [page.locator(selector).bounding_box() for selector in boxes]
        assert before == after, viewport
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= VIEWPORTS[viewport]["width"], f"{viewport}: the page scrolls sideways ({width}px)"
        page.close()


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_inside_the_network_shows_every_stage_and_a_clicked_maps_filter(browser, url, viewport):
    page, errors = open_page(browser, url, viewport)
    draw(page, DIGITS["7"])
    assert shown_class(page) == "7"
    page.wait_for_selector("#inside[data-state='ready'][data-busy='false']")
    stages = ["input", "conv1", "pool1", "conv2", "pool2", "dense", "softmax"]
    assert page.locator("#stages figure").evaluate_all("fs => fs.map(f => f.dataset.stage)") == stages
    for stage in stages[:-1]:  # every tile decoded and laid out at a visible size
        image = page.locator(f"#stages figure[data-stage='{stage}'] img")
        assert image.evaluate("img => img.complete && img.naturalWidth > 0"), stage
        assert image.bounding_box()["width"] >= 60, stage
    assert "[batch, 28, 28, 32]" in page.locator("#stages figure[data-stage='conv1'] figcaption").text_content()
    assert "[batch, 7, 7, 64]" in page.locator("#stages figure[data-stage='pool2'] figcaption").text_content()
    assert "towards 7" in page.locator("#attribution-caption").text_content()
    # Map 9 sits in the second row, second column of conv1's 8-wide tile sheet.
    conv1 = page.locator("#stages figure[data-stage='conv1'] img")
    box = conv1.bounding_box()
    conv1.click(position={"x": box["width"] * 1.5 / 8, "y": box["height"] * 1.5 / 4})
    assert page.locator("#filter-view").get_attribute("data-filter") == "9"
    assert page.locator("#filter-caption").text_content().startswith("conv1 filter 9 (5x5)")
    painted = page.evaluate("""() => { const c = document.getElementById('filter');
        const data = c.getContext('2d').getImageData(0, 0, 5, 5).data;
        return [c.width, c.height, data.some(v => v !== 255 && v !== 0)]; }""")
    assert painted == [5, 5, True]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORTS[viewport]["width"], f"{viewport}: the page scrolls sideways ({width}px)"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"page-{viewport}-inside.png", animations="disabled", full_page=True)
    assert errors == []
    page.close()
