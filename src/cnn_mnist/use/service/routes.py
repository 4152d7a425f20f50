"""The app: ``create_app`` builds it around one Predictor, with its routes (``GET /healthz``,
``POST /v1/predict``, ``POST /v1/explain``, the page and its files) and its error handlers.

Only reading the body runs on the event loop; decoding images and running the network happen in
the threadpool, so a slow client or a big batch never blocks other requests. Each route returns its
response model (``schemas``), which FastAPI checks before sending; client mistakes end as a 4xx
with ``{"detail": "..."}``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnn_mnist.errors import CnnMnistError, install_hint
from cnn_mnist.use import answers
from cnn_mnist.use.display import draw_page
from cnn_mnist.use.explain import to_json
from cnn_mnist.use.predictor import Predictor
from cnn_mnist.use.service.parsing import Upload, describe_errors, digit_input, read_inputs
from cnn_mnist.use.service.schemas import (ERROR_RESPONSES, IMAGES_REQUEST_BODY, ErrorResponse, ExplainResponse,
                                           Health, NoDigitExplanation, PixelsRequest, PredictResponse)
from cnn_mnist.use.service.settings import DEFAULT_MAX_BODY_BYTES, MAX_EXPLAIN_IMAGES
from cnn_mnist.version import __version__

PAGE_HEADERS = {
    # the page loads nothing from anywhere else, and runs no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}


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
    app = FastAPI(
        title="cnn-mnist", version=__version__, docs_url=None, redoc_url=None,  # the docs pages need a CDN
        description="Handwritten digit classification with the TensorFlow tutorial's CNN, rebuilt on PyTorch.",
        # json.dumps writes every answer, as it always has: pydantic's own JSON writer spells some
        # floats otherwise (1e-6 for 1e-06), and the answers stay the same bytes
        default_response_class=JSONResponse,
    )
    app.state.predictor = predictor
    add_error_handlers(app)
    add_answer_routes(app, predictor, max_body_bytes)
    add_page(app)
    describe_pixels_request(app)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": "..."}`` in one line, FastAPI's and Starlette's own included."""

    @app.exception_handler(StarletteHTTPException)  # 404, 405, form parsing, and the routes' 4xx
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(ErrorResponse(detail=str(error.detail)).model_dump(), status_code=error.status_code,
                            headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(ErrorResponse(detail=describe_errors(error.errors())).model_dump(), status_code=422)


def add_answer_routes(app: FastAPI, predictor: Predictor, max_body_bytes: int) -> None:
    @app.get("/healthz", summary="liveness, and which checkpoint answers", response_model=Health)
    async def healthz() -> Health:  # on the event loop: it answers even while every worker thread predicts
        return Health(**checkpoint_of(predictor))

    # /v1/predict sends the keys each answer has (a no-digit row's `detail`, `prepared` when asked),
    # /v1/explain every key but the empty ones (only dense names its `top_units`).
    @app.post("/v1/predict", summary="classify one or more digits", response_model=PredictResponse,
              response_model_exclude_unset=True, openapi_extra={"requestBody": IMAGES_REQUEST_BODY},
              responses=ERROR_RESPONSES)
    async def predict(request: Request, include_prepared: Annotated[bool, Query(
            description="also return the 28x28 pixels the network saw (for images: after preparation)")] = False,
    ) -> PredictResponse:
        uploads = await read_inputs(request, max_body_bytes)
        return await run_in_threadpool(predict_response, predictor, uploads, include_prepared)

    @app.post("/v1/explain", summary="what each layer makes of one or a few digits, and which pixels decided",
              response_model=ExplainResponse, response_model_exclude_none=True,
              openapi_extra={"requestBody": IMAGES_REQUEST_BODY}, responses=ERROR_RESPONSES)
    async def explain(request: Request) -> ExplainResponse:
        uploads = await read_inputs(request, max_body_bytes)
        if len(uploads) > MAX_EXPLAIN_IMAGES:
            raise HTTPException(422, f"/v1/explain takes at most {MAX_EXPLAIN_IMAGES} images, got {len(uploads)}; "
                                     "send the others in more requests")
        return await run_in_threadpool(explain_response, predictor, uploads)


def checkpoint_of(predictor: Predictor) -> dict:
    return {"global_step": predictor.global_step, "checkpoint": predictor.checkpoint_path.name}


def predict_response(predictor: Predictor, uploads: list[Upload], include_prepared: bool) -> PredictResponse:
    """Prepare every image, then answer them as the CLI does (``answers.predict``)."""
    rows = answers.predict(predictor, [digit_input(upload) for upload in uploads], include_prepared)
    return PredictResponse(**checkpoint_of(predictor), predictions=rows)


def explain_response(predictor: Predictor, uploads: list[Upload]) -> ExplainResponse:
    """Prepare every image as /v1/predict does, then explain each digit (``answers.explain``)."""
    explained = answers.explain(predictor, [digit_input(upload) for upload in uploads])
    return ExplainResponse(**checkpoint_of(predictor), explanations=[
        NoDigitExplanation(input=item.name, detail=item.no_digit) if explanation is None
        else to_json(explanation, item.name) for item, explanation in explained])


def add_page(app: FastAPI) -> None:
    """The draw-a-digit page at ``/``, and its files under ``/static``."""
    html = draw_page()

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(packages=[("cnn_mnist.use", "static")]), name="static")


def describe_pixels_request(app: FastAPI) -> None:
    """/openapi.json with PixelsRequest among its schemas: the POST routes read their bodies
    themselves (three content types), so FastAPI would not list it."""
    original_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = original_openapi()
            schema["components"]["schemas"]["PixelsRequest"] = PixelsRequest.model_json_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
