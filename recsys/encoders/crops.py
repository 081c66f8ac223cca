"""Garment crops -> image-vector rows: the recipe the embed job's actors run, batch by batch.

Each model batch is decoded and resized by a small thread pool (one thread per torch thread: PIL
releases the GIL while it decodes and resizes), then stacked into a tensor and run through the
model in the calling thread. Measured on 2 CPUs, this beats overlapping decode with the model pass
in a background thread (the two fought over the cores and the GIL), and torch ops stay out of the
pool (torch ops in extra threads start OpenMP teams of their own that left the cores idle).
"""
from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch

from recsys.data.images import ImageRejected, open_checked
from recsys.data.vectors import vector_column
from recsys.encoders.image import AugmentConfig, ImageEncoder, augmented_views


@dataclass
class CropBatch:
    """Decoded, preprocessed crops of some items: one row per view, unusable items apart."""
    ids: list[str] = field(default_factory=list)
    views: list[int] = field(default_factory=list)
    prepared: list = field(default_factory=list)  # ImageEncoder.prepare output, one per row
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
    batch.prepared = encoder.prepare(images) if images else []
    return batch


def embed_crops(encoder: ImageEncoder, item_ids: Sequence[str], paths: Sequence[str | None],
                augment: AugmentConfig = AugmentConfig(), decode_threads: int | None = None) -> pa.Table:
    """Rows (item_id, view, vector, error): a unit vector per view, a null vector with the reason
    for each unusable crop. ``decode_threads``: default torch's thread count (the actor's CPUs)."""
    # Views multiply the rows of a chunk; keep the model's batches near the configured size.
    step = max(1, encoder.config.batch_size // (1 + augment.views))
    # Augmented views draw from torch's global RNG (torchvision), so they are made in one thread.
    threads = 1 if augment.views else max(1, decode_threads or torch.get_num_threads())
    piece = -(-step // threads)
    ids, views, vectors, errors = [], [], [], []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(item_ids), step):
            stop = min(start + step, len(item_ids))
            pieces = list(pool.map(lambda at: load_crops(encoder, item_ids[at:min(at + piece, stop)],
                                                         paths[at:min(at + piece, stop)], augment),
                                   range(start, stop, piece)))
            prepared = [image for batch in pieces for image in batch.prepared]
            if prepared:
                vectors.append(encoder.encode_pixels(encoder.stack(prepared)))
            for batch in pieces:
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
