"""Protocol E1: attribute JSON -> product-title alignment on any catalog table.

The split, the field choice, the zero-shot baseline's query text and the report layout live here,
so the command (``ray_jobs.evaluate_alignment``) and the tests use the same definitions.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from recsys.config import ConfigError
from recsys.encoders.text import TextEncoder, TextEncoderConfig, encode_cached
from recsys.metrics.retrieval import blockwise_ranks, positive_ranks, ranking_summary
from recsys.models.json_encoder import JsonEncoderConfig
from recsys.models.registry import named_config
from recsys.train_loops.alignment import AlignmentTrainConfig
from recsys.train_loops.scaling import ScalingSettings, TaskResources


@dataclass
class AlignmentEvalConfig:
    """``ray_jobs.evaluate_alignment``: the JSON encoder trained per field set against frozen title vectors."""
    encoder: JsonEncoderConfig | str = field(default_factory=lambda: JsonEncoderConfig(fields=[], multi_fields=[]))  # or a configs/models.yaml name
    train: AlignmentTrainConfig = field(default_factory=AlignmentTrainConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    text_task: TaskResources = field(default_factory=TaskResources)  # the Ray task of MiniLM (num_gpus: on a GPU)
    split_seed: int = 42
    val_fraction: float = 0.2          # EVAL.md's validation share: reported, evaluated once after training
    selection_fraction: float = 0.1    # share of the training rows that picks the best epoch (not trained on)

    def __post_init__(self):
        self.encoder = named_config(self.encoder, JsonEncoderConfig, "json_encoder")  # a configs/models.yaml name, or the block
        for name in ("val_fraction", "selection_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: expected a share between 0 and 1")


MAX_CATEGORICAL_VALUES = 1000  # more distinct values than this is free text, not a category


def e1_split(n_rows: int, seed: int = 42, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """EVAL.md E1: ``default_rng(42).permutation(n)``; the first 20% validate, the rest train."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_val = int(n_rows * val_fraction)
    return order[n_val:], order[:n_val]


def selection_split(train_idx: np.ndarray, fraction: float, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """The training rows split again: (rows to fit, rows that pick the best epoch). EVAL.md fixes only
    the validation rows; choosing the epoch on them would report a maximum over epochs."""
    order = np.random.default_rng(seed + 1).permutation(len(train_idx))
    n_select = max(1, int(len(train_idx) * fraction))
    return train_idx[np.sort(order[n_select:])], train_idx[np.sort(order[:n_select])]


def find_brand_column(columns: Sequence[str]) -> str | None:
    return next((c for c in columns if "brand" in c.lower()), None)


def default_fields(frame: pd.DataFrame, id_col: str | None, text_col: str) -> list[str]:
    """Categorical columns other than id, text and brand: text-valued (not numbers such as year or
    price) with at most MAX_CATEGORICAL_VALUES distinct values. Brand gets its own run."""
    skip = {id_col, text_col, find_brand_column(frame.columns)}
    fields = []
    for column in frame.columns:
        if column in skip:
            continue
        values = frame[column].dropna().astype(str)
        values = values[values != ""]
        if values.empty or values.nunique() > MAX_CATEGORICAL_VALUES:
            continue
        if pd.to_numeric(values, errors="coerce").notna().all():
            continue
        fields.append(column)
    return fields


def records_from_frame(frame: pd.DataFrame, fields: Sequence[str]) -> list[dict[str, str | None]]:
    """Rows -> ``{field: value}``; empty and missing values become None, i.e. the field's "unknown"."""
    out = []
    for row in frame[list(fields)].itertuples(index=False, name=None):
        out.append({f: (None if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""
                        else str(v).strip()) for f, v in zip(fields, row)})
    return out


def attribute_text(record: dict[str, str | None], fields: Sequence[str]) -> str:
    """The zero-shot baseline's query: attribute values joined by spaces ("Men Apparel Topwear ...")."""
    return " ".join(record[f] for f in fields if record.get(f))


def target_labels(texts: Sequence[str]) -> np.ndarray:
    """Equal texts share a label, so in-batch duplicates count as positives during training."""
    _, labels = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    return labels.astype(np.int64)


# --- the zero-shot baseline and the frozen title vectors (one Ray task in ray_jobs.evaluate_alignment) ---

REPORTED = ("top1", "top5", "top10", "mrr")


def short_summary(summary: dict) -> dict:
    return {k: round(summary[k], 4) for k in REPORTED if k in summary}


def zero_shot(records: list[dict], fields: list[str], title_vectors: np.ndarray, cfg: AlignmentEvalConfig) -> dict:
    """MiniLM(attribute values joined by spaces) against MiniLM(title): no training."""
    texts = [attribute_text(r, fields) for r in records]
    unique, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    queries = TextEncoder(cfg.text_encoder).encode(list(unique))[inverse]
    return {"full": short_summary(ranking_summary(positive_ranks(queries, title_vectors))),
            "inbatch64": short_summary(ranking_summary(blockwise_ranks(queries, title_vectors, 64)))}


def text_side(titles: list[str], val_records: list[dict], val_idx: np.ndarray, fields: list[str],
              cfg: AlignmentEvalConfig, cache_dir: Path) -> tuple[np.ndarray, dict]:
    """The frozen title vectors and the zero-shot baseline: one Ray task (``text_task``), MiniLM's work."""
    if cfg.text_task.num_gpus == 0:  # stay off any GPU Ray did not give the task (it leaves CUDA visible then)
        cfg = replace(cfg, text_encoder=replace(cfg.text_encoder, device="cpu"))
    title_vectors = encode_cached(titles, cfg.text_encoder, cache_dir, "title embeddings")
    return title_vectors, zero_shot(val_records, fields, title_vectors[val_idx], cfg)
