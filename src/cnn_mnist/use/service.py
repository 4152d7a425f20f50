"""The HTTP service: ``POST /v1/predict`` for images and pixel arrays, ``POST /v1/explain`` for what
each layer makes of a digit, ``GET /healthz``, and the draw-a-digit page at ``/``, around one
Predictor loaded at start-up and shared by every request.

A request goes read -> decode -> predict -> encode. Only reading the body runs on the event loop;
decoding images and running the network happen in the threadpool, so a slow client or a big
batch never blocks other requests. Client mistakes end as a 4xx with ``{"detail": "..."}``.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cnn_mnist.version import __version__
from cnn_mnist.data.images import unit_pixels
from cnn_mnist.errors import CnnMnistError, ImageError, ImageTooLargeError, ServeError, install_hint
from cnn_mnist.model.network import IMAGE_SIZE
from cnn_mnist.use import answers
from cnn_mnist.use.display import draw_page
from cnn_mnist.use.predictor import Predictor

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # a 280x280 canvas PNG is ~10 kB; 4 MiB leaves room for batches and photos
MAX_IMAGES = 64
"""Images per request, in any form; more is a 422."""
MAX_EXPLAIN_IMAGES = 8
"""Images per /v1/explain request (each costs a forward pass and 32 backward ones); more is a 422."""

PIXELS = IMAGE_SIZE * IMAGE_SIZE

log = logging.getLogger(__name__)

# -- the request and response bodies, as the schema at /openapi.json describes them ---------------

Pixel = Annotated[float, Field(ge=0, le=255, allow_inf_nan=False, strict=True)]
FlatPixels = Annotated[list[Pixel], Field(min_length=PIXELS, max_length=PIXELS,
                                          description="784 pixels, row after row")]
PixelRow = Annotated[list[Pixel], Field(min_length=IMAGE_SIZE, max_length=IMAGE_SIZE)]
GridPixels = Annotated[list[PixelRow], Field(min_length=IMAGE_SIZE, max_length=IMAGE_SIZE,
                                             description="28 rows of 28 pixels")]
Pixels = FlatPixels | GridPixels


class PixelsRequest(BaseModel):
    """One 28x28 image (``pixels``) or several (``images``), already MNIST-like: a white (high) digit
    on black (0), about 20x20 and centred. They go to the network as they are, unprepared; send a
    picture (PNG, JPEG, ...) instead to have it cropped, centred and scaled like MNIST."""

    model_config = ConfigDict(extra="forbid")

    pixels: Pixels | None = Field(None, description="one image: 784 values or 28 rows of 28")
    images: list[Pixels] | None = Field(None, min_length=1, max_length=MAX_IMAGES,
                                        description=f"a batch of 1 to {MAX_IMAGES} images, each like `pixels`")
    pixel_range: Literal["0-255", "0-1"] = Field(
        "0-255", description="what the values mean: 0-255 (uint8 style, the default) or 0-1 (floats); 0 is black")

    @field_validator("pixels", mode="wrap")
    @classmethod
    def _one_image(cls, value, validate):
        try:
            return validate(value)
        except ValidationError:  # pydantic's errors for a two-way union of lists are long; say it once
            raise ValueError(pixels_problem(value) or "not 784 pixels or 28 rows of 28") from None

    @field_validator("images", mode="wrap")
    @classmethod
    def _many_images(cls, value, validate):
        try:
            return validate(value)
        except ValidationError as error:
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_IMAGES:
                raise error from None
            for i, image in enumerate(value):
                problem = pixels_problem(image)
                if problem:
                    raise ValueError(f"image {i}: {problem}") from None
            raise error from None

    @model_validator(mode="after")
    def _check(self) -> PixelsRequest:
        if (self.pixels is None) == (self.images is None):
            raise ValueError("give exactly one of 'pixels' (one image) and 'images' (a batch)")
        if self.pixel_range == "0-1" and any(np.max(image) > 1 for image in self.arrays()):
            raise ValueError("pixel_range is 0-1 but a value is over 1; send 0-255 values with pixel_range 0-255")
        return self

    def arrays(self) -> list[np.ndarray]:
        """Each image as (28, 28) float32 in the request's own units."""
        batch = [self.pixels] if self.pixels is not None else self.images
        return [np.asarray(image, dtype=np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE) for image in batch]


def pixels_problem(value) -> str | None:
    """What is wrong with one image's JSON pixels, in a few words; None when nothing is."""
    if not isinstance(value, list):
        return f"is {_json_type(value)}, not a list of 784 numbers or 28 rows of 28"
    if any(isinstance(row, list) for row in value):
        if not all(isinstance(row, list) for row in value):
            return "mixes numbers and lists; send 784 numbers or 28 rows of 28"
        if len(value) != IMAGE_SIZE:
            return f"has {len(value)} rows; expected 28 rows of 28"
        for i, row in enumerate(value):
            if len(row) != IMAGE_SIZE:
                return f"row {i} has {len(row)} values; expected 28"
        values = [v for row in value for v in row]
    else:
        if len(value) != PIXELS:
            return f"has {len(value)} values; expected 784 (or 28 rows of 28)"
        values = value
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"holds {_json_type(v)}; every pixel must be a number"
    try:  # the one check of pixel values, as for arrays and .npy files
        unit_pixels(np.asarray(values, dtype=np.float64), "pixels", full_scale=255)
    except ImageError as error:
        return str(error).removeprefix("pixels: ")
    return None


def _json_type(value) -> str:
    names = {bool: "a boolean", str: "a string", dict: "an object", list: "a list", type(None): "null"}
    return names.get(type(value), "a number")


class ImagePrediction(BaseModel):
    input: str = Field(description="the upload's file name, 'body', 'pixels' or 'images[i]'")
    model_config = ConfigDict(populate_by_name=True)

    digit: int | None = Field(alias="class", description="the predicted digit; null when no digit was found")
    probabilities: list[float] | None = Field(description="softmax probability of each digit 0-9; null when no digit")
    no_digit: bool = Field(description="true when the image is blank: nothing to classify")
    detail: str | None = Field(None, description="why no digit was found")
    prepared: list[list[int]] | None = Field(
        None, description="with include_prepared=true: the 28x28 uint8 pixels the network saw (white digit on black)")


class PredictResponse(BaseModel):
    global_step: int = Field(description="the global step of the checkpoint that answered")
    checkpoint: str = Field(description="the checkpoint file's name")
    predictions: list[ImagePrediction] = Field(description="one per image, in request order")


class ExplainStage(BaseModel):
    name: str = Field(description="conv1, pool1, conv2, pool2 or dense")
    label: str = Field(description="the tutorial's name and shape, e.g. 'conv1 + ReLU [batch, 28, 28, 32]'")
    shape: list[int] = Field(description="(channels, height, width), or (units,) for dense")
    columns: int = Field(description="maps per row of the tile sheet (dense: one 16x64 strip)")
    tile: str = Field(description="the maps as one greyscale PNG tile sheet, a data: URL; 0-255 spans min..max")
    min: float = Field(description="the value drawn as 0")
    max: float = Field(description="the value drawn as 255")
    top_units: list[int] | None = Field(None, description="dense only: the most active units, most first")


class ExplainAttribution(BaseModel):
    towards: int = Field(description="the predicted digit: positive values pushed towards it")
    against: int = Field(description="the runner-up: negative values pushed towards it")
    values: list[list[float]] = Field(description="28x28 integrated gradients of logit[towards] - logit[against]")
    max_abs: float
    logit_difference: float = Field(description="logit[towards] - logit[against] at this digit")
    completeness_gap: float = Field(description="sum(values) minus that difference less a blank image's")


class ImageExplanation(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    input: str = Field(description="as in /v1/predict")
    no_digit: bool = Field(description="true when the image is blank: nothing to explain")
    detail: str | None = Field(None, description="why no digit was found")
    digit: int | None = Field(None, alias="class", description="the predicted digit")
    runner_up: int | None = None
    probabilities: list[float] | None = None
    logits: list[float] | None = None
    prepared: list[list[int]] | None = Field(None, description="the 28x28 uint8 input the network saw")
    stages: list[ExplainStage] | None = None
    attribution: ExplainAttribution | None = None
    filters: dict | None = Field(None, description="conv1's 32 5x5 kernels (values) and their max_abs")


class ExplainResponse(BaseModel):
    global_step: int
    checkpoint: str
    explanations: list[ImageExplanation] = Field(description="one per image, in request order")


class ErrorResponse(BaseModel):
    detail: str


IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff")
PREDICT_REQUEST_BODY = {
    "required": True,
    "description": (
        "One of: a JSON body of pixels (see PixelsRequest); a multipart form with one or more image files in "
        "the field `file`; or one image as the raw body with an `image/*` content type. Images are prepared like "
        "MNIST (inverted if dark on light, cropped, scaled to 20x20, centred by mass); JSON pixels are not."),
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/PixelsRequest"}},
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "array", "minItems": 1, "maxItems": MAX_IMAGES,
                                    "items": {"type": "string", "format": "binary"},
                                    "description": "image files (PNG, JPEG, GIF, BMP, WebP, TIFF)"}}}},
        **{media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in IMAGE_MEDIA_TYPES},
    },
}
ERRORS = {
    400: "empty body, malformed JSON or multipart, or no `file` field",
    413: "body over the server's --max-body-bytes, or an image too large to decode",
    415: "a content type other than application/json, multipart/form-data or image/*",
    422: "not a readable image, or pixels of the wrong count, range or type, or too many images",
}


# -- the app -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Upload:
    """One image of a request, as read on the event loop: decoding waits for the threadpool."""

    name: str
    image: bytes | None = None  # an encoded picture, prepared by images.prepare_image
    pixels: np.ndarray | None = None  # (28, 28) float32 in [0, 1], used as it is


def create_app(model_dir: str | os.PathLike | None = None, *, predictor: Predictor | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, device: str = "auto") -> FastAPI:
    """The service around the newest checkpoint in ``model_dir`` (or around ``predictor``), loaded
    now, on ``device`` (a GPU where there is one, by default)."""
    if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
        raise CnnMnistError(f"serving needs python-multipart, which is not installed; {install_hint('serve')}")
    if max_body_bytes <= 0:
        raise CnnMnistError(f"max_body_bytes must be positive, got {max_body_bytes}")
    if predictor is None:
        if model_dir is None:
            raise CnnMnistError("give a model directory or a predictor")
        predictor = Predictor(model_dir, device=device)
    model = {"global_step": predictor.global_step, "checkpoint": predictor.checkpoint_path.name}

    app = FastAPI(
        title="cnn-mnist", version=__version__, docs_url=None, redoc_url=None,  # the docs pages need a CDN
        description="Handwritten digit classification with the TensorFlow tutorial's CNN, rebuilt on PyTorch.",
    )
    app.state.predictor = predictor

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and Starlette's own (404, 405, form parsing)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_errors(error.errors())}, status_code=422)

    @app.get("/healthz", summary="liveness, and which checkpoint answers")
    async def healthz() -> dict:  # on the event loop: it answers even while every worker thread predicts
        return {"status": "ok", **model}

    @app.post("/v1/predict", summary="classify one or more digits", response_model=PredictResponse,
              openapi_extra={"requestBody": PREDICT_REQUEST_BODY},
              responses={code: {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()})
    async def predict(request: Request, include_prepared: Annotated[bool, Query(
            description="also return the 28x28 pixels the network saw (for images: after preparation)")] = False,
    ) -> JSONResponse:
        inputs = await read_inputs(request, max_body_bytes)
        predictions = await run_in_threadpool(predict_inputs, predictor, inputs, include_prepared)
        return JSONResponse({**model, "predictions": predictions})

    @app.post("/v1/explain", summary="what each layer makes of one or a few digits, and which pixels decided",
              response_model=ExplainResponse, openapi_extra={"requestBody": PREDICT_REQUEST_BODY},
              responses={code: {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()})
    async def explain(request: Request) -> JSONResponse:
        inputs = await read_inputs(request, max_body_bytes)
        if len(inputs) > MAX_EXPLAIN_IMAGES:
            raise HTTPException(422, f"/v1/explain takes at most {MAX_EXPLAIN_IMAGES} images, got {len(inputs)}; "
                                     "send the others in more requests")
        explanations = await run_in_threadpool(explain_inputs, predictor, inputs)
        return JSONResponse({**model, "explanations": explanations})

    html = draw_page()

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static")
    original_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = original_openapi()
            schema["components"]["schemas"]["PixelsRequest"] = PixelsRequest.model_json_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


PAGE_HEADERS = {
    # the page loads nothing from anywhere else, and runs no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}


async def read_inputs(request: Request, max_body_bytes: int) -> list[_Upload]:
    """The request's images, undecoded, or its JSON pixels, validated; 4xx for anything else."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("application/json", "multipart/form-data") and not media_type.startswith("image/"):
        shown = media_type or "no content type"
        raise HTTPException(415, f"unsupported content type: {shown}; send application/json, multipart/form-data "
                                 "(field 'file') or an image/* body")
    body = await read_body(request, max_body_bytes)
    if media_type == "application/json":
        return parse_pixels(body)
    if media_type == "multipart/form-data":
        return await parse_multipart(request, body, max_body_bytes)
    return [_Upload("body", image=body)]


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():  # a chunked or lying body is counted as it arrives
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPException(400, "the client went away before sending the whole body") from None
    if size == 0:
        raise HTTPException(400, "empty body: send an image, a multipart form or JSON pixels")
    return b"".join(chunks)


def parse_pixels(body: bytes) -> list[_Upload]:
    try:
        request = PixelsRequest.model_validate_json(body)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise HTTPException(400, f"malformed JSON: {errors[0]['msg']}") from None
        raise HTTPException(422, describe_errors(errors)) from None
    scale = 255.0 if request.pixel_range == "0-255" else 1.0
    names = ["pixels"] if request.pixels is not None else [f"images[{i}]" for i in range(len(request.images))]
    return [_Upload(name, pixels=array / scale) for name, array in zip(names, request.arrays(), strict=True)]


async def parse_multipart(request: Request, body: bytes, max_body_bytes: int) -> list[_Upload]:
    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=MAX_IMAGES, max_fields=MAX_IMAGES,
                                                         max_part_size=max_body_bytes)
    except StarletteHTTPException as error:
        if "Too many files" in str(error.detail):
            raise HTTPException(422, f"over {MAX_IMAGES} files in one request; the limit is {MAX_IMAGES}") from None
        raise HTTPException(400, f"malformed multipart body: {error.detail}") from None
    except Exception as error:  # the parser's own errors on hostile input: a client problem, never a 500
        raise HTTPException(400, f"malformed multipart body: {type(error).__name__}") from None
    try:
        files = form.getlist("file")
        if not files:
            raise HTTPException(400, "the multipart form has no field 'file'; send each image as a 'file' part")
        inputs = []
        for i, part in enumerate(files):
            if isinstance(part, str):
                raise HTTPException(422, f"form field 'file' #{i} is text, not a file upload")
            inputs.append(_Upload(part.filename or f"file[{i}]", image=await part.read()))
        return inputs
    finally:
        await form.close()


def describe_errors(errors) -> str:
    """Pydantic's errors as one line: the first three, each at its place in the body."""
    parts = []
    for error in list(errors)[:3]:
        where = ".".join(str(step) for step in error.get("loc", ()) if step not in ("body",))
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def predict_inputs(predictor: Predictor, uploads: list[_Upload], include_prepared: bool) -> list[dict]:
    """Prepare every image, then answer them as the CLI does (``answers.predict``)."""
    return answers.predict(predictor, [digit_input(upload) for upload in uploads], include_prepared)


def explain_inputs(predictor: Predictor, uploads: list[_Upload]) -> list[dict]:
    """Prepare every image as /v1/predict does, then explain each digit (``answers.explain``)."""
    from cnn_mnist.use.explain import to_json

    rows = []
    for item, explanation in answers.explain(predictor, [digit_input(upload) for upload in uploads]):
        if explanation is None:
            rows.append({"input": item.name, "no_digit": True, "detail": item.no_digit})
            continue
        answer = to_json(explanation)
        answer["prepared"] = answer.pop("input")
        rows.append({"input": item.name, "no_digit": False, **answer})
    return rows


# An image's problem is the client's; its type, not its wording, picks the status code.
IMAGE_ERROR_STATUS = ((ImageTooLargeError, 413), (ImageError, 422))


def digit_input(upload: _Upload) -> answers.DigitInput:
    """A picture prepared like MNIST, or JSON pixels as they are; 413 or 422 for a bad image."""
    try:
        if upload.pixels is not None:
            return answers.from_mnist_pixels(upload.pixels, upload.name)
        return answers.from_picture(upload.image, upload.name)
    except ImageError as error:
        status = next(code for kind, code in IMAGE_ERROR_STATUS if isinstance(error, kind))
        raise HTTPException(status, f"{upload.name}: {str(error).removeprefix('image: ')}") from None


# -- running it --------------------------------------------------------------------------------


def serve(model_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, log_level: str = "info", device: str = "auto") -> None:
    """Load the model and answer requests until Ctrl-C.

    The socket is bound first, so a bad host or a port in use is a ServeError before the model
    loads, not uvicorn's own message and exit status."""
    sock = listen_socket(host, port)
    try:
        app = create_app(model_dir, max_body_bytes=max_body_bytes, device=device)
        log.info("Serving on %s: the page at /, POST /v1/predict, POST /v1/explain, GET /healthz (Ctrl-C stops)",
                 url_of(sock))
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening (``port`` 0: a free one), or a
    ServeError in one line saying what is wrong and what to do."""
    if not 0 <= port <= 65535:
        raise ServeError(f"port {port} is out of range; choose 0-65535 (0 picks a free port)")
    # IPv6 for an IPv6 literal, else IPv4 (a name such as localhost included), as uvicorn chooses.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise ServeError(f"cannot listen on --host {host!r}: unknown host ({getattr(err, 'strerror', None) or err}); "
                         "use an address of this machine, such as 127.0.0.1 (this machine only) or 0.0.0.0") from None
    try:
        sock = socket.socket(family, kind, proto)
    except OSError as err:  # e.g. IPv6 turned off in the kernel
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            reason = f"port {port} is in use by another program; stop it, or choose another --port (0 picks a free one)"
        elif err.errno == errno.EACCES:
            reason = f"port {port} needs more privileges than this user has; choose --port 1024 or above"
        elif err.errno == errno.EADDRNOTAVAIL:
            reason = "that address is not one of this machine's; use 127.0.0.1, 0.0.0.0 or one of its own addresses"
        else:
            reason = err.strerror or str(err)
        raise ServeError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


@contextmanager
def running_server(app: FastAPI, host: str = DEFAULT_HOST, port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a background thread; yields its base URL (``port=0``: a free port).

    The socket is bound and listening before the thread starts, so the URL answers at once:
    early connections wait in the backlog until uvicorn picks them up.
    """
    sock = listen_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="cnn-mnist-server", daemon=True)
    thread.start()
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


