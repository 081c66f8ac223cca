"""Garment crops -> image-vector rows: the recipe the embed job's actors run, batch by batch.

Decoding and the per-image resize of the next encoder batch run in a background thread while the
model runs on the current one (PIL releases the GIL), so on a CPU actor they hide behind the model
pass instead of adding to it.
"""
from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import torch

from recsys.data.images import ImageRejected, open_checked
from recsys.data.vectors import vector_column
from recsys.encoders.image import AugmentConfig, ImageEncoder, augmented_views

T = TypeVar("T")
R = TypeVar("R")


def prefetched(prepare: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``prepare(item)`` for each item in order, the next one computed in a background thread while
    the caller works on the current one."""
    items = iter(items)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = next((pool.submit(prepare, item) for item in items), None)
        while pending is not None:
            ready = pending.result()
            pending = next((pool.submit(prepare, item) for item in items), None)
            yield ready


@dataclass
class CropBatch:
    """Decoded, preprocessed crops of some items: one row per view, unusable items apart."""
    ids: list[str] = field(default_factory=list)
    views: list[int] = field(default_factory=list)
    pixels: torch.Tensor | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)  # (item_id, reason detail)


def decode_crops(item_ids: Sequence[str], paths: Sequence[str | None],
                 augment: AugmentConfig = AugmentConfig()) -> tuple[CropBatch, list]:
    """Open every crop (checked); unusable ones become error rows so the counts still add up."""
    batch, images = CropBatch(), []
    for item_id, path in zip(item_ids, paths):
        try:
            if not path:
                raise ImageRejected("missing_image", f"item {item_id} has no crop_path or image_path")
            image = open_checked(path)
        except ImageRejected as exc:
            batch.errors.append((item_id, exc.detail))
            continue
        extra = augmented_views(image, augment, zlib.crc32(item_id.encode())) if augment.views else []
        for view, picture in enumerate([image] + extra):
            batch.ids.append(item_id)
            batch.views.append(view)
            images.append(picture)
    return batch, images


def load_crops(encoder: ImageEncoder, item_ids: Sequence[str], paths: Sequence[str | None],
               augment: AugmentConfig = AugmentConfig()) -> CropBatch:
    batch, images = decode_crops(item_ids, paths, augment)
    batch.pixels = encoder.pixels(images) if images else None
    return batch


def embed_crops(encoder: ImageEncoder, item_ids: Sequence[str], paths: Sequence[str | None],
                augment: AugmentConfig = AugmentConfig()) -> pa.Table:
    """Rows (item_id, view, vector, error): a unit vector per view, a null vector with the reason
    for each unusable crop."""
    # Views multiply the rows of a chunk; keep the model's batches near the configured size.
    step = max(1, encoder.config.batch_size // (1 + augment.views))
    chunks = [(item_ids[i:i + step], paths[i:i + step]) for i in range(0, len(item_ids), step)]
    ids, views, vectors, errors = [], [], [], []
    for batch in prefetched(lambda chunk: load_crops(encoder, *chunk, augment), chunks):
        if batch.pixels is not None:
            vectors.append(encoder.encode_pixels(batch.pixels))
        ids += batch.ids
        views += batch.views
        errors += batch.errors
    vector_type = pa.list_(pa.float32(), encoder.dim)
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
    return pa.table({
        "item_id": pa.array(ids + [e[0] for e in errors], pa.string()),
        "view": pa.array(views + [0] * len(errors), pa.int16()),
        "vector": pa.concat_arrays([vector_column(stacked).cast(vector_type), pa.nulls(len(errors), vector_type)]),
        "error": pa.array([None] * len(ids) + [e[1] for e in errors], pa.string()),
    })
