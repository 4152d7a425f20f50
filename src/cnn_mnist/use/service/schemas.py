"""The bodies the service reads and sends, as /openapi.json describes them: the JSON pixels request,
each route's response model (an explanation's own shape is ``explain.ImageExplanation``), and the
request body and errors the schema documents for every POST route."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnn_mnist.data.images import unit_pixels
from cnn_mnist.errors import ImageError
from cnn_mnist.model.network import IMAGE_SIZE
from cnn_mnist.use.explain import ImageExplanation
from cnn_mnist.use.service.settings import MAX_IMAGES

PIXELS = IMAGE_SIZE * IMAGE_SIZE

# -- the JSON pixels request -------------------------------------------------------------------------

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


# -- the responses ----------------------------------------------------------------------------------
# The routes return these, built from their answers, and FastAPI checks each against its model
# before sending it: a key or a type the schema does not describe is a 500, never a silent change.


GlobalStep = Annotated[int, Field(description="the global step of the checkpoint that answers")]
CheckpointName = Annotated[str, Field(description="the checkpoint file's name")]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    global_step: GlobalStep
    checkpoint: CheckpointName


class Checkpoint(BaseModel):
    """Which checkpoint answered: the first keys of every answer."""

    global_step: GlobalStep
    checkpoint: CheckpointName


class ImagePrediction(BaseModel):
    """One image's answer, as ``answers.predict`` gives it to the CLI too; ``detail`` and
    ``prepared`` are sent only where the answer has them."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    input: str = Field(description="the upload's file name, 'body', 'pixels' or 'images[i]'")
    digit: int | None = Field(alias="class", description="the predicted class's index (for MNIST, the digit); null "
                                                         "when no digit was found")
    name: str | None = Field(description="the predicted class's name (for MNIST, the digit: '7'); null when no digit "
                                         "was found")
    probabilities: list[float] | None = Field(description="softmax probability of each class, in class order (for "
                                                          "MNIST, the digits 0-9); null when no digit")
    no_digit: bool = Field(description="true when the image is blank: nothing to classify")
    detail: str | None = Field(None, description="why no digit was found")
    prepared: list[list[int]] | None = Field(
        None, description="with include_prepared=true: the 28x28 uint8 pixels the network saw (white digit on black)")


class PredictResponse(Checkpoint):
    predictions: list[ImagePrediction] = Field(description="one per image, in request order")


class NoDigitExplanation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="as in /v1/predict")
    no_digit: Literal[True] = Field(True, description="the image is blank: nothing to explain")
    detail: str = Field(description="why no digit was found")


class ExplainResponse(Checkpoint):
    explanations: list[ImageExplanation | NoDigitExplanation] = Field(description="one per image, in request order")


class ErrorResponse(BaseModel):
    detail: str


# -- what the schema says of every POST route's body and errors ---------------------------------------

IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff")
IMAGES_REQUEST_BODY = {
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
ERROR_RESPONSES = {code: {"model": ErrorResponse, "description": text} for code, text in ERRORS.items()}
