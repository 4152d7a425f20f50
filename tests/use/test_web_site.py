"""The static site `cnn-mnist export --format web` writes, in a real Chromium, served as a user would
serve it (`python -m http.server`), with every request outside the site refused: draw digits, read
the answer, the prepared pixels and the probabilities off the page, and compare them with
prepare_image and onnxruntime in Python on the same pixels. Screenshots go to test-artifacts/."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from test_page_browser import ARTIFACTS, DIGITS, VIEWPORTS, browser, draw, page_model_dir  # noqa: F401  (fixtures)

from cnn_mnist.data.images import prepare_image
from cnn_mnist.use.explain import SHOWN_STAGES, ImageExplanation

ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(page_model_dir, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("web") / "site"
    subprocess.run([sys.executable, "-m", "cnn_mnist", "export", "-q", "--model-dir", str(page_model_dir),
                    "--output", str(folder)], check=True, timeout=600)
    return folder


@pytest.fixture(scope="module")
def base_url(site):
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory",
                               str(site)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = re.search(r"port (\d+)", server.stdout.readline()).group(1)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=10)


def open_site(browser, base_url, viewport):  # noqa: F811
    context = browser.new_context(viewport=VIEWPORTS[viewport], device_scale_factor=2 if viewport == "phone" else 1)
    refused, errors = [], []

    def only_the_site(route):
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_site)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(base_url)
    page.wait_for_selector("body[data-ready='true']")
    return page, refused, errors


def last_answer(page) -> dict:
    page.wait_for_selector("#result[data-settled='true']:not([data-state='empty'])")
    return page.evaluate("""() => { const last = window.cnnMnistLast;
        return {rgba: Array.from(last.rgba), prepared: last.prediction.prepared,
                probabilities: last.prediction.probabilities, class: last.prediction.class}; }""")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_drawn_digits_get_pythons_pixels_and_onnxruntimes_answer(browser, base_url, site, viewport):  # noqa: F811
    page, refused, errors = open_site(browser, base_url, viewport)
    assert page.evaluate("crossOriginIsolated") is False  # as on most static hosts: one WASM thread
    assert "global step" in page.locator("#model-info").text_content()
    session = ort.InferenceSession(str(site / "model.onnx"), providers=["CPUExecutionProvider"])
    for digit, strokes in DIGITS.items():
        page.click("#clear")
        draw(page, strokes)
        answer = last_answer(page)
        assert page.locator("#top-class").text_content() == digit == str(answer["class"])
        rgba = np.asarray(answer["rgba"], dtype=np.uint8).reshape(280, 280, 4)
        drawing = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(drawing, "PNG")
        expected = prepare_image(drawing.getvalue())  # what the CLI and the service make of the same pixels
        assert np.abs(np.asarray(answer["prepared"]) - expected.astype(int)).max() <= 1
        (probabilities,) = session.run(["probabilities"], {"drawing": rgba})
        assert np.abs(np.asarray(answer["probabilities"]) - probabilities).max() < 1e-4
        stages = page.locator("#stages figure").evaluate_all("fs => fs.map(f => f.dataset.stage)")
        assert stages == ["input", "conv1", "pool1", "conv2", "pool2", "dense", "softmax"]
        assert "cnn-mnist serve shows it" in page.locator("#attribution-caption").text_content()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"site-{viewport}-{digit}.png", animations="disabled", full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORTS[viewport]["width"], f"{viewport}: the page scrolls sideways ({width}px)"
    assert refused == [] and errors == []
    page.context.close()


def test_the_pages_explanation_has_the_shape_the_service_sends(browser, base_url):  # noqa: F811
    """The explanation the page computes in the browser, against the JSON schema of
    explain.ImageExplanation, the shape /v1/explain sends: a key added, dropped or retyped on
    either side fails it."""
    jsonschema = pytest.importorskip("jsonschema")
    pydantic = pytest.importorskip("pydantic")
    schema = pydantic.TypeAdapter(ImageExplanation).json_schema()
    page, _, errors = open_site(browser, base_url, "desktop")
    draw(page, DIGITS["7"])
    last_answer(page)
    explanation = page.evaluate("window.cnnMnistLast.explanation")
    jsonschema.validate(explanation, schema)
    assert explanation["class"] == 7 and [stage["name"] for stage in explanation["stages"]] == list(SHOWN_STAGES)
    assert explanation["logits"] is None and explanation["attribution"] is None  # no logits or gradients here
    for drifted in ({**explanation, "colour": "red"}, {k: v for k, v in explanation.items() if k != "filters"},
                    {**explanation, "prepared": "pixels"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(drifted, schema)
    assert errors == []
    page.context.close()


def test_a_clicked_conv1_map_shows_its_filter(browser, base_url):  # noqa: F811
    page, _, errors = open_site(browser, base_url, "desktop")
    draw(page, DIGITS["7"])
    last_answer(page)
    conv1 = page.locator("#stages figure[data-stage='conv1'] img")
    box = conv1.bounding_box()
    conv1.click(position={"x": box["width"] * 1.5 / 8, "y": box["height"] * 1.5 / 4})
    assert page.locator("#filter-caption").text_content().startswith("conv1 filter 9 (5x5)")
    assert errors == []
    page.context.close()


def test_opened_from_the_disk_the_page_says_how_to_serve_it(browser, site):  # noqa: F811
    page = browser.new_page()
    page.goto((site / "index.html").as_uri())
    detail = page.locator("#verdict-detail")
    detail.wait_for()
    page.wait_for_selector("#verdict-detail:has-text('python -m http.server')")
    assert len(detail.text_content().splitlines()) == 1
    page.close()
