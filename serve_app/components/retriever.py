"""Retriever: the vector index over item image vectors (and text vectors) plus the item store.

Holds the :class:`~serve_app.catalog.Catalog` of one served version. Item additions and deletions
go to the durable :class:`~recsys.stores.item_log.ItemLog` (a file log on one node, or PostgreSQL
shared by all) first and are then applied from it, by this replica at once and by the other replicas
within ``sync_interval_s`` (a clock check per request, no file access), so the index, the store and
the answer agree and survive a restart.

Consistency: with the FAISS backend another replica's change shows here within ``sync_interval_s``
(0.5 s; bounded staleness). With the pgvector backend (``index.backend: pgvector``) the item's index
row, its log row and its image commit in one transaction, and every request first reads the log past
its position (one indexed query), so every replica reads its own and the others' writes at once.
"""
from __future__ import annotations

import mimetypes
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from serve_app.catalog import Catalog, shared_values, trends
from serve_app.config import ServeAppConfig
from serve_app.errors import Conflict, InputError, NotFound, Unavailable
from recsys import storage
from recsys.stores.item_log import DuplicateItem, ItemLog, image_key
from serve_app.users import UserSources
from serve_app.versions import embed_report, version_label

ITEM_ID = re.compile(r"^[\w.\-:]{1,128}$")
SCOPES = ("all", "new")


def public(item: dict) -> dict:
    """An item as the API shows it (no file paths)."""
    return {k: v for k, v in item.items() if k != "image"}


def replica_name() -> str:
    """The Serve replica answering (its unique id), or ``in-process:<pid>`` outside Serve."""
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # not inside a Serve replica (RayServeException), or an older Ray
        return f"in-process:{os.getpid()}"


def read_sales(path: str | None) -> dict[str, int] | None:
    """Interaction counts per item (the best sellers' "sales"), None without an interactions file."""
    if not path:
        return None
    counts: dict[str, int] = {}
    for item_id in pq.read_table(path, columns=["item_id"])["item_id"].to_pylist():
        counts[item_id] = counts.get(item_id, 0) + 1
    return counts


class Retriever:
    sync_interval_s = 0.5  # how stale another replica's item change may be here

    def __init__(self, config: ServeAppConfig, version: dict, store: ItemLog, sales: dict[str, int] | None):
        self.config = config
        self.version = version
        self.store = store
        self._sales = sales
        text_source = config.text.source if config.text.enabled else None
        self.catalog = Catalog(version, store, text_source, self._new_item_ids(), config.index)
        self.catalog.pretrained = embed_report(version).get("pretrained", "unknown")
        if self.catalog.shared_index:
            self.sync_interval_s = 0.0  # read-your-writes across replicas (see the module docstring)
        self.replica = replica_name()
        users_run = version.get("users_run")
        self.users = UserSources(users_run, config.users.candidates_per_source) if users_run else None
        self._synced = time.monotonic()

    def _new_item_ids(self) -> set[str]:
        path = self.config.new_items_file
        if not path:
            return set()
        return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}

    def _current(self) -> Catalog:
        now = time.monotonic()
        if now - self._synced >= self.sync_interval_s:
            self._synced = now
            self.catalog.sync()
        return self.catalog

    # -- retrieval -----------------------------------------------------------------------------
    def _answer(self, catalog: Catalog, ids, scores, vectors, scope: str, note: str | None) -> dict:
        return {"items": [public(catalog.get(i)) for i in ids], "scores": np.asarray(scores, dtype=np.float32),
                "vectors": vectors, "scope": scope, "note": note,
                "version": {**version_label(catalog.version), "image_encoder_pretrained": catalog.pretrained,
                            "index_backend": "pgvector" if catalog.shared_index else "faiss", "replica": self.replica}}

    @staticmethod
    def _scope(catalog: Catalog, scope: str, fallback: str) -> tuple[list[str] | None, str, str | None]:
        """(ids a search is restricted to or None, the scope answered, a note when it changed):
        'new' with no new products registered answers from ``fallback``."""
        if scope not in SCOPES:
            raise InputError(f"scope: expected one of {list(SCOPES)}, got {scope!r}", field="scope")
        if scope == "new":
            only = catalog.live_ids(new=True)
            if only:
                return only, scope, None
            return None, "all", f"no new products are registered (POST /api/items adds them); answered from {fallback}"
        return None, scope, None

    def search(self, vector: np.ndarray | None = None, text_vector: np.ndarray | None = None, k: int = 10,
               exclude_ids: list[str] | tuple = (), scope: str = "all") -> dict:
        """Candidates for a query vector (image space) and/or a text vector, best first."""
        catalog = self._current()
        only, scope, note = self._scope(catalog, scope, "the whole catalog")
        ids, scores, vectors = catalog.search(vector, text_vector, k, self.config.text.weight, exclude_ids, only)
        return self._answer(catalog, ids, scores, vectors, scope, note)

    def match_set(self, vectors: np.ndarray, k: int, exclude_ids: list[str] | tuple = (),
                  scope: str = "new") -> dict:
        """Products closest to any of a set of vectors (best sellers), new products first."""
        catalog = self._current()
        only, scope, note = self._scope(catalog, scope, "the rest of the catalog")
        ids, scores, found = catalog.search_set(vectors, k, exclude_ids, only)
        return self._answer(catalog, ids, scores, found, scope, note)

    def user_candidates(self, user_vector: np.ndarray, history: list[str], k: int,
                        exclude_ids: list[str] | tuple = (), check_history: bool = False) -> dict:
        """Candidates for a user query (``serve_app.users.UserSources``: each source proposes
        max(k, users.candidates_per_source) items) that are live catalog items, with their records and
        image vectors. ``check_history``: refuse unknown history ids (a request's history; a stored
        user's deleted items are simply skipped)."""
        catalog = self._current()
        users = self.users
        if users is None:
            raise Unavailable("user recommendations are not available: the served version has no users run",
                              code="users_unavailable")
        if check_history:
            missing = [i for i in history if catalog.get(i) is None]
            if missing:
                raise InputError(f"history: unknown item id(s) {missing[:10]} (not in the served catalog, or deleted)",
                                 field="history")
        found = users.candidates(user_vector, history, k)
        excluded = set(exclude_ids)
        keep = [n for n, i in enumerate(found["item_ids"]) if i not in excluded and catalog.get(i) is not None]
        ids = [found["item_ids"][n] for n in keep]
        answer = self._answer(catalog, ids, found["fusion"][keep],
                              np.stack([catalog.vector_of(i) for i in ids]) if ids else np.zeros((0, catalog.dim)),
                              "all", None)
        answer["source_scores"] = {name: values[keep] for name, values in found["scores"].items()}
        answer["popularity"] = found["popularity"][keep]
        return answer

    def ranked_items(self, item_ids: list[str], scores: np.ndarray, n: int, exclude_ids: list[str] | tuple = ()) -> dict:
        """The first ``n`` live, not excluded items of a ranking made elsewhere (the persona model's),
        with their records and image vectors."""
        catalog = self._current()
        excluded, ids, kept = set(exclude_ids), [], []
        for position, item_id in enumerate(item_ids):
            if len(ids) == n:
                break
            if item_id not in excluded and catalog.get(item_id) is not None:
                ids.append(item_id)
                kept.append(position)
        vectors = np.stack([catalog.vector_of(i) for i in ids]) if ids else np.zeros((0, catalog.dim), np.float32)
        return self._answer(catalog, ids, np.asarray(scores, np.float32)[kept], vectors, "all", None)

    def similar_space(self, catalog: Catalog) -> str:
        """``similar.space`` resolved: auto -> the item tower when the version serves one."""
        space = self.config.similar.space
        if space == "auto":
            return "item_tower" if catalog.tower is not None else "image"
        if space == "item_tower" and catalog.tower is None:
            raise Unavailable("similar.space is item_tower but the served version has no item tower run "
                              "(train one: python -m ray_jobs.train_item_tower)", code="item_tower_unavailable")
        return space

    def similar(self, item_id: str, k: int, scope: str = "all") -> dict:
        """Products closest to an existing item (itself excluded): by its item-tower vector (its
        attributes; new products were placed by theirs) or its image vector (``similar.space``)."""
        catalog = self._current()
        space = self.similar_space(catalog)
        if space == "image":
            return {**self.search(self.item_vector(item_id), None, k, [item_id], scope), "space": space}
        with catalog.lock:
            vector = catalog.tower.vector_of(item_id)
            if vector is None:
                raise NotFound(f"item {item_id!r} does not exist (or was deleted)", field="item_id")
            only, scope, note = self._scope(catalog, scope, "the whole catalog")
            ids, scores, vectors = catalog.tower.search(vector, k, [item_id], only)
        return {**self._answer(catalog, ids, scores, vectors, scope, note), "space": space}

    def item_vector(self, item_id: str) -> np.ndarray:
        vector = self._current().vector_of(item_id)
        if vector is None:
            raise NotFound(f"item {item_id!r} does not exist (or was deleted)", field="item_id")
        return vector

    def items_with_vectors(self, item_ids: list[str]) -> dict:
        catalog = self._current()
        missing = [i for i in item_ids if catalog.get(i) is None]
        if missing:
            raise NotFound(f"unknown item id(s) {missing[:10]}", field="item_ids")
        return {"items": [public(catalog.get(i)) for i in item_ids],
                "vectors": np.stack([catalog.vector_of(i) for i in item_ids])}

    def best_sellers(self, share: float | None = None) -> dict:
        share = self.config.best_sellers.share if share is None else share
        if not 0.0 < share <= 1.0:
            raise InputError(f"share: expected a number in (0, 1], got {share}", field="share")
        catalog = self._current()
        ids = catalog.best_sellers(share, self._sales)
        source = ("sales (interactions)" if self._sales else
                  "centrality proxy: cosine to the catalog image centroid (no sales data)")
        return {"source": source, "share": share, "items": [public(catalog.get(i)) for i in ids],
                "vectors": np.stack([catalog.vector_of(i) for i in ids]) if ids else np.zeros((0, catalog.dim))}

    def nearest_labels(self, vectors: np.ndarray) -> list[dict]:
        """The nearest existing (not new) item of each vector, to label uploaded best-seller photos."""
        catalog = self._current()
        new_ids = catalog.live_ids(new=True)
        out = []
        for vector in np.atleast_2d(vectors):
            ids, scores, _ = catalog.search(vector, None, 1, 0.0, exclude_ids=new_ids)
            out.append({**public(catalog.get(ids[0])), "similarity": float(scores[0])} if ids else {})
        return out

    # -- the item store ------------------------------------------------------------------------
    def get_item(self, item_id: str) -> dict:
        item = self._current().get(item_id)
        if item is None:
            raise NotFound(f"item {item_id!r} does not exist (or was deleted)", field="item_id")
        return public(item)

    def add_item(self, item: dict, vector: np.ndarray, text_vector: np.ndarray | None, image: bytes,
                 extension: str) -> dict:
        item_id = item.get("item_id", "")
        if not ITEM_ID.match(item_id or ""):
            raise InputError("item_id: 1-128 characters of letters, digits, '_', '-', '.', ':'", field="item_id")
        catalog = self._current()
        with catalog.lock:
            catalog.sync()
            if catalog.get(item_id) is not None:
                raise Conflict(f"item {item_id!r} already exists; DELETE it first to replace it", field="item_id")
            record = {**item, "image": image_key(item_id, image, extension), "source": "api"}
            try:  # image, log row (and the shared index's row) are written together
                self.store.add(record, np.asarray(vector, dtype=np.float32), text_vector, image=image,
                               index=catalog.writes_index)
            except DuplicateItem as exc:  # another replica added it a moment ago
                raise Conflict(str(exc), field="item_id") from None
            except ValueError as exc:  # refused, nothing written: a bad vector, or metadata a products-table
                # constraint refuses (Rejected names the table)
                products = (getattr(exc, "table", None) or "").endswith("_products")
                raise InputError(str(exc), field="metadata" if products else "image") from None
            catalog.sync()
        return {**public(catalog.get(item_id)), "stored_by": self.replica}

    def delete_item(self, item_id: str) -> dict:
        catalog = self._current()
        with catalog.lock:
            catalog.sync()
            if catalog.get(item_id) is None:
                raise NotFound(f"item {item_id!r} does not exist (or was already deleted)", field="item_id")
            self.store.delete(item_id, index=catalog.writes_index)
            catalog.sync()
        return {"deleted": item_id, "stored_by": self.replica}

    def image(self, item_id: str) -> tuple[bytes, str]:
        item = self._current().get(item_id)
        if item is None:
            raise NotFound(f"item {item_id!r} does not exist (or was deleted)", field="item_id")
        stored = item.get("image") or ""
        try:
            if not stored:
                raise FileNotFoundError(stored)
            # a catalog item names its image file by absolute path or object-store URI (crops written
            # there by preprocessing); an API-added one by its item-log key
            if not storage.is_local(stored):
                data = storage.read_bytes(stored)
            else:
                data = Path(stored).read_bytes() if Path(stored).is_absolute() else self.store.read_image(stored)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):  # ImageNotFound is one
            raise NotFound(f"item {item_id!r} has no stored image", field="item_id") from None
        return data, mimetypes.guess_type(Path(stored).name)[0] or "application/octet-stream"

    # -- state ---------------------------------------------------------------------------------
    def version_info(self) -> dict:
        return {**version_label(self.version), "image_encoder_pretrained": self.catalog.pretrained}

    def sample_ids(self, n: int) -> list[str]:
        return self._current().live_ids()[:n]

    def counts(self) -> dict:
        return self._current().counts()

    def live_items(self) -> list[dict]:
        """Every live item's record (the CRM claim checker's vocabulary is built from them)."""
        catalog = self._current()
        return [public(item) for item in map(catalog.get, catalog.live_ids()) if item is not None]

    def health(self) -> dict:
        users = self.users
        return {"ok": True, **self.counts(), "user_items": len(users.item_ids) if users is not None else None}


def top10_to_new(best: list[dict], best_vectors: np.ndarray, retrieved: dict, k: int) -> dict:
    """Per retrieved new product: which best sellers it resembles most and what they share."""
    vectors = retrieved["vectors"]
    results = []
    similarity = vectors @ best_vectors.T if len(vectors) and len(best_vectors) else np.zeros((len(vectors), 0))
    for n, item in enumerate(retrieved["items"][:k]):
        order = np.argsort(-similarity[n])[:3]
        matched = [{"item_id": best[o]["item_id"], "similarity": round(float(similarity[n, o]), 4),
                    "shared": shared_values(item, best[o])} for o in order]
        results.append({"item": item, "score": float(retrieved["scores"][n]), "matched_best_sellers": matched})
    return {"results": results, "trends": trends(best, [r["item"] for r in results])}
