"""Uploaded image bytes -> a decoded RGB image, or an :class:`InputError` saying what is wrong.

Checks, cheapest first: empty (400), larger than ``max_bytes`` (413), not a decodable image in an
allowed format (415), more pixels than ``max_pixels`` read from the header before any decoding
(413: a decompression bomb costs nothing), truncated or corrupt data (415).
"""
from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from serve_app.config import UploadLimits
from serve_app.errors import InputError


def check_size(data: bytes, limits: UploadLimits, what: str = "upload") -> None:
    if not data:
        raise InputError(f"{what} is empty (0 bytes); expected an image file", status=400, code="empty_upload")
    if len(data) > limits.max_bytes:
        raise InputError(f"{what} is {len(data)} bytes, larger than the limit of {limits.max_bytes} bytes",
                         status=413, code="upload_too_large")


def decode_image(data: bytes, limits: UploadLimits, what: str = "upload") -> tuple[Image.Image, str]:
    """-> (RGB image, PIL format name such as "JPEG")."""
    check_size(data, limits, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in limits.formats:
                raise InputError(f"{what} is a {image.format} image; accepted formats: {limits.formats}",
                                 status=415, code="unsupported_image")
            pixels = image.width * image.height
            if pixels > limits.max_pixels:
                raise InputError(f"{what} is {image.width}x{image.height} = {pixels} pixels, more than the limit "
                                 f"of {limits.max_pixels} (decompression-bomb guard)", status=413,
                                 code="too_many_pixels")
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{what} refused as a decompression bomb: {exc}", status=413, code="too_many_pixels") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{what} ({len(data)} bytes) is not an image PIL can read; expected one of "
                         f"{limits.formats}", status=415, code="not_an_image") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{what} is a corrupt or truncated image: {type(exc).__name__}: {exc}", status=415,
                         code="corrupt_image") from exc
    return image.convert("RGB"), image.format
