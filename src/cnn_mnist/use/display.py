"""HTML from the templates in ``templates/`` (Jinja2, autoescaped: a value is text, never markup):
the report's page, and the package's objects as a notebook shows them (``_repr_html_``)."""

from __future__ import annotations

import base64
import functools
import io

import numpy as np


@functools.cache
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("cnn_mnist.use", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, values: dict) -> str:
    """``templates/<template>`` rendered with ``values``; a name it uses and is not given is an error."""
    return _environment().get_template(template).render(values)


def png_base64(pixels: np.ndarray) -> str:
    """(H, W) greyscale pixels (uint8, or floats in [0, 1]) as a base64 PNG, for an
    ``<img src="data:image/png;base64,...">``."""
    from PIL import Image

    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        array = np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(array, "L").save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def draw_page(runtime_version: str | None = None) -> str:
    """The draw-a-digit page: as ``cnn-mnist serve`` serves it (asking the server), or with
    ``runtime_version`` as the static site's (running the model in the browser on that version of
    ONNX Runtime Web, which cannot take the gradients the attribution needs)."""
    site = runtime_version is not None
    note = ("The attribution needs gradients, which this page does not take: cnn-mnist serve shows it."
            if site else "Integrated gradients appear here.")
    return render("page.html.j2", {"site": site, "runtime_version": runtime_version, "attribution_note": note})
