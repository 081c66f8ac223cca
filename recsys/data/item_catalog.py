"""Catalog preparation for the item towers (and every stage that needs item features): which
catalog, how items are split, and the featurized rows.

Splits: an ``unseen_category_fraction`` of items is held out as whole finest categories (no item of
such a category is trained on: a new product type), then a ``cold_fraction`` of the rest as single
items (a new product of a known type); both are out of all training, vocabularies included (their
unseen STD values map to UNKNOWN, as a brand-new product's would). Of the remaining items,
``val_fraction`` selects checkpoints and the remainder trains.

Leak-free inputs (:class:`LeakFreeConfig`, the evaluation's default): when a metric's label is a
category level, that level, every finer one and any field copying it leave the inputs
(``recsys.data.item_features.withhold_label``); the labels still come from the full path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.config import ConfigError
from recsys.data.catalogs import load_item_catalog
from recsys.data.item_features import (PRESETS, ItemFeatureConfig, ItemFeaturizer, input_text, token_counts,
                                      withhold_label)
from recsys.encoders.text import TextEncoderConfig, encode_cached


@dataclass
class SplitConfig:
    cold_fraction: float = 0.1    # held out of all training: attributes-only (cold-start) items
    val_fraction: float = 0.05    # of the warm items: checkpoint selection
    seed: int = 42
    max_eval_queries: int = 5000  # warm queries sampled for neighbour metrics (cold: all)
    unseen_category_fraction: float = 0.0   # share of items held out as whole finest categories
    min_category_items: int = 5   # an unseen category needs this many items (its neighbour metric)


@dataclass
class LeakFreeConfig:
    """Which inputs a category metric's label removes (module doc)."""
    enabled: bool = False         # the item-tower evaluation turns it on; a served tower keeps its category
    label_level: int = -1         # the coarsest level withheld, with every finer one (-1: the finest,
                                  # the level the metrics label; a coarser one makes the task harder)
    copy_share: float = 0.5       # a field equal to the label on this share of its items is withheld


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
    cold: np.ndarray              # unseen items of seen categories
    source: str
    token_stats: dict = field(default_factory=dict)
    unseen_category: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # whole categories held out
    withheld: dict = field(default_factory=dict)   # leak-free: {"levels": [...], "fields": {field: share}}
    table: pa.Table | None = None  # the item rows, in row order (read again only for text baselines)

    @cached_property
    def texts(self) -> list[str]:
        """Each item's inputs as text (``input_text`` under the input config), for text baselines;
        computed on first use, so the training stages that never ask pay nothing."""
        return [input_text(row, self.featurizer.config) for row in _item_rows(self.table)]

    def rows(self, which: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[which] for k, v in self.features.items()} | {"fine": self.fine[which],
                                                                    "parent": self.parent[which]}


def data_source(cfg: CatalogConfig) -> str:
    """The file or folder the config reads (the latest preprocess run's items, resolved)."""
    if cfg.catalog:
        return str(cfg.catalog)
    from recsys.artifacts import latest_location, location_of

    return location_of(cfg.items) if cfg.items else location_of(latest_location(cfg.preprocess_root) + "/items")


def load_items(cfg: CatalogConfig) -> tuple[pa.Table, str]:
    """The canonical item table named by the config, and its source name."""
    if cfg.catalog:
        result = load_item_catalog(cfg.catalog, cfg.hierarchy, cfg.std_fields or (), cfg.re_fields or (),
                                   cfg.id_col, cfg.title_col)
        print(f"catalog {cfg.catalog}: {result.records_read} rows read = {result.table.num_rows} items + "
              f"{result.quarantine.num_rows} quarantined")
        return result.table, result.source
    from recsys.artifacts import latest_run, local_copy

    path = local_copy(cfg.items) if cfg.items else latest_run(cfg.preprocess_root) / "items"
    table = pq.read_table(path)
    return table, table_source(table)


def table_source(table: pa.Table) -> str:
    """A canonical item table's ``source`` (its catalog's feature preset), ``generic`` when mixed."""
    sources = set(table.column("source").to_pylist())
    return sources.pop() if len(sources) == 1 else "generic"


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


def _item_rows(table: pa.Table) -> list[dict]:
    """The columns item features read, as row dicts."""
    return table.select([c for c in ("item_id", "category_path", "std_attributes", "re_attributes", "styles",
                                     "sub_styles", "title", "description") if c in table.column_names]).to_pylist()


def split_items(categories: np.ndarray, split: SplitConfig) -> tuple[np.ndarray, ...]:
    """Row indices ``(train, val, cold, unseen_category)`` (module doc). Unseen categories are drawn
    whole, in a seeded order, while they fit the item budget; categories with fewer than
    ``min_category_items`` items are never drawn."""
    n = len(categories)
    names, inverse, counts = np.unique(categories, return_inverse=True, return_counts=True)
    held = np.zeros(len(names), dtype=bool)
    budget = int(n * split.unseen_category_fraction)
    for category in np.random.default_rng([split.seed, 1]).permutation(len(names)):
        if split.min_category_items <= counts[category] <= budget:
            held[category] = True
            budget -= counts[category]
    unseen = np.flatnonzero(held[inverse.reshape(-1)])
    # Items drawn as before categories existed: without unseen categories a seed gives the same split.
    rest = np.setdiff1d(np.arange(n), unseen)[np.random.default_rng(split.seed).permutation(n - len(unseen))]
    n_cold, n_val = int(n * split.cold_fraction), int(n * split.val_fraction)
    return (np.sort(rest[n_cold + n_val:]), np.sort(rest[n_cold:n_cold + n_val]), np.sort(rest[:n_cold]), unseen)


def prepare_items(table: pa.Table, features_cfg: ItemFeatureConfig, split: SplitConfig, source: str,
                  title_vectors_cache: str | Path | None = None,
                  leak_free: LeakFreeConfig | None = None) -> ItemTowerData:
    """Split and featurize; with ``title_vectors_cache`` also the frozen MiniLM title vectors
    (``title_vec``, for ``title_mode: vector``), cached there by content. Labels (``fine``,
    ``parent``) come from the full ``features_cfg.hierarchy``; with ``leak_free`` enabled the
    inputs use ``withhold_label``'s config (``data.featurizer.config``)."""
    rows = _item_rows(table)
    depth = len(features_cfg.hierarchy)
    # A missing level (sparse labels) is its own "(unknown)" category under its parent.
    paths = [[v or "(unknown)" for v in (list(r["category_path"] or []) + [None] * depth)[:depth]] for r in rows]
    fine_names = np.array([" > ".join(p[:depth]) for p in paths])
    parent_names = np.array([" > ".join(p[:depth - 1]) for p in paths])
    train, val, cold, unseen = split_items(fine_names, split)
    withheld, input_cfg = {}, features_cfg
    if leak_free is not None and leak_free.enabled:
        try:
            input_cfg, withheld = withhold_label(features_cfg, [rows[i] for i in train], leak_free.label_level,
                                                 leak_free.copy_share, name_items=rows)
        except ValueError as exc:
            raise ConfigError(f"leak_free: {exc}") from exc
    featurizer = ItemFeaturizer.fit([rows[i] for i in train], input_cfg)  # held-out values stay unseen
    features = featurizer.transform(rows)
    if title_vectors_cache:
        features["title_vec"] = encode_cached([r.get("title") for r in rows], TextEncoderConfig(),
                                              title_vectors_cache, "title vectors (MiniLM, frozen)")
    fine = np.unique(fine_names, return_inverse=True)[1].reshape(-1)
    parent = np.unique(parent_names, return_inverse=True)[1].reshape(-1)
    tokens = np.concatenate([np.where(features["std_mask"], features["std_ids"], 0),
                             np.where(features["re_mask"], features["re_ids"], 0)], axis=1)
    token_sets = [frozenset(t[t > 0].tolist()) for t in tokens]
    return ItemTowerData(np.array([r["item_id"] for r in rows]), features, featurizer, fine.astype(np.int64),
                         parent.astype(np.int64), np.array([p[depth - 1] for p in paths]),
                         token_sets, train, val, cold, source, token_counts(features), unseen, withheld, table)


def load_tower_items(catalog: CatalogConfig, split: SplitConfig, title_mode: str, cache_dir: str | Path,
                     leak_free: LeakFreeConfig | None = None, table: pa.Table | None = None) -> ItemTowerData:
    """``load_items`` (or the given ``table``) + ``prepare_items`` as every item-tower stage runs them:
    the catalog's features, MiniLM title vectors cached in ``cache_dir`` only when the tower reads
    them (``title_mode: vector``)."""
    if table is None:
        table, source = load_items(catalog)
    else:
        source = table_source(table)
    return prepare_items(table, feature_config(catalog, source), split, source,
                         cache_dir if title_mode == "vector" else None, leak_free)