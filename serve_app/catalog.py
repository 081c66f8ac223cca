"""The served catalog: canonical items + their image (and text) vectors + the API's changes.

One :class:`Catalog` is one immutable-by-reference version of what a Retriever searches: built in
full from a version's artifacts and the durable :class:`~recsys.stores.item_log.ItemLog` (a file
log on one node, or PostgreSQL shared by all), then swapped in. Vectors live in append-only row
matrices (exact re-scoring, MMR); the image and text indexes find candidates by item id. A deleted
item is removed from both (the indexes' soft delete, an exclusion filter every search applies);
re-adding an id appends a new row. Mutations and reads hold ``lock`` (searches take milliseconds).

The image index has two backends (``index.backend``): ``faiss``, a :class:`recsys.index.VectorIndex`
per replica (loaded from a build_index run or built from the vectors) to which every replica applies
the item log itself; ``pgvector``, a build_index run's table in PostgreSQL that every replica on every
node searches (``recsys.stores.pgvector_index.PgVectorIndex``). Its rows change in the same transaction
as the item log (``ItemLog.add(..., index=...)``), so a replica never applies an add to it; "new
products only" searches are a SQL ``WHERE`` on the same query. The text index stays a small FAISS one.
"""
from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow.parquet as pq

from recsys.artifacts import location_of
from recsys.data.schema import attributes_to_dict
from recsys.data.vectors import read_vectors
from recsys.config import ConfigError
from recsys.index import IndexConfig, SearchFilter, VectorIndex
from recsys.stores.item_log import PGVECTOR_NEEDS_POSTGRES_LOG, ItemLog

ITEM_COLUMNS = ["item_id", "category_path", "category", "std_attributes", "re_attributes", "styles", "title",
                "crop_path", "image_path", "price"]
TREND_FIELDS = ("category", "color", "style")


class _Rows:
    """A growable float32 matrix (amortised appends)."""

    def __init__(self, data: np.ndarray):
        self._data = np.ascontiguousarray(data, dtype=np.float32)
        self.n = len(data)

    def append(self, row: np.ndarray) -> None:
        if self.n == len(self._data):
            grown = np.zeros((max(16, 2 * len(self._data)), self._data.shape[1]), dtype=np.float32)
            grown[:self.n] = self._data[:self.n]
            self._data = grown
        self._data[self.n] = row
        self.n += 1

    def __getitem__(self, rows):
        return self._data[:self.n][rows]

    @property
    def array(self) -> np.ndarray:
        return self._data[:self.n]


def item_record(row: dict) -> dict:
    """A canonical item row -> the metadata the API returns."""
    std, re = attributes_to_dict(row.get("std_attributes")), attributes_to_dict(row.get("re_attributes"))
    return {"item_id": row["item_id"], "title": row.get("title"), "category": row.get("category"),
            "category_path": list(row.get("category_path") or []), "attributes": {**std, **re},
            "styles": list(row.get("styles") or []), "price": row.get("price"),
            "image": row.get("crop_path") or row.get("image_path"), "source": "catalog", "new": False}


def trend_values(item: dict, field: str) -> list[str]:
    if field == "category":
        return [item["category"]] if item.get("category") else []
    if field == "style":
        return list(item.get("styles") or [])
    return list(item.get("attributes", {}).get(field) or [])


def load_vectors(path: str | Path, view_column: str | None = "view", view_value=0) -> dict[str, np.ndarray]:
    """item_id -> vector of an embeddings parquet (``recsys.data.vectors``: the embed job's format),
    rows of ``view_column == view_value`` only (the original crop, or one text source)."""
    ids, vectors = read_vectors(path, where={view_column: view_value} if view_column else None)
    return {i: vectors[n] for n, i in enumerate(ids)}


class Catalog:
    def __init__(self, version: dict, store: ItemLog, text_source: str | None, new_item_ids: Iterable[str] = (),
                 index_config: IndexConfig | None = None):
        import faiss

        faiss.omp_set_num_threads(1)  # replicas share few cores; one query is one small search
        self.version = version
        self.store = store
        self.pretrained: str | None = None  # the image encoder's weights label (embed_report.json)
        self.lock = threading.RLock()
        items = pq.read_table(version["items"], columns=ITEM_COLUMNS).to_pylist()
        image_vectors = load_vectors(Path(version["embed_run"]) / "image_embeddings")
        text_dir = Path(version["embed_run"]) / "text_embeddings"
        text_vectors = (load_vectors(text_dir, "source", text_source)
                        if text_source and text_dir.exists() else {})
        self.text_dim = len(next(iter(text_vectors.values()))) if text_vectors else None
        new_ids = set(new_item_ids)
        self.items: dict[str, dict] = {}
        self.row_of: dict[str, int] = {}
        self.ids: list[str] = []
        image_rows, text_rows, text_ids = [], [], []
        for row in items:
            item_id = row["item_id"]
            if item_id not in image_vectors or item_id in self.row_of:
                continue
            record = item_record(row)
            record["new"] = item_id in new_ids
            self.items[item_id] = record
            self.row_of[item_id] = len(self.ids)
            self.ids.append(item_id)
            image_rows.append(image_vectors[item_id])
            if self.text_dim:
                text = text_vectors.get(item_id)
                text_rows.append(np.zeros(self.text_dim, dtype=np.float32) if text is None else text)
                if text is not None:
                    text_ids.append(item_id)
        if not self.ids:
            raise ValueError(f"no item of {version['items']} has an image vector in {version['embed_run']}")
        self.dim = len(image_rows[0])
        self.vectors = _Rows(np.stack(image_rows))
        self.index_config = index_config or IndexConfig(kind="exact")
        self.shared_index = getattr(self.index_config, "backend", "faiss") == "pgvector"
        self.index, self.index_info = (self._shared_image_index(version) if self.shared_index
                                       else self._image_index(version))
        # text rows are zeros for items without a text vector; only real ones are indexed
        self.text_vectors = _Rows(np.stack(text_rows)) if self.text_dim else None
        self.text_index = (VectorIndex.build(np.stack([text_vectors[i] for i in text_ids]), text_ids,
                                             IndexConfig(kind="exact")) if text_ids else None)
        self.tower = None  # the item tower's space (serve_app.item_space), when the version names a run
        if version.get("item_tower_run"):
            from serve_app.item_space import TowerSpace  # torch: only when a tower is served

            self.tower = TowerSpace(version["item_tower_run"], self.items)
        self.base_ids = frozenset(self.ids)
        if hasattr(store, "import_catalog"):  # PostgreSQL: the products table gets this items run once
            store.import_catalog([self.items[i] for i in self.ids], items_run=location_of(version["items"]))
        self.deleted: set[str] = set()
        self.mutations = 0
        self._best_cache: tuple[int, float, list[str]] | None = None
        self.offset = 0
        self.sync()

    def _image_index(self, version: dict) -> tuple[VectorIndex, dict]:
        """``build_index``'s artifact when the version names one (``recsys.index.load_index``: a local
        folder, or a URI copied once per content hash into the node-local ``index.cache_dir``; its
        content hash is checked on load; index.faiss memory-mapped when ``index.mmap``), else an
        index built here from the embed run's vectors."""
        import dataclasses

        from recsys import storage
        from recsys.index import load_index

        source = str(Path(version["embed_run"]) / "image_embeddings")
        run = version.get("index_run")
        if not run:
            # only IndexConfig's own fields: the Serve settings add how to load (mmap, cache_dir)
            config = IndexConfig(**{f.name: getattr(self.index_config, f.name)
                                    for f in dataclasses.fields(IndexConfig)})
            index = VectorIndex.build(self.vectors.array, self.ids, config, source=source)
            return index, {"source": "built at load from the embed run's image vectors", "kind": index.kind,
                           "run": None, "version": None, "items_at_load": len(index), "loaded_as": index.loaded_as}
        index = load_index(run, cache_dir=getattr(self.index_config, "cache_dir", None),
                           mmap=getattr(self.index_config, "mmap", False))
        if index.dim != self.dim:
            raise ValueError(f"{run}: a {index.dim}-d index for {self.dim}-d image vectors of {version['embed_run']}")
        return index, {"source": "build_index artifact", "kind": index.kind, "run": storage.name(location_of(run)),
                       "version": index.version, "items_at_load": len(index), "loaded_as": index.loaded_as}

    def _shared_image_index(self, version: dict):
        """The build_index run's pgvector table (``index.backend: pgvector``), in the item log's database,
        brought up to date with the item log; no vectors are loaded into the replica for it."""
        from recsys import storage
        from recsys.index import DEFAULT_CACHE_DIR
        from recsys.stores.pgvector_index import BACKEND, META_FILE, PgVectorIndex

        run, dsn = version.get("index_run"), getattr(self.store, "dsn", None)
        if dsn is None:
            raise ConfigError(PGVECTOR_NEEDS_POSTGRES_LOG)
        cache_dir = getattr(self.index_config, "cache_dir", None) or DEFAULT_CACHE_DIR
        local = storage.local_cache(run, cache_dir) if run else None
        if not run or not (local / META_FILE).is_file():
            raise ConfigError(f"index.backend is pgvector but the version's index_run ({run}) is not a pgvector "
                              "build_index run: build one with `python -m ray_jobs.build_index --set "
                              f"backend=pgvector ...` over {version['embed_run']}/image_embeddings")
        index = PgVectorIndex.load(local, dsn, live=True)
        if index.dim != self.dim:
            raise ValueError(f"{run}: a {index.dim}-d index for {self.dim}-d image vectors of {version['embed_run']}")
        applied = self.store.catch_up(index)
        return index, {"source": "build_index artifact", "backend": BACKEND, "table": index.name, "kind": index.kind,
                       "run": storage.name(location_of(run)), "version": None, "items_at_load": len(index),
                       "item_log_operations_applied_at_load": applied, "loaded_as": "shared PostgreSQL table"}

    # -- the API's changes ---------------------------------------------------------------------
    @property
    def writes_index(self):
        """The index the item log changes in its own transaction (pgvector), else None (FAISS: each
        replica applies the log itself)."""
        return self.index if self.shared_index else None

    def sync(self) -> int:
        """Apply operations appended to the store since the last sync (by any replica)."""
        with self.lock:
            operations, offset = self.store.read_since(self.offset)
            # the position read takes no lock; catch_up waits for the append lock, so only when behind
            if operations and self.shared_index and self.store.applied_position(self.index) < offset:
                self.store.catch_up(self.index)  # written by replicas that serve another table
            for operation in operations:
                if operation.get("op") == "add":
                    self._apply_add(operation["item"], operation["vector"], operation.get("text_vector"))
                elif operation.get("op") == "delete":
                    self._apply_delete(operation["item_id"])
            self.offset = offset
            return len(operations)

    def _apply_add(self, item: dict, vector: np.ndarray, text_vector: np.ndarray | None) -> None:
        item_id = item["item_id"]
        self._unindex(item_id)
        row = len(self.ids)
        self.ids.append(item_id)
        self.row_of[item_id] = row
        self.items[item_id] = dict(item)
        self.deleted.discard(item_id)
        self.vectors.append(vector)
        if not self.shared_index:
            self.index.add(vector[None], [item_id])
        if self.tower is not None:
            self.tower.add(self.items[item_id])
        if self.text_vectors is not None:
            usable = text_vector is not None and len(text_vector) == self.text_dim
            self.text_vectors.append(text_vector if usable else np.zeros(self.text_dim, dtype=np.float32))
            if usable:
                if self.text_index is None:
                    self.text_index = VectorIndex.build(text_vector[None], [item_id], IndexConfig(kind="exact"))
                else:
                    self.text_index.add(text_vector[None], [item_id])
        self.mutations += 1

    def _unindex(self, item_id: str) -> None:
        for index in (None if self.shared_index else self.index, self.text_index):
            if index is not None and item_id in index:
                index.remove([item_id])
        if self.tower is not None:
            self.tower.remove(item_id)

    def _apply_delete(self, item_id: str) -> None:
        if self.row_of.pop(item_id, None) is None:
            return
        self._unindex(item_id)
        self.items.pop(item_id, None)
        self.deleted.add(item_id)
        self.mutations += 1

    # -- reads ---------------------------------------------------------------------------------
    def get(self, item_id: str) -> dict | None:
        with self.lock:
            item = self.items.get(item_id)
            return dict(item) if item is not None else None

    def vector_of(self, item_id: str) -> np.ndarray | None:
        with self.lock:
            row = self.row_of.get(item_id)
            return None if row is None else self.vectors[row].copy()

    def live_ids(self, new: bool | None = None) -> list[str]:
        with self.lock:
            return [i for i, item in self.items.items() if new is None or item.get("new") == new]

    def counts(self) -> dict:
        with self.lock:
            added = sum(1 for item in self.items.values() if item.get("source") == "api")
            return {"items": len(self.items), "new_items": sum(1 for i in self.items.values() if i.get("new")),
                    "added_through_api": added, "deleted": len(self.deleted), "index_rows": len(self.ids),
                    "text_search": self.text_dim is not None, "index": self.index_info,
                    "item_tower": self.tower.describe() if self.tower is not None else None}

    def search(self, vector: np.ndarray | None, text_vector: np.ndarray | None, k: int, text_weight: float,
               exclude_ids: Iterable[str] = (), only_ids: Iterable[str] | None = None
               ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Top ``k`` live items: (ids, scores, image vectors). ``only_ids`` restricts the candidates:
        with FAISS scored exactly over that set here; with the shared pgvector index each channel's top
        ``k`` within the set (a SQL filter on the image table, an id selector on the text index) is
        re-scored, as unrestricted searches are. Otherwise the indexes are searched with an exclusion filter."""
        with self.lock:
            exclude_rows = {self.row_of[i] for i in exclude_ids if i in self.row_of}
            channels = [(w, q, rows, index) for w, q, rows, index in (
                (1.0 - text_weight if text_vector is not None else 1.0, vector, self.vectors, self.index),
                (text_weight if vector is not None else 1.0, text_vector, self.text_vectors, self.text_index))
                if q is not None]
            if only_ids is not None and not self.shared_index:
                candidates = np.array(sorted({self.row_of[i] for i in only_ids if i in self.row_of} - exclude_rows),
                                      dtype=np.int64)
            else:
                found, only = set(), self._only_filter(only_ids)
                for _, query, _, index in channels:  # both backends take the filter (FAISS: an id selector)
                    found |= self._index_rows(index, query[None], k, exclude_rows, only)
                candidates = np.array(sorted(found), dtype=np.int64)
            if len(candidates) == 0:
                return [], np.zeros(0, dtype=np.float32), np.zeros((0, self.dim), dtype=np.float32)
            scores = sum(weight * (rows[candidates] @ query) for weight, query, rows, _ in channels)
            order = np.argsort(-scores, kind="stable")[:k]
            chosen = candidates[order]
            return [self.ids[r] for r in chosen], scores[order].astype(np.float32), self.vectors[chosen].copy()

    def search_set(self, queries: np.ndarray, k: int, exclude_ids: Iterable[str] = (),
                   only_ids: Iterable[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Items closest to any of several query vectors (score = max cosine over the set)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        with self.lock:
            exclude_rows = {self.row_of[i] for i in exclude_ids if i in self.row_of}
            if only_ids is not None and not self.shared_index:
                candidates = {self.row_of[i] for i in only_ids if i in self.row_of} - exclude_rows
            else:
                candidates = self._index_rows(self.index, queries, k, exclude_rows, self._only_filter(only_ids))
            candidates = np.array(sorted(candidates), dtype=np.int64)
            if len(candidates) == 0 or len(queries) == 0:
                return [], np.zeros(0, dtype=np.float32), np.zeros((0, self.dim), dtype=np.float32)
            scores = (self.vectors[candidates] @ queries.T).max(axis=1)
            order = np.argsort(-scores, kind="stable")[:k]
            chosen = candidates[order]
            return [self.ids[r] for r in chosen], scores[order].astype(np.float32), self.vectors[chosen].copy()

    def _only_filter(self, only_ids: Iterable[str] | None) -> SearchFilter | None:
        """``only_ids`` as the shared index's SQL filter (with FAISS such sets are scored exactly here)."""
        if only_ids is None:
            return None
        return SearchFilter(item_ids=[i for i in only_ids if i in self.row_of])

    def _index_rows(self, index: VectorIndex | None, queries: np.ndarray, k: int, exclude_rows: set[int],
                    only: SearchFilter | None = None) -> set[int]:
        """Rows of the top ``k`` live items per query (that pass ``only``), excluding ``exclude_rows``
        (over-fetched by their number, so exactly k remain when the catalog has them)."""
        if index is None or (only is not None and not only.item_ids):
            return set()
        # a FAISS artifact may hold ids the catalog lacks, so its own live count bounds k; the shared
        # table's would be a count query per search, and the catalog's items are what it can return
        live = len(self.items) if index is self.index and self.shared_index else len(index)
        hits = index.search(queries, min(k + len(exclude_rows), max(1, live)), filter=only)
        rows = set()
        for ids in hits.item_ids:
            picked = [self.row_of[i] for i in ids.tolist() if i and i in self.row_of]
            rows.update([r for r in picked if r not in exclude_rows][:k])
        return rows

    def best_sellers(self, share: float, sales: dict[str, int] | None = None) -> list[str]:
        """Top ``share`` of the existing (not new) live items: by sales when given, else by the
        centrality proxy (cosine to the catalog's image centroid). Cached until the next change."""
        with self.lock:
            key = (self.mutations, share)
            if self._best_cache is not None and self._best_cache[:2] == key and sales is None:
                return list(self._best_cache[2])
            ids = [i for i, item in self.items.items() if not item.get("new")]
            if not ids:
                return []
            if sales:
                counts = np.array([sales.get(i, 0) for i in ids], dtype=np.float64)
                n = max(1, int(round(len(ids) * share)))
                order = np.argsort(-counts, kind="stable")[:n]
                return [ids[o] for o in order if counts[o] > 0]
            from recsys.eval.centrality import anchor_mask, centrality  # (imports matplotlib: lazily)

            scores = centrality(self.vectors[np.array([self.row_of[i] for i in ids])])
            mask = anchor_mask(scores, share)
            best = [ids[o] for o in np.argsort(-scores, kind="stable") if mask[o]]
            self._best_cache = (*key, best)
            return list(best)


def trends(best_sellers: list[dict], products: list[dict]) -> dict:
    """Per field (category, color, style): how often each value occurs among the best sellers and
    how many of the recommended products carry it, best-seller share first."""
    out = {}
    for field in TREND_FIELDS:
        seller_counts = Counter(v for item in best_sellers for v in set(trend_values(item, field)))
        product_counts = Counter(v for item in products for v in set(trend_values(item, field)))
        total = max(1, len(best_sellers))
        out[field] = [{"value": value, "best_sellers": count, "share": round(count / total, 4),
                       "new_products_matching": product_counts.get(value, 0)}
                      for value, count in seller_counts.most_common()]
    return out


def shared_values(a: dict, b: dict) -> dict[str, list[str]]:
    """Trend fields on which two items agree (e.g. {"category": ["블라우스"], "color": []})."""
    return {f: sorted(set(trend_values(a, f)) & set(trend_values(b, f))) for f in TREND_FIELDS}
