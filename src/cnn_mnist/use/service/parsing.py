"""A request's images, read and checked: the body read on the event loop (refused as soon as it
passes the size limit), JSON pixels validated, multipart parts and raw bodies kept undecoded; then,
in the threadpool, each one prepared into an ``answers.DigitInput``. Client mistakes are a 4xx
``HTTPException`` whose one-line ``detail`` says what is wrong."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastapi import HTTPException, Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from cnn_mnist.errors import ImageError, ImageTooLargeError
from cnn_mnist.use import answers
from cnn_mnist.use.service.schemas import PixelsRequest
from cnn_mnist.use.service.settings import MAX_IMAGES


@dataclass(frozen=True)
class Upload:
    """One image of a request, as read on the event loop: decoding waits for the threadpool."""

    name: str
    image: bytes | None = None  # an encoded picture, prepared by images.prepare_image
    pixels: np.ndarray | None = None  # (28, 28) float32 in [0, 1], used as it is


async def read_inputs(request: Request, max_body_bytes: int) -> list[Upload]:
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
    return [Upload("body", image=body)]


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


def parse_pixels(body: bytes) -> list[Upload]:
    try:
        request = PixelsRequest.model_validate_json(body)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise HTTPException(400, f"malformed JSON: {errors[0]['msg']}") from None
        raise HTTPException(422, describe_errors(errors)) from None
    scale = 255.0 if request.pixel_range == "0-255" else 1.0
    names = ["pixels"] if request.pixels is not None else [f"images[{i}]" for i in range(len(request.images))]
    return [Upload(name, pixels=array / scale) for name, array in zip(names, request.arrays(), strict=True)]


async def parse_multipart(request: Request, body: bytes, max_body_bytes: int) -> list[Upload]:
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
            inputs.append(Upload(part.filename or f"file[{i}]", image=await part.read()))
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


# An image's problem is the client's; its type, not its wording, picks the status code.
IMAGE_ERROR_STATUS = ((ImageTooLargeError, 413), (ImageError, 422))


def digit_input(upload: Upload) -> answers.DigitInput:
    """A picture prepared like MNIST, or JSON pixels as they are; 413 or 422 for a bad image."""
    try:
        if upload.pixels is not None:
            return answers.from_mnist_pixels(upload.pixels, upload.name)
        return answers.from_picture(upload.image, upload.name)
    except ImageError as error:
        status = next(code for kind, code in IMAGE_ERROR_STATUS if isinstance(error, kind))
        raise HTTPException(status, f"{upload.name}: {str(error).removeprefix('image: ')}") from None
