"""The HTTP service: every input kind, every bad input as a 4xx, concurrency, the page's files,
the CLI around it, answers checked against their response models, and schema-driven fuzzing that
must never see a 5xx or an answer its schema does not describe."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service needs the [serve] extra")

from conftest import SMALL_MODEL_STEPS, make_digits  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import ONE, SEVEN, one_line_error  # noqa: E402
from helpers import draw_png as png  # noqa: E402

from cnn_mnist.cli import build_parser, main  # noqa: E402
from cnn_mnist.errors import install_hint  # noqa: E402
from cnn_mnist.use.predictor import Predictor  # noqa: E402
from cnn_mnist.use.service import MAX_IMAGES, create_app, running_server  # noqa: E402

SMALL_LIMIT = 64 * 1024  # the body limit of the `limited` app


@pytest.fixture(scope="module")
def predictor(small_model):
    """The session's small model: enough to answer the synthetic digits, not to read handwriting."""
    return Predictor(small_model)


@pytest.fixture(scope="module")
def client(predictor):
    return TestClient(create_app(predictor=predictor))


@pytest.fixture(scope="module")
def limited(predictor):
    return TestClient(create_app(predictor=predictor, max_body_bytes=SMALL_LIMIT))


@pytest.fixture(scope="module")
def server_url(predictor):
    with running_server(create_app(predictor=predictor, max_body_bytes=SMALL_LIMIT)) as url:
        yield url


ZERO = (((0.5, 0.15), (0.75, 0.3), (0.75, 0.7), (0.5, 0.85), (0.25, 0.7), (0.25, 0.3), (0.5, 0.15)),)
BLANK_PNG = png(strokes=())


def huge_png_header(width=20_000, height=20_000) -> bytes:
    """A PNG that claims 400 megapixels in a few bytes: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def post_image(client, body: bytes, content_type="image/png", **params):
    return client.post("/v1/predict", content=body, headers={"content-type": content_type}, params=params)


def assert_prediction(row):
    assert row["no_digit"] is False and isinstance(row["class"], int) and 0 <= row["class"] <= 9
    assert len(row["probabilities"]) == 10 and sum(row["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert row["class"] == int(np.argmax(row["probabilities"]))


# -- answers --------------------------------------------------------------------------------------


def test_healthz_names_the_checkpoint(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "global_step": SMALL_MODEL_STEPS,
                               "checkpoint": f"model.ckpt-{SMALL_MODEL_STEPS}.pt"}


def test_a_raw_png_body_is_prepared_and_classified(client):
    response = post_image(client, png(SEVEN))
    assert response.status_code == 200
    body = response.json()
    assert body["global_step"] == SMALL_MODEL_STEPS and body["checkpoint"] == f"model.ckpt-{SMALL_MODEL_STEPS}.pt"
    (row,) = body["predictions"]
    assert row["input"] == "body" and "prepared" not in row
    assert_prediction(row)


def test_include_prepared_returns_what_the_network_saw(client, predictor):
    from cnn_mnist.data.images import prepare_image

    row = post_image(client, png(SEVEN), include_prepared="true").json()["predictions"][0]
    prepared = np.array(row["prepared"])
    assert prepared.shape == (28, 28) and prepared.min() >= 0 and prepared.max() == 255
    np.testing.assert_array_equal(prepared, prepare_image(png(SEVEN)))
    expected = predictor.predict(prepared.astype(np.float32) / 255)
    assert row["class"] == int(expected.classes[0])
    assert row["probabilities"] == pytest.approx(expected.probabilities[0].tolist(), abs=1e-5)


def test_multipart_files_keep_their_names_and_order(client):
    images = [png(SEVEN), png(ZERO), png(ONE)]
    files = [("file", (f"d{i}.png", data, "image/png")) for i, data in enumerate(images)]
    rows = client.post("/v1/predict", files=files).json()["predictions"]
    assert [row["input"] for row in rows] == ["d0.png", "d1.png", "d2.png"]
    for row, data in zip(rows, images, strict=True):
        alone = post_image(client, data).json()["predictions"][0]
        assert row["class"] == alone["class"]
        assert row["probabilities"] == pytest.approx(alone["probabilities"], abs=1e-5)


def test_other_image_formats_and_polarities_are_accepted(client):
    reference = post_image(client, png(SEVEN)).json()["predictions"][0]
    white_on_black = png(SEVEN, paper=0, ink=255)
    rgb = Image.open(io.BytesIO(png(SEVEN))).convert("RGB")
    jpeg = io.BytesIO()
    rgb.save(jpeg, "JPEG", quality=95)
    for body, content_type in ((white_on_black, "image/png"), (jpeg.getvalue(), "image/jpeg"),
                               (png(SEVEN), "image/x-anything")):  # the bytes say what they are
        row = post_image(client, body, content_type).json()["predictions"][0]
        assert row["class"] == reference["class"], content_type


def test_json_pixels_go_to_the_network_unprepared(client, predictor):
    images, labels = make_digits(5, seed=11)
    expected = predictor.predict(images.astype(np.float32) / 255)
    flat = client.post("/v1/predict", json={"pixels": images[0].reshape(-1).tolist()}).json()["predictions"]
    grid = client.post("/v1/predict", json={"pixels": images[0].tolist()}).json()["predictions"]
    unit = client.post("/v1/predict", json={"pixels": (images[0] / 255).tolist(), "pixel_range": "0-1"}).json()
    batch = client.post("/v1/predict", json={"images": images.tolist()}, params={"include_prepared": True}).json()
    assert flat[0]["input"] == "pixels" and flat == grid
    assert unit["predictions"][0]["probabilities"] == pytest.approx(flat[0]["probabilities"], abs=1e-5)
    rows = batch["predictions"]
    assert [row["input"] for row in rows] == [f"images[{i}]" for i in range(5)]
    assert [row["class"] for row in rows] == expected.classes.tolist()
    np.testing.assert_array_equal(np.array([row["prepared"] for row in rows]), images)  # as sent
    assert [row["class"] for row in rows] == labels.tolist()  # the synthetic digits are easy


@pytest.mark.parametrize("body", [
    pytest.param(("png", BLANK_PNG), id="blank-png"),
    pytest.param(("png", png(strokes=(((0.5, 0.5), (0.505, 0.5)),), width=1)), id="speck"),
    pytest.param(("json", {"pixels": [0] * 784}), id="zero-pixels"),
    pytest.param(("json", {"pixels": [0.01] * 784, "pixel_range": "0-1"}), id="faint-pixels"),
])
def test_a_blank_image_is_a_no_digit_answer_not_an_error(client, body):
    kind, payload = body
    response = post_image(client, payload) if kind == "png" else client.post("/v1/predict", json=payload)
    assert response.status_code == 200
    (row,) = response.json()["predictions"]
    assert row["no_digit"] is True and row["class"] is None and row["probabilities"] is None
    assert "no digit found" in row["detail"]


def test_a_blank_image_in_a_batch_leaves_the_others_answered(client):
    files = [("file", ("seven.png", png(SEVEN), "image/png")), ("file", ("blank.png", BLANK_PNG, "image/png"))]
    seven, blank = client.post("/v1/predict", files=files, params={"include_prepared": True}).json()["predictions"]
    assert_prediction(seven)
    assert blank["no_digit"] is True and blank["prepared"] is None and len(seven["prepared"]) == 28


# -- bad input -----------------------------------------------------------------------------------

GOOD = png(SEVEN)
FLAT = [0] * 783 + [255]
BAD_REQUESTS = {
    # id: (content type, body, expected status, words in the message)
    "not-an-image": ("image/png", b"certainly not a PNG" * 10, 422, "not an image"),
    "truncated-png": ("image/png", GOOD[: len(GOOD) // 2], 422, "truncated"),
    "empty-body": ("image/png", b"", 400, "empty body"),
    "empty-json": ("application/json", b"", 400, "empty body"),
    "decompression-bomb": ("image/png", huge_png_header(), 413, "megapixels"),
    "wrong-content-type": ("text/plain", b"7", 415, "unsupported content type"),
    "no-content-type": (None, GOOD, 415, "no content type"),
    "malformed-json": ("application/json", b'{"pixels": [1, 2', 400, "malformed JSON"),
    "json-not-an-object": ("application/json", b"[1, 2, 3]", 422, "object"),
    "nan-pixel": ("application/json", b'{"pixels": [NaN' + b", 0" * 783 + b"]}", 422, "NaN"),
    "infinite-pixel": ("application/json", b'{"pixels": [1e999' + b", 0" * 783 + b"]}", 422, "infinity"),
    "negative-pixel": ("application/json", json.dumps({"pixels": [-1] + FLAT[1:]}), 422, "must lie in [0, 255]"),
    "pixel-over-255": ("application/json", json.dumps({"pixels": [256] + FLAT[1:]}), 422, "must lie in [0, 255]"),
    "over-1-in-unit-range": ("application/json", json.dumps({"pixels": FLAT, "pixel_range": "0-1"}), 422, "over 1"),
    "unknown-range": ("application/json", json.dumps({"pixels": FLAT, "pixel_range": "0-100"}), 422, "pixel_range"),
    "783-pixels": ("application/json", json.dumps({"pixels": FLAT[1:]}), 422, "783 values"),
    "27-rows": ("application/json", json.dumps({"pixels": [[0] * 28] * 27}), 422, "27 rows"),
    "short-row": ("application/json", json.dumps({"pixels": [[0] * 28] * 27 + [[0] * 5]}), 422, "row 27"),
    "string-pixel": ("application/json", json.dumps({"pixels": ["1"] * 784}), 422, "string"),
    "bad-image-in-batch": ("application/json", json.dumps({"images": [FLAT, FLAT[:10]]}), 422, "image 1"),
    "empty-batch": ("application/json", json.dumps({"images": []}), 422, "at least 1"),
    "both-forms": ("application/json", json.dumps({"pixels": FLAT, "images": [FLAT]}), 422, "exactly one"),
    "neither-form": ("application/json", b"{}", 422, "exactly one"),
    "unknown-field": ("application/json", json.dumps({"pixels": FLAT, "label": 3}), 422, "label"),
    "multipart-without-boundary": ("multipart/form-data", b"--x\r\n\r\n", 400, "multipart"),
}


@pytest.mark.parametrize("content_type, body, status, words", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_input_is_a_4xx_with_a_json_message(limited, content_type, body, status, words):
    headers = {} if content_type is None else {"content-type": content_type}
    response = limited.post("/v1/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail, detail
    assert limited.get("/healthz").status_code == 200


def test_multipart_mistakes_are_4xx(limited):
    no_file = limited.post("/v1/predict", files={"image": ("a.png", GOOD, "image/png")})
    text_file = limited.post("/v1/predict", data={"file": "not a file"}, files={"other": ("a", b"x")})
    not_image = limited.post("/v1/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert (no_file.status_code, text_file.status_code, not_image.status_code) == (400, 422, 422)
    assert "field 'file'" in no_file.json()["detail"] and "notes.txt" in not_image.json()["detail"]


def test_more_than_max_images_in_one_request_is_a_422(client):
    files = client.post("/v1/predict", files=[("file", ("a.png", GOOD, "image/png"))] * (MAX_IMAGES + 1))
    pixels = client.post("/v1/predict", json={"images": [FLAT] * (MAX_IMAGES + 1)})
    assert (files.status_code, pixels.status_code) == (422, 422)
    assert "64" in files.json()["detail"] and "at most 64" in pixels.json()["detail"]


def test_a_body_over_the_limit_is_refused_from_its_content_length(limited):
    response = post_image(limited, GOOD + b"\0" * SMALL_LIMIT)
    assert response.status_code == 413 and "over the limit" in response.json()["detail"]


def test_a_bad_query_parameter_is_a_422(client):
    response = post_image(client, GOOD, include_prepared="perhaps")
    assert response.status_code == 422 and "include_prepared" in response.json()["detail"]


def test_the_wrong_method_is_a_405(client):
    assert client.get("/v1/predict").status_code == 405


# -- over a real socket -----------------------------------------------------------------------------


def test_running_server_binds_loopback_by_default(server_url):
    assert server_url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{server_url}/healthz", timeout=60).json()["status"] == "ok"


def test_a_chunked_body_is_cut_off_at_the_limit_while_streaming(server_url):
    def chunks():  # no Content-Length: the server can only count
        for _ in range(SMALL_LIMIT // 4096 + 4):
            yield b"\0" * 4096

    response = httpx.post(f"{server_url}/v1/predict", content=chunks(), headers={"content-type": "image/png"},
                          timeout=60)  # generous: a loaded machine is slow, not wrong
    assert response.status_code == 413 and "over the limit" in response.json()["detail"]
    assert httpx.get(f"{server_url}/healthz", timeout=60).status_code == 200


def test_32_parallel_requests_get_the_answers_of_32_sequential_ones(server_url):
    shapes = [SEVEN, ZERO, ((((0.5, 0.15), (0.5, 0.85)),))]
    bodies = [png(shapes[i % 3], width=8 + i % 7, size=100 + 3 * i) for i in range(32)]

    def ask(body):
        response = httpx.post(f"{server_url}/v1/predict", content=body, headers={"content-type": "image/png"},
                              timeout=60)
        assert response.status_code == 200
        return response.json()["predictions"][0]

    sequential = [ask(body) for body in bodies]
    with ThreadPoolExecutor(32) as pool:
        parallel = list(pool.map(ask, bodies))
    for one, other in zip(sequential, parallel, strict=True):
        assert one["class"] == other["class"]
        assert one["probabilities"] == pytest.approx(other["probabilities"], abs=1e-5)


# -- the page -------------------------------------------------------------------------------------


def test_the_page_and_its_files_come_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="static/app.js"' in page.text and 'href="static/app.css"' in page.text
    for path, kind in (("/static/app.js", "javascript"), ("/static/app.css", "text/css")):
        response = client.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "http://" not in response.text and "https://" not in response.text  # no CDN, nothing remote
    assert "http://" not in page.text and "https://" not in page.text


def test_openapi_describes_every_request_body(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png", "image/jpeg"} <= set(content)
    pixels = schema["components"]["schemas"]["PixelsRequest"]
    assert {"pixels", "images", "pixel_range"} <= set(pixels["properties"])
    assert {"200", "400", "413", "415", "422"} <= set(operation["responses"])
    assert "/healthz" in schema["paths"]


# -- the command line -----------------------------------------------------------------------------


def test_serve_binds_loopback_unless_told_otherwise(small_model, monkeypatch):
    import uvicorn

    bound = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: bound.append(sockets[0].getsockname()[0]))
    assert main(["serve", "--model-dir", str(small_model), "--port", "0"]) == 0
    assert main(["serve", "--model-dir", str(small_model), "--host", "0.0.0.0", "--port", "0"]) == 0
    assert bound == ["127.0.0.1", "0.0.0.0"]
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_body_bytes) == ("127.0.0.1", 8000, 4 * 1024 * 1024)


def test_serve_help_lists_its_flags(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--model-dir", "--host", "--port", "--max-body-bytes"):
        assert flag in help_text


def test_serve_errors_are_one_line(tmp_path, small_model, monkeypatch, capsys):
    one_line_error(capsys, ["serve", "--model-dir", str(tmp_path / "missing")], "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["serve", "--model-dir", str(tmp_path / "empty"), "--port", "0"], "no checkpoint")
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the [serve] extra were not installed
    for name in [name for name in sys.modules if name.startswith("cnn_mnist.use.service")]:
        monkeypatch.delitem(sys.modules, name)  # the package and its modules, imported again
    err = one_line_error(capsys, ["serve", "--model-dir", str(small_model)], install_hint("serve"))
    assert err.endswith(install_hint("serve")), err  # hints: tests/test_errors.py


def test_the_cli_does_not_import_the_web_stack_until_serve():
    code = ("import sys; from cnn_mnist.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- /v1/explain ----------------------------------------------------------------------------------


def test_explain_answers_an_image_with_every_stage_and_the_attribution(client, predictor):
    pytest.importorskip("captum")
    response = client.post("/v1/explain", content=GOOD, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"global_step", "checkpoint", "explanations"}
    (row,) = body["explanations"]
    expected = predictor.predict(np.asarray(row["prepared"], dtype=np.float32) / 255)
    assert row["class"] == int(expected.classes[0]) and row["no_digit"] is False
    assert [stage["name"] for stage in row["stages"]] == ["conv1", "pool1", "conv2", "pool2", "dense"]
    assert [stage["shape"] for stage in row["stages"]] == [[32, 28, 28], [32, 14, 14], [64, 14, 14], [64, 7, 7],
                                                           [1024]]
    assert row["attribution"]["towards"] == row["class"] and np.shape(row["attribution"]["values"]) == (28, 28)
    assert np.shape(row["filters"]["values"]) == (32, 5, 5)


def test_an_explanation_is_sent_as_explain_builds_it(client, predictor):
    pytest.importorskip("captum")
    from cnn_mnist.data.images import prepare_image
    from cnn_mnist.use.explain import explain, to_json
    from pydantic import TypeAdapter

    (row,) = client.post("/v1/explain", content=GOOD, headers={"content-type": "image/png"}).json()["explanations"]
    expected = to_json(explain(predictor, prepare_image(GOOD)), "body")
    sent = TypeAdapter(type(expected)).dump_python(expected, mode="json", by_alias=True, exclude_none=True)
    assert row == sent and list(row) == list(sent)  # the same keys, in the same order
    assert "top_units" not in row["stages"][0] and "top_units" in row["stages"][-1]  # only dense names them


def test_an_answer_that_drifts_from_its_model_is_a_500_never_sent(predictor, monkeypatch):
    pytest.importorskip("captum")
    from cnn_mnist.use import answers
    from cnn_mnist.use.service import routes

    client = TestClient(create_app(predictor=predictor), raise_server_exceptions=False)
    predict = answers.predict
    monkeypatch.setattr(answers, "predict", lambda *args: [{**row, "colour": "red"} for row in predict(*args)])
    assert post_image(client, GOOD).status_code == 500  # a key the schema does not describe
    to_json = routes.to_json
    monkeypatch.setattr(routes, "to_json", lambda *args: dataclasses.replace(to_json(*args), class_="seven"))
    assert client.post("/v1/explain", content=GOOD, headers={"content-type": "image/png"}).status_code == 500


def test_explain_has_predicts_limits_and_errors(client):
    blank = client.post("/v1/explain", content=BLANK_PNG, headers={"content-type": "image/png"}).json()
    assert blank["explanations"][0]["no_digit"] is True and "no digit" in blank["explanations"][0]["detail"]
    nine = client.post("/v1/explain", json={"images": [np.zeros((28, 28)).tolist()] * 9})
    assert nine.status_code == 422 and "at most 8 images" in nine.json()["detail"]
    assert client.post("/v1/explain", content=b"not an image", headers={"content-type": "image/png"}).status_code == 422
    assert client.post("/v1/explain", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    assert "/v1/explain" in client.get("/openapi.json").json()["paths"]


# -- fuzzing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "examples"), [("/v1/predict", 250), ("/v1/explain", 60)])
def test_fuzzed_requests_get_no_5xx_and_answers_their_schema_describes(predictor, path, examples):
    """Requests drawn from /openapi.json, valid and invalid, in every content type it lists; every
    answer, 2xx or 4xx, has a status, content type and body the schema documents."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                   status_code_conformance)

    images = st.one_of(st.binary(max_size=300), st.just(GOOD), st.just(BLANK_PNG), st.just(huge_png_header()),
                       st.integers(1, len(GOOD) - 1).map(lambda cut: GOOD[:cut]),
                       st.binary(min_size=1, max_size=64).map(lambda tail: GOOD[:100] + tail))
    for media_type in ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff"):
        schemathesis.openapi.media_type(media_type, images)
    app = create_app(predictor=predictor, max_body_bytes=SMALL_LIMIT)
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path]["POST"]
    statuses = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE)))
    def fuzz(case):
        response = case.call()
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                 content_type_conformance, response_schema_conformance])

    fuzz()
    assert all(status < 500 for status in statuses)
    assert 200 in statuses and any(400 <= status < 500 for status in statuses), statuses
