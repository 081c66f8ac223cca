"""Checked image loading and garment cropping.

Every failure is an :class:`ImageRejected` with a reason code, so callers can quarantine the
record instead of crashing a whole batch.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class ImageRejected(Exception):
    """An image that cannot be used; ``reason`` is a quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000  # well below PIL's bomb threshold; real K-Fashion images are ~1 MP


def open_checked(path: str | os.PathLike, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Open and fully decode an image, or raise ImageRejected.

    Size limits are checked from the file size and the header before decoding, so an oversized or
    decompression-bomb image costs nothing. A truncated file fails in ``load()``.
    """
    source, size = _source(path)
    if size is None:
        raise ImageRejected("missing_image", f"{path}: no such image file")
    if size == 0:
        raise ImageRejected("unreadable_image", f"{path}: empty file")
    if size > limits.max_bytes:
        raise ImageRejected("oversized_image", f"{path}: {size} bytes > max_bytes {limits.max_bytes}")
    try:
        image = Image.open(source() if callable(source) else source)
        pixels = image.width * image.height
        if pixels > limits.max_pixels:
            raise ImageRejected("oversized_image", f"{path}: {image.width}x{image.height} = {pixels} "
                                f"pixels > max_pixels {limits.max_pixels}")
        image.load()
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageRejected("unreadable_image", f"{path}: {type(exc).__name__}: {exc}") from exc
    return image.convert("RGB")


def _source(path: str | os.PathLike):
    """(what PIL opens, size in bytes or None when missing): a local path, or for an object-store URI
    (``recsys.storage``) a function returning the object's bytes, read only after the size checks."""
    from recsys import storage

    if storage.is_local(path):
        local = storage.local_path(path)
        return (local, local.stat().st_size) if local.is_file() else (local, None)
    try:
        fs, inner = storage.filesystem(path)
        info = fs.get_file_info(inner)
    except OSError as exc:
        raise ImageRejected("unreadable_image", f"{path}: {type(exc).__name__}: {exc}") from exc
    if info.type != storage.pafs.FileType.File:
        return None, None
    return (lambda: io.BytesIO(storage.read_bytes(path))), info.size


def clip_box(x: float, y: float, width: float, height: float, image_width: int,
             image_height: int) -> tuple[int, int, int, int] | None:
    """Box -> integer (left, top, right, bottom) inside the image, or None when nothing is left."""
    left, top = max(0, int(x)), max(0, int(y))
    right, bottom = min(image_width, int(round(x + width))), min(image_height, int(round(y + height)))
    if right - left < 2 or bottom - top < 2:
        return None
    return left, top, right, bottom


def save_crop(image: Image.Image, box: tuple[int, int, int, int], out_path: str | os.PathLike,
              quality: int = 90) -> str:
    """Write the crop as JPEG to a local path or an object-store URI; returns where it went."""
    from recsys import storage

    if not storage.is_local(out_path):
        buffer = io.BytesIO()
        image.crop(box).save(buffer, format="JPEG", quality=quality)
        return storage.write_bytes(str(out_path), buffer.getvalue())
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    image.crop(box).save(out_path, format="JPEG", quality=quality)
    return str(out_path)
