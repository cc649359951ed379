"""Checking what a request sends: the photo and the optional label list.

Every problem a user can cause is a `RequestError` carrying the HTTP status and one
sentence that the page shows as it is and the JSON API returns as `{"error": ...}`.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from dalip.data.skips import SkipCounter
from dalip.data.sources import decode_image, max_image_pixels
from dalip.inference.labels import check_labels
from dalip.serve.engine import MEGABYTE
from dalip.serve.taxa import TaxonQuery

ACCEPTED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
FIELDS = ("labels", "rank", "subset", "min_probability")  # the text fields a request may send


class RequestError(Exception):
    """A bad request: `status` (4xx) and a message for the person who sent it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def human_size(size: int) -> str:
    """A size as people read it: 357 bytes, 12 KB, 20 MB, 3.5 MB."""
    if size < 1024:
        return f"{size} bytes"
    if size < MEGABYTE:
        return f"{size / 1024:.0f} KB"
    return f"{size / MEGABYTE:.1f}".removesuffix(".0") + " MB"


def read_image(data: bytes, filename: str, max_bytes: int) -> Image.Image:
    """The uploaded bytes decoded to RGB exactly as `dalip predict` decodes a file."""
    if not data:
        raise RequestError(400, f"{filename}: the file is empty")
    if len(data) > max_bytes:
        raise RequestError(
            413,
            f"{filename}: the photo is {human_size(len(data))}; the limit is "
            f"{human_size(max_bytes)} (dalip serve --max-upload-mb)",
        )
    try:
        with warnings.catch_warnings():  # dalip's own pixel limit applies, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                image_format, pixels, size = probe.format, probe.width * probe.height, probe.size
    except Image.DecompressionBombError:  # Pillow's own refusal, beyond twice its limit
        image_format, pixels, size = "huge", max_image_pixels() + 1, None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        image_format, pixels, size = None, 0, None
    if pixels > max_image_pixels():
        dimensions = f"{size[0]} x {size[1]} pixels" if size else "more pixels than Pillow opens"
        raise RequestError(
            413,
            f"{filename}: the image is {dimensions}; the limit is {max_image_pixels():,} pixels "
            f"(DALIP_MAX_IMAGE_PIXELS)",
        )
    if image_format not in ACCEPTED_FORMATS:
        found = f" (it is {image_format})" if image_format else ""
        raise RequestError(415, f"{filename}: not a JPEG, PNG or WebP image{found}")
    image = decode_image(lambda: data, SkipCounter(slots=2), filename)
    if image is None:
        raise RequestError(
            400,
            f"{filename}: the {ACCEPTED_FORMATS[image_format]} image could not be "
            f"decoded (truncated or damaged?)",
        )
    return image


def parse_labels(text: str | None, max_labels: int) -> list[str] | None:
    """One label per line -> the labels; None when the field was not sent (the server's labels)."""
    if text is None:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise RequestError(
            400,
            "the label list is empty: type one label per line, or leave the labels out to use the server's",
        )
    if len(lines) > max_labels:
        raise RequestError(
            400, f"{len(lines)} labels given; at most {max_labels} are accepted (dalip serve --max-labels)"
        )
    try:
        return check_labels(lines, "labels")
    except ValueError as error:
        raise RequestError(400, str(error)) from error


def parse_query(fields: dict[str, str | None]) -> TaxonQuery:
    """The taxon options of a form (`rank`, `subset`, `min_probability`); an empty field is the
    server's default. A `min_probability` that is no number is a 400 naming the field."""
    values = {
        name: (fields.get(name) or "").strip() or None for name in ("rank", "subset", "min_probability")
    }
    if values["subset"] is not None:
        values["subset"] = fields["subset"]  # a checklist keeps its lines
    if values["min_probability"] is not None:
        try:
            values["min_probability"] = float(values["min_probability"])
        except ValueError:
            raise RequestError(
                400, f"min_probability: expected a number in (0, 1], got {values['min_probability'][:50]!r}"
            ) from None
    return TaxonQuery(**values)
