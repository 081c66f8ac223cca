"""Do an image encoder's nearest neighbours look alike? Measured on labelled real photos.

For each photo, its k nearest other photos by cosine: the share that have the same label for each
attribute (``category_hit@k`` of ``recsys.metrics.neighbours``; on H&M: colour group, product type,
graphical appearance), beside chance (the share of random other photos with that label) and the
spread of the space (mean and standard deviation of the cosine between distinct photos: a
random-weight ViT puts every photo at ~0.99 of every other). Every encoder is measured on the same
photos with the same code in one run; each result names its weights (``pretrained_label``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from recsys.config import ConfigError
from recsys.encoders.image import ImageEncoder, ImageEncoderConfig, pretrained_label
from recsys.metrics.neighbours import category_hit, chance_category_hit, top_k_neighbours

HM_ATTRIBUTES = ["colour_group_name", "product_type_name", "graphical_appearance_name"]


def _default_encoders() -> dict[str, ImageEncoderConfig]:
    return {"hand-crafted": ImageEncoderConfig(), "random ViT-M-32": ImageEncoderConfig(model="ViT-M-32")}


@dataclass
class ImageEncoderEvalConfig:
    images: str | None = "../shared/data/hm_pse_subset/images"   # photos named <id>.jpg; None: the items' crops
    labels: str = "../shared/data/hm_pse_subset/articles.parquet"  # a label table, or canonical items (images: null)
    id_column: str = "article_id"                                # matched to the file stem (as integers when digits)
    attributes: list[str] = field(default_factory=lambda: list(HM_ATTRIBUTES))  # columns, or STD fields of items
    encoders: dict[str, ImageEncoderConfig] = field(default_factory=_default_encoders)
    k: list[int] = field(default_factory=lambda: [1, 5])
    grid_queries: int = 4                                        # photos shown with their nearest neighbours
    grid_k: int = 6
    seed: int = 0
    output_root: str = "artifacts/eval_image_encoders"


@dataclass
class LabelledPhotos:
    ids: list[str]
    paths: list[str]
    labels: dict[str, np.ndarray]      # attribute -> (N,) label strings
    unlabelled: list[str]              # photos whose id is not in the label table (reported, not used)


def _key(value) -> str:
    text = str(value)
    return str(int(text)) if text.isdigit() else text


def labelled_photos(images: str | Path, labels: str | Path, id_column: str, attributes: Sequence[str]) -> LabelledPhotos:
    """Photos under ``images`` joined to their rows of the label table by id; clear errors for a
    missing folder, file or column."""
    images, labels = Path(images), Path(labels)
    if not images.is_dir():
        raise ConfigError(f"images: {images} is not a directory of <id>.jpg photos")
    if not labels.is_file():
        raise ConfigError(f"labels: {labels} does not exist (expected a parquet table with {id_column!r})")
    table = pq.read_table(labels)
    missing = [c for c in [id_column, *attributes] if c not in table.column_names]
    if missing:
        raise ConfigError(f"labels {labels}: no column(s) {missing}; it has {table.column_names}")
    rows = {_key(v): i for i, v in enumerate(table.column(id_column).to_pylist())}
    ids, paths, unlabelled = [], [], []
    for path in sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
        key = _key(path.stem)
        if key in rows:
            ids.append(key), paths.append(str(path))
        else:
            unlabelled.append(key)
    take = [rows[i] for i in ids]
    columns = {a: np.array(pc.cast(table.column(a), "string").to_pylist(), dtype=object)[take] for a in attributes}
    return LabelledPhotos(ids, paths, columns, unlabelled)


def item_crops(items: str | Path, attributes: Sequence[str]) -> LabelledPhotos:
    """Canonical items (a preprocess run's ``items``): each item's crop (or image) labelled by its
    STD attributes (first value; ``category`` is the finest category) -- the demo corpus's garments."""
    items = Path(items)
    if not items.exists():
        raise ConfigError(f"labels: {items} does not exist (expected canonical items parquet)")
    rows = pq.read_table(items, columns=["item_id", "category", "std_attributes", "crop_path", "image_path"]).to_pylist()
    ids, paths, labels = [], [], {a: [] for a in attributes}
    for row in rows:
        path = row["crop_path"] or row["image_path"]
        if not path:
            continue
        values = {a["field"]: a["values"][0] if a["values"] else None for a in row["std_attributes"] or []}
        values["category"] = row["category"]
        ids.append(row["item_id"]), paths.append(path)
        for a in attributes:
            labels[a].append(str(values.get(a)))    # a missing value is its own label, "None"
    return LabelledPhotos(ids, paths, {a: np.array(v, dtype=object) for a, v in labels.items()}, [])


def encode_photos(paths: Sequence[str], config: ImageEncoderConfig) -> np.ndarray:
    """(N, dim) unit vectors of the photos, batch by batch."""
    encoder = ImageEncoder(config)
    batch = config.batch_size
    parts = []
    for start in range(0, len(paths), batch):
        images = [Image.open(p).convert("RGB") for p in paths[start:start + batch]]
        parts.append(encoder.encode(images))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def neighbour_agreement(vectors: np.ndarray, labels: Mapping[str, np.ndarray], ks: Sequence[int]) -> dict:
    """{attribute: {"@k": share of the k nearest other photos with the query's label}} plus the
    cosine spread between distinct photos."""
    own = np.arange(len(vectors))
    neighbours = top_k_neighbours(vectors, vectors, max(ks), query_ids=own)
    report = {a: {f"@{k}": round(category_hit(neighbours[:, :k], values, values), 4) for k in ks}
              for a, values in labels.items()}
    cosines = vectors @ vectors.T
    off_diagonal = cosines[~np.eye(len(vectors), dtype=bool)]
    return {"agreement": report, "cosine_mean": round(float(off_diagonal.mean()), 4),
            "cosine_std": round(float(off_diagonal.std()), 4)}


def chance(labels: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {a: round(chance_category_hit(values), 4) for a, values in labels.items()}


def evaluate_encoders(photos: LabelledPhotos, encoders: Mapping[str, ImageEncoderConfig],
                      ks: Sequence[int]) -> tuple[dict, dict[str, np.ndarray]]:
    """Every encoder on the same photos: ({name: report}, {name: vectors})."""
    results, vectors = {}, {}
    for name, config in encoders.items():
        vectors[name] = encode_photos(photos.paths, config)
        results[name] = {"pretrained": pretrained_label(config), "model": config.model,
                         **neighbour_agreement(vectors[name], photos.labels, ks)}
    return results, vectors
