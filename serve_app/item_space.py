"""The item tower's space of the served catalog: ``similar`` by attributes, new products placed by theirs.

A :class:`TowerSpace` holds one vector per live item from a ``train_item_tower`` run
(``recsys.models.item_towers.ItemTowerEncoder``): the vectors the run exported for its items, and for
any other item (a product added through the API, a catalog item the run did not see) the tower's
encoding of its attributes, the same computation the run did at training time. The catalog keeps it
in step with its own adds and deletes (``serve_app.catalog.Catalog``), under the catalog's lock.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from recsys.index import IndexConfig, VectorIndex


def canonical_row(item: Mapping, std_fields: Iterable[str]) -> dict:
    """A served item record (``serve_app.catalog.item_record`` or a POST /api/items record) -> the
    canonical attribute columns the item tower reads. The record's ``attributes`` merge STD and RE
    values; the featurizer's STD fields go back to ``std_attributes``, every other field to
    ``re_attributes`` (the featurizer reads both into one value map either way)."""
    std_fields = set(std_fields)
    std, re = [], []
    for name, values in (item.get("attributes") or {}).items():
        values = [values] if isinstance(values, str) else [str(v) for v in values or [] if v]
        (std if name in std_fields else re).append({"field": name, "values": values})
    return {"category_path": list(item.get("category_path") or []), "std_attributes": std, "re_attributes": re,
            "styles": list(item.get("styles") or []), "title": item.get("title"), "description": None}


class TowerSpace:
    def __init__(self, run_dir: str, items: Mapping[str, Mapping]):
        """``items``: the live catalog, item id -> served record."""
        from recsys.models.item_towers import ItemTowerEncoder

        self.encoder = ItemTowerEncoder.load(run_dir)
        self.run = str(run_dir)
        run_ids, run_vectors = self.encoder.run_vectors()
        exported = {item_id: row for row, item_id in enumerate(run_ids.tolist())}
        ids = list(items)
        vectors = np.zeros((len(ids), run_vectors.shape[1] if len(run_vectors) else self.encoder.dim), np.float32)
        unseen = [n for n, item_id in enumerate(ids) if item_id not in exported]
        for n, item_id in enumerate(ids):
            if item_id in exported:
                vectors[n] = run_vectors[exported[item_id]]
        if unseen:
            vectors[unseen] = self.encoder.encode([self.row(items[ids[n]]) for n in unseen])
        self.encoded_at_load = len(unseen)
        self.vectors: dict[str, np.ndarray] = dict(zip(ids, vectors))
        self.index = VectorIndex.build(vectors, ids, IndexConfig(kind="exact"), source=f"{run_dir} (item tower)")

    def row(self, item: Mapping) -> dict:
        return canonical_row(item, self.encoder.std_fields)

    def add(self, item: Mapping) -> np.ndarray:
        """Place a new item by its attributes (a cold start)."""
        vector = self.encoder.encode([self.row(item)])[0]
        self.remove(item["item_id"])
        self.vectors[item["item_id"]] = vector
        self.index.add(vector[None], [item["item_id"]])
        return vector

    def remove(self, item_id: str) -> None:
        if self.vectors.pop(item_id, None) is not None and item_id in self.index:
            self.index.remove([item_id])

    def vector_of(self, item_id: str) -> np.ndarray | None:
        vector = self.vectors.get(item_id)
        return None if vector is None else vector.copy()

    def search(self, vector: np.ndarray, k: int, exclude_ids: Iterable[str] = (),
               only_ids: Iterable[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Top ``k`` items by cosine in the tower space: (ids, scores, tower vectors). ``only_ids``
        restricts the candidates (scored exactly over that set)."""
        excluded = set(exclude_ids)
        if only_ids is not None:
            ids = [i for i in dict.fromkeys(only_ids) if i in self.vectors and i not in excluded]
        else:
            hits = self.index.search(np.asarray(vector, np.float32)[None], min(len(self.index), k + len(excluded)))
            ids = [i for i in hits.item_ids[0].tolist() if i and i in self.vectors and i not in excluded]
        if not ids:
            return [], np.zeros(0, np.float32), np.zeros((0, self.encoder.dim), np.float32)
        matrix = np.stack([self.vectors[i] for i in ids])
        scores = matrix @ np.asarray(vector, np.float32)
        order = np.argsort(-scores, kind="stable")[:k]
        return [ids[o] for o in order], scores[order].astype(np.float32), matrix[order]

    def describe(self) -> dict:
        return {"run": self.run.rstrip("/").rsplit("/", 1)[-1], "items": len(self.vectors), "dim": self.encoder.dim,
                "encoded_from_attributes_at_load": self.encoded_at_load}
