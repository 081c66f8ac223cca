"""Catalog preparation for the item towers (and every stage that needs item features): which
catalog, how items are split, and the featurized rows.

Splits: a ``cold_fraction`` of items is held out of all training (vocabularies included: their
unseen STD values map to UNKNOWN, as a brand-new product's would); of the rest, ``val_fraction``
selects checkpoints and the remainder trains.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.config import ConfigError
from recsys.data.catalogs import load_item_catalog
from recsys.data.item_features import PRESETS, ItemFeatureConfig, ItemFeaturizer, token_counts
from recsys.encoders.text import TextEncoderConfig, encode_cached


@dataclass
class SplitConfig:
    cold_fraction: float = 0.1    # held out of all training: attributes-only (cold-start) items
    val_fraction: float = 0.05    # of the warm items: checkpoint selection
    seed: int = 42
    max_eval_queries: int = 5000  # warm queries sampled for neighbour metrics (cold: all)


@dataclass
class CatalogConfig:
    items: str | None = None       # canonical items parquet (e.g. a preprocess run's items/)
    catalog: str | None = None     # or a catalog file: FPI styles, H&M articles, any CSV/parquet
    preset: str | None = None      # feature preset (fashion_product_images | hm | kfashion); None: by source
    hierarchy: list[str] | None = None    # override the preset's category levels (generic catalogs: columns)
    std_fields: list[str] | None = None
    re_fields: list[str] | None = None
    id_col: str | None = None      # generic catalogs
    title_col: str | None = None
    preprocess_root: str = "artifacts/preprocess"


@dataclass
class ItemTowerData:
    item_ids: np.ndarray
    features: dict[str, np.ndarray]
    featurizer: ItemFeaturizer
    fine: np.ndarray              # finest category label per item (int)
    parent: np.ndarray            # its parent category label (int)
    categories: np.ndarray        # finest category name per item
    token_sets: list[frozenset]   # STD+RE tokens per item, for intra-list diversity
    train: np.ndarray             # row indices
    val: np.ndarray
    cold: np.ndarray
    source: str
    token_stats: dict = field(default_factory=dict)

    def rows(self, which: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[which] for k, v in self.features.items()} | {"fine": self.fine[which],
                                                                    "parent": self.parent[which]}


def data_source(cfg: CatalogConfig) -> str:
    """The file or folder the config reads (the latest preprocess run's items, resolved)."""
    if cfg.catalog:
        return str(cfg.catalog)
    from recsys.artifacts import latest_run

    return str((Path(cfg.items) if cfg.items else latest_run(cfg.preprocess_root) / "items").resolve())


def load_items(cfg: CatalogConfig) -> tuple[pa.Table, str]:
    """The canonical item table named by the config, and its source name."""
    if cfg.catalog:
        result = load_item_catalog(cfg.catalog, cfg.hierarchy, cfg.std_fields or (), cfg.re_fields or (),
                                   cfg.id_col, cfg.title_col)
        print(f"catalog {cfg.catalog}: {result.records_read} rows read = {result.table.num_rows} items + "
              f"{result.quarantine.num_rows} quarantined")
        return result.table, result.source
    from recsys.artifacts import latest_run

    path = Path(cfg.items) if cfg.items else latest_run(cfg.preprocess_root) / "items"
    table = pq.read_table(path)
    sources = set(table.column("source").to_pylist())
    return table, sources.pop() if len(sources) == 1 else "generic"


def feature_config(cfg: CatalogConfig, source: str) -> ItemFeatureConfig:
    """The catalog's preset with any named overrides; a generic catalog is exactly what was named."""
    overrides = {k: v for k, v in {"hierarchy": cfg.hierarchy, "std_fields": cfg.std_fields,
                                   "re_fields": cfg.re_fields}.items() if v is not None}
    preset = cfg.preset or source
    try:
        if preset in PRESETS and source != "generic":
            return PRESETS[preset](**overrides)
        if not cfg.hierarchy:
            raise ConfigError(f"no feature preset for source {source!r}; name the category levels (--hierarchy)")
        return ItemFeatureConfig(hierarchy=cfg.hierarchy, std_fields=cfg.std_fields or [],
                                 re_fields=cfg.re_fields or [])
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"item features ({preset}): {exc}") from exc


def prepare_items(table: pa.Table, features_cfg: ItemFeatureConfig, split: SplitConfig, source: str,
                  title_vectors_cache: str | Path | None = None) -> ItemTowerData:
    """Split and featurize; with ``title_vectors_cache`` also the frozen MiniLM title vectors
    (``title_vec``, for ``title_mode: vector``), cached there by content."""
    rows = table.select([c for c in ("item_id", "category_path", "std_attributes", "re_attributes", "styles",
                                     "sub_styles", "title", "description") if c in table.column_names]).to_pylist()
    n = len(rows)
    order = np.random.default_rng(split.seed).permutation(n)
    n_cold, n_val = int(n * split.cold_fraction), int(n * split.val_fraction)
    cold, val, train = np.sort(order[:n_cold]), np.sort(order[n_cold:n_cold + n_val]), np.sort(order[n_cold + n_val:])
    featurizer = ItemFeaturizer.fit([rows[i] for i in train], features_cfg)  # cold/val values stay unseen
    features = featurizer.transform(rows)
    if title_vectors_cache:
        features["title_vec"] = encode_cached([r.get("title") for r in rows], TextEncoderConfig(),
                                              title_vectors_cache, "title vectors (MiniLM, frozen)")
    depth = len(features_cfg.hierarchy)
    # A missing level (sparse labels) is its own "(unknown)" category under its parent.
    paths = [[v or "(unknown)" for v in (list(r["category_path"] or []) + [None] * depth)[:depth]] for r in rows]
    fine_names = np.array([" > ".join(p[:depth]) for p in paths])
    parent_names = np.array([" > ".join(p[:depth - 1]) for p in paths])
    fine = np.unique(fine_names, return_inverse=True)[1].reshape(-1)
    parent = np.unique(parent_names, return_inverse=True)[1].reshape(-1)
    tokens = np.concatenate([np.where(features["std_mask"], features["std_ids"], 0),
                             np.where(features["re_mask"], features["re_ids"], 0)], axis=1)
    token_sets = [frozenset(t[t > 0].tolist()) for t in tokens]
    return ItemTowerData(np.array([r["item_id"] for r in rows]), features, featurizer, fine.astype(np.int64),
                         parent.astype(np.int64), np.array([p[depth - 1] for p in paths]),
                         token_sets, train, val, cold, source, token_counts(features))



def load_tower_items(catalog: CatalogConfig, split: SplitConfig, title_mode: str, cache_dir: str | Path) -> ItemTowerData:
    """``load_items`` + ``prepare_items`` as every item-tower stage runs them: the catalog's features,
    MiniLM title vectors cached in ``cache_dir`` only when the tower reads them (``title_mode: vector``)."""
    table, source = load_items(catalog)
    return prepare_items(table, feature_config(catalog, source), split, source,
                         cache_dir if title_mode == "vector" else None)