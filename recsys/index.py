"""FAISS behind one interface: exact, HNSW and IVF-PQ indexes over L2-normalised item vectors.

    index = VectorIndex.build(vectors, item_ids, IndexConfig(kind="hnsw"), source="item_vectors.parquet")
    scores, ids, rows = index.search(queries, k=100)
    index.save(run_dir); VectorIndex.load(run_dir)           # or load(run_dir, mmap=True)
    load_index("s3://bucket/artifacts/index/<run>", cache_dir="/var/cache/fashionrec", mmap=True)

Every index scores by inner product and every vector must be unit-norm, so a score is a cosine
(see ``METRIC_GUARD``). Faiss rows are positions 0..N-1 and ``item_ids[row]`` maps them back to the
string item ids. ``add`` appends new products to any kind (IVF-PQ encodes them with the codebooks
it was trained on; retrain when the catalog has drifted far from them). ``remove`` is a soft delete:
the rows stay in the index and every search skips them through a faiss ``IDSelector``, because HNSW
cannot delete at all; a rebuild reclaims the memory.

Artifact written by ``save`` (``load`` checks every file against the meta before returning):
  index.faiss        the faiss index (``faiss.serialize_index`` bytes)
  item_ids.parquet   row (int64), item_id (string), removed (bool)
  index_meta.json    format_version, version (content hash of the two files above), kind,
                     metric "inner_product", dim, n_items, n_removed, config (resolved), source
                     vectors path, built_utc, saved_utc, faiss version

``load(dir, mmap=True)`` maps index.faiss instead of reading it onto the heap (``MMAP_FLAGS``): the
vectors (and the HNSW graph, the IVF lists) stay in the page cache, shared by every replica on the
node that maps the same file. ``loaded_as`` says which happened ("mmap" or "memory"). faiss cannot
grow a mapped index, so a mapped index stays read-only for good: rows added after the load go to a
small in-memory exact delta (an ``IndexFlatIP``, rows N.. after the mapped base's 0..N-1) that every
search also scans, exactly whatever the base's kind, merging both result lists by score; ``save``
writes base + delta as one plain faiss index of the base's kind. ``load_index``
takes a local folder or an object-store URI (downloaded once per content hash to a node-local cache).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple, Protocol, Sequence, runtime_checkable

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys import storage
from recsys.config import ConfigError

KINDS = ("exact", "hnsw", "ivfpq")
FORMAT_VERSION = 1
INDEX_FILE, IDS_FILE, META_FILE = "index.faiss", "item_ids.parquet", "index_meta.json"
MAX_EF_SEARCH = 1000  # the largest ef_search a filtered walk uses (pgvector's upper bound for hnsw.ef_search)
OVERFETCH = 1.5       # a filtered HNSW walk fetches 1.5 / selectivity as many candidates (filtered_ef)
MIN_POINTS_PER_CENTROID = 39  # faiss k-means warns below this many training points per centroid
METRIC_GUARD = (
    "only metric 'ip' (inner product on L2-normalised vectors) is supported. Every FashionRec vector "
    "is stored unit-norm and every score downstream (thresholds, score fusion, rerankers) is a cosine "
    "in [-1, 1]; an L2 index ranks unit vectors the same way but returns squared distances "
    "(2 - 2*cos, smaller is better), and mixing the two scales breaks those consumers silently")
_FAISS_TYPES = {"exact": faiss.IndexFlat, "hnsw": faiss.IndexHNSW, "ivfpq": faiss.IndexIVFPQ}
# read_index flags of load(mmap=True). Tried on faiss 1.15.1 for each kind: IO_FLAG_MMAP_IFC maps the
# flat codes of "exact", the codes and graph neighbours of "hnsw" and the inverted lists (codes, ids) of
# "ivfpq"; the older IO_FLAG_MMAP maps only IVF lists (as read-only OnDiskInvertedLists), leaves exact
# and HNSW on the heap, and together with IO_FLAG_MMAP_IFC fails to read IVF-PQ at all.
MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC
HASH_CHUNK = 8 << 20  # bytes of index.faiss read at a time when load(mmap=True) checks the content hash
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "fashionrec", "index")


class IndexArtifactError(ValueError):
    """A saved index whose files disagree with its meta (or each other); the message names both."""


@dataclass
class IndexConfig:
    kind: str = "hnsw"                # exact | hnsw | ivfpq
    metric: str = "ip"                # inner product only, see METRIC_GUARD
    hnsw_m: int = 32                  # graph neighbours per node: recall and memory grow with it
    ef_construction: int = 200        # build-time beam width: better graph, slower build
    ef_search: int = 128              # query-time beam width (raised to k when k is larger)
    nlist: int | None = None          # IVF cells; None: ~4*sqrt(n), at most n_train / 39
    pq_m: int | None = None           # PQ subquantizers, must divide dim; None: dim / 4 (4 dims each)
    pq_bits: int = 8                  # bits per subquantizer code: pq_m * pq_bits / 8 bytes a vector
    nprobe: int = 16                  # IVF cells visited per query
    train_size: int = 100_000         # at most this many vectors (a seeded sample) train IVF-PQ
    norm_tolerance: float = 1e-3      # |norm - 1| allowed before a vector counts as not unit-norm
    seed: int = 0

    def __post_init__(self):
        if self.metric != "ip":
            raise ConfigError(f"index metric {self.metric!r}: {METRIC_GUARD}")
        if self.kind not in KINDS:
            raise ConfigError(f"index kind {self.kind!r}: expected one of {list(KINDS)}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "pq_bits", "nprobe", "train_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index {name}: must be >= 1, got {getattr(self, name)}")
        for name in ("nlist", "pq_m"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"index {name}: must be >= 1 or null (automatic), got {getattr(self, name)}")
        if not 0 < self.norm_tolerance < 1:
            raise ConfigError(f"index norm_tolerance: must be in (0, 1), got {self.norm_tolerance}")

    def resolved(self, n: int, dim: int) -> IndexConfig:
        """The automatic values filled in for ``n`` vectors of ``dim``; IVF-PQ constraints checked."""
        if self.kind != "ivfpq":
            return self
        n_train = min(n, self.train_size)
        if n_train < 2 ** self.pq_bits:
            raise ConfigError(f"IVF-PQ with pq_bits={self.pq_bits} trains {2 ** self.pq_bits} centroids per "
                             f"subquantizer and needs at least that many vectors, got {n_train}; use kind "
                             "'exact' for a catalog this small (it is searched exactly in microseconds)")
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(n)), n_train // MIN_POINTS_PER_CENTROID))
        if nlist > n_train:
            raise ConfigError(f"IVF-PQ nlist={nlist} exceeds the {n_train} training vectors")
        pq_m = self.pq_m or max(m for m in range(1, max(1, dim // 4) + 1) if dim % m == 0)
        if dim % pq_m:
            raise ConfigError(f"index pq_m={pq_m} must divide the vector dimension {dim}")
        return dataclasses.replace(self, nlist=nlist, pq_m=pq_m)


class Hits(NamedTuple):
    """Search results, best first. Where fewer than k live items were found: score -inf, id "", row -1."""
    scores: np.ndarray    # (Q, k) float32 inner products
    item_ids: np.ndarray  # (Q, k) str
    rows: np.ndarray      # (Q, k) int64 faiss rows


@dataclass(frozen=True)
class SearchFilter:
    """Which live items a search may return; None = no constraint. Both set: an item must pass both.
    Every backend (``VectorIndex`` here, ``recsys.stores.pgvector_index.PgVectorIndex``) takes it."""
    item_ids: tuple[str, ...] | None = None     # only these items
    categories: tuple[str, ...] | None = None   # only items whose category is one of these

    def __post_init__(self):
        for name in ("item_ids", "categories"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"SearchFilter.{name}: a sequence of strings, not one string ({value!r})")
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))


@runtime_checkable
class VectorStore(Protocol):
    """What the Retriever and the jobs use of a vector index, whichever backend holds the vectors:
    FAISS in the process (``VectorIndex``) or PostgreSQL with pgvector (``PgVectorIndex``). Rows are
    positions 0..N-1 mapped to string item ids; scores are cosines (unit vectors, inner product);
    ``remove`` is a soft delete; ``version`` is a content hash. Building and loading are class methods
    with backend-specific places (a folder; a database table)."""

    config: IndexConfig

    @property
    def kind(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def ntotal(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, item_id: str) -> bool: ...
    def add(self, vectors: np.ndarray, item_ids: Sequence[str], progress: bool = False, *,
            categories: Sequence[str | None] | None = None) -> None: ...
    def remove(self, item_ids: Sequence[str]) -> int: ...
    def search(self, queries: np.ndarray, k: int, ef_search: int | None = None, nprobe: int | None = None, *,
               filter: SearchFilter | None = None) -> Hits: ...
    def save(self, directory: str | Path) -> dict: ...
    def memory_bytes(self) -> int: ...


def filtered_ef(ef_search: int, live: int, passing: int) -> tuple[int, bool]:
    """(ef_search, exhaustive) for a filtered HNSW walk with no iterative scan: over-fetch by 1.5 / the
    filter's selectivity, so about ef_search passing rows are met on the way; when that would exceed
    ``MAX_EF_SEARCH`` the filter is selective enough that sorting its passing rows exactly is the
    better plan (at most ef_search x 1.5 x live / 1000 of them). Shared by both index backends."""
    need = math.ceil(ef_search * OVERFETCH * live / max(passing, 1))
    return (ef_search, True) if need > MAX_EF_SEARCH else (max(ef_search, need), False)


def row_problems(vectors: np.ndarray, tolerance: float = 1e-3) -> np.ndarray:
    """Per row: "" when finite and unit-norm, else the reason code "not_finite" or "not_unit_norm"."""
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], vectors, 0), axis=1)
    out = np.full(len(vectors), "", dtype=object)
    out[finite & (np.abs(norms - 1) > tolerance)] = "not_unit_norm"
    out[~finite] = "not_finite"
    return out


def check_unit_vectors(vectors: np.ndarray, item_ids: Sequence[str] | None = None, dim: int | None = None,
                       tolerance: float = 1e-3, what: str = "vectors") -> np.ndarray:
    """``vectors`` as contiguous float32 (N, dim), or ValueError naming the first bad row and the count."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or (dim is not None and vectors.shape[1] != dim):
        raise ValueError(f"{what}: expected shape (N, {dim or 'dim'}), got {vectors.shape}")
    problems = row_problems(vectors, tolerance)
    bad = np.flatnonzero(problems != "")
    if len(bad):
        row = int(bad[0])
        name = f" (item {str(item_ids[row])!r})" if item_ids is not None else ""
        problem = ("contains NaN or inf" if problems[row] == "not_finite" else
                   f"has norm {np.linalg.norm(vectors[row]):.4f}, not 1 within {tolerance}; L2-normalise the "
                   "vectors first: inner product is a cosine only on unit vectors")
        raise ValueError(f"{what}: row {row}{name} {problem} ({len(bad)} bad row(s) in all)")
    return vectors


def recall_at_k(found_rows: np.ndarray, true_rows: np.ndarray) -> float:
    """Mean over queries of |found ∩ true| / |true|: the share of the exact top-k (``true_rows``,
    -1 = no item) that the approximate index also returned, in any order."""
    shares = []
    for found, truth in zip(found_rows, true_rows):
        truth = truth[truth >= 0]
        if len(truth):
            shares.append(len(np.intersect1d(found[found >= 0], truth)) / len(truth))
    return float(np.mean(shares)) if shares else 0.0


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _content_hash(index_data: bytes | Path, item_ids: np.ndarray, removed: np.ndarray,
                  categories: np.ndarray | None = None) -> str:
    """``index_data``: the index.faiss bytes, or its path (read in ``HASH_CHUNK`` pieces; same hash).
    Categories count only when the index has them (older artifacts keep their hash)."""
    if isinstance(index_data, Path):
        digest = hashlib.sha256()
        with open(index_data, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    else:
        digest = hashlib.sha256(index_data)
    digest.update("\n".join(item_ids.tolist()).encode())
    digest.update(np.packbits(removed).tobytes())
    if categories is not None:
        digest.update("\x1f".join("\x00" if c is None else str(c) for c in categories.tolist()).encode())
    return digest.hexdigest()[:16]


def _faiss_index(config: IndexConfig, dim: int) -> faiss.Index:
    spec = {"exact": "Flat", "hnsw": f"HNSW{config.hnsw_m},Flat",
            # "np": no polysemous training. index_factory turns it on by default; it reorders codes for
            # Hamming pre-filtering (unused here) and multiplied the training time by ~8 in our runs.
            "ivfpq": f"IVF{config.nlist},PQ{config.pq_m}x{config.pq_bits}np"}[config.kind]
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    if config.kind == "hnsw":
        index.hnsw.efConstruction = config.ef_construction
    return index


def _mapped(index: faiss.Index) -> bool:
    """Whether ``index`` views a memory-mapped file (faiss ``MaybeOwnedVector``s not owned) for the
    kinds ``MMAP_FLAGS`` maps: exact and HNSW codes, IVF inverted lists."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        index = faiss.downcast_index(index.storage)
    if isinstance(index, faiss.IndexFlatCodes):
        return index.ntotal > 0 and not index.codes.is_owned
    if isinstance(index, faiss.IndexIVF):
        lists = faiss.downcast_InvertedLists(index.invlists)
        if isinstance(lists, faiss.ArrayInvertedLists):
            return any(not lists.codes.at(i).is_owned for i in range(lists.nlist) if lists.list_size(i))
    return False


class VectorIndex:
    """A faiss index plus its string item ids, its config and the rows removed since it was built.

    ``index`` is the faiss index (for a mapped one: the read-only mapped base); ``delta`` is None, or,
    after an add to a mapped index, the in-memory ``IndexFlatIP`` holding the added rows (searched
    exactly; its row r is the index's row ``index.ntotal + r``)."""

    def __init__(self, index: faiss.Index, item_ids: np.ndarray, config: IndexConfig, removed: np.ndarray,
                 source: str | None = None, built_utc: str | None = None, categories: np.ndarray | None = None):
        self.index, self.config, self.source = index, config, source
        self.item_ids = np.asarray(item_ids, dtype=str)
        self.removed = np.asarray(removed, dtype=bool)
        # Per row, for SearchFilter(categories=...): None when built without categories.
        self.categories = None if categories is None else np.asarray(categories, dtype=object)
        self._codes: tuple[dict[str, int], np.ndarray] | None = None  # _category_codes' cache
        self.built_utc = built_utc or _utc_now()
        self.loaded_as = "memory"  # how load() read index.faiss: "mmap" (mapped) or "memory" (onto the heap)
        self.mapped = False  # viewing the mapped file (an mmap load; adds go to ``delta``, the base stays mapped)
        self.delta: faiss.IndexFlat | None = None  # rows added to a mapped index, see _add_rows
        self.version: str | None = None  # the artifact's content hash, when loaded from one
        self.directory: Path | None = None  # the local folder it was loaded from
        self._live_rows = {item: row for row, item in enumerate(self.item_ids.tolist()) if not self.removed[row]}
        self._selector = None
        self._refresh_selector()

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, item_ids: Sequence[str], config: IndexConfig | None = None,
              source: str | None = None, progress: bool = False, *,
              categories: Sequence[str | None] | None = None) -> VectorIndex:
        """An index over ``vectors`` (unit norm) named by ``item_ids``; ``categories`` (one per item,
        None allowed) enables ``SearchFilter(categories=...)``."""
        config = config or IndexConfig()
        ids = np.asarray(list(item_ids), dtype=str)
        vectors = check_unit_vectors(vectors, ids, tolerance=config.norm_tolerance)
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} item ids")
        if len(vectors) == 0:
            raise ValueError("no vectors to index")
        check_unique(ids)
        config = config.resolved(*vectors.shape)
        index = _faiss_index(config, vectors.shape[1])
        if config.kind == "ivfpq":
            rng = np.random.default_rng(config.seed)
            sample = vectors[np.sort(rng.choice(len(vectors), min(len(vectors), config.train_size), replace=False))]
            index.cp.seed = index.pq.cp.seed = config.seed  # k-means seeds, so a rebuild trains the same codebooks
            index.train(sample)
        built = cls(index, np.empty(0, dtype=str), config, np.zeros(0, dtype=bool), source,
                    categories=None if categories is None else np.empty(0, dtype=object))
        built._add_rows(vectors, ids, progress, _category_column(categories, len(ids)))
        built.built_utc = _utc_now()
        return built

    def add(self, vectors: np.ndarray, item_ids: Sequence[str], progress: bool = False, *,
            categories: Sequence[str | None] | None = None) -> None:
        """Append new items (any kind). An id that is live already is an error; a removed one may return.
        ``categories``: one per item (None: no category), kept when the index has categories."""
        ids = np.asarray(list(item_ids), dtype=str)
        vectors = check_unit_vectors(vectors, ids, dim=self.dim, tolerance=self.config.norm_tolerance)
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors but {len(ids)} item ids")
        check_unique(ids)
        present = [i for i in ids.tolist() if i in self._live_rows]
        if present:
            raise ValueError(f"{len(present)} item id(s) already in the index, e.g. {present[:5]}; "
                             "remove() them first to replace their vectors")
        self._add_rows(vectors, ids, progress, _category_column(categories, len(ids)))

    def _add_rows(self, vectors: np.ndarray, ids: np.ndarray, progress: bool, categories: np.ndarray | None = None,
                  chunk: int = 20_000) -> None:
        from tqdm import tqdm

        target = self.index
        if self.mapped:
            # faiss cannot grow a mapped vector (it aborts the process, no Python exception) and
            # clone_index keeps viewing the same mapping. Copying the whole index to the heap would
            # undo what the mapping saves (every replica replays the API's adds at start), so the
            # mapped base stays read-only and appends go to a small in-memory exact delta instead;
            # search scans it exactly (whatever the base's kind) and save() merges the two.
            if self.delta is None:
                self.delta = faiss.IndexFlatIP(self.dim)
            target = self.delta
        first = self.ntotal
        starts = range(0, len(vectors), chunk)
        # Chunked so long HNSW builds show progress; faiss parallelises inside each chunk.
        for start in tqdm(starts, desc=f"add to {self.kind}", unit="chunk", disable=not progress or len(starts) < 2):
            target.add(vectors[start:start + chunk])
        self.item_ids = np.concatenate([self.item_ids, ids])
        self.removed = np.concatenate([self.removed, np.zeros(len(ids), dtype=bool)])
        if categories is not None and self.categories is None:  # the first categories: earlier rows have none
            self.categories = np.full(len(self.item_ids) - len(ids), None, dtype=object)
        if self.categories is not None:
            added = categories if categories is not None else np.full(len(ids), None, dtype=object)
            self.categories = np.concatenate([self.categories, added])
        self._live_rows.update({item: first + i for i, item in enumerate(ids.tolist())})

    def remove(self, item_ids: Sequence[str]) -> int:
        """Soft delete: search skips these items from now on. Unknown ids are an error."""
        unknown = [i for i in item_ids if i not in self._live_rows]
        if unknown:
            raise KeyError(f"{len(unknown)} item id(s) not in the index, e.g. {unknown[:5]}")
        for item in item_ids:
            self.removed[self._live_rows.pop(item)] = True
        self._refresh_selector()
        return len(item_ids)

    def _refresh_selector(self) -> None:
        blocked = np.flatnonzero(self.removed).astype(np.int64)
        base_rows = int(self.index.ntotal)
        in_base, in_delta = blocked[blocked < base_rows], blocked[blocked >= base_rows] - base_rows
        self._selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(in_base)) if len(in_base) else None
        self._delta_selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(in_delta)) if len(in_delta) else None

    # -- searching -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, ef_search: int | None = None, nprobe: int | None = None, *,
               filter: SearchFilter | None = None) -> Hits:
        """Top-k live items per query by inner product (that pass ``filter``). ``ef_search``/``nprobe``
        override the config for this call. Query norms scale the scores but never change the ranking.

        A filter becomes a faiss ``IDSelectorBatch`` of the passing rows. HNSW and IVF-PQ apply it while
        they walk, so a selective filter can leave a query with fewer than k rows although more pass.
        HNSW over-fetches as ``filtered_ef`` says (the pgvector backend's rule too), or sorts the passing
        rows exactly when the filter is too selective for any ef_search; queries that still come back
        short are answered again exhaustively (HNSW: its flat storage; IVF-PQ: every list), so a filter
        that 1% of items pass still returns k rows."""
        queries = check_queries(queries, self.dim)
        base_selector, delta_selector, passing, in_base = self._selectors(filter)
        if passing == 0:
            return Hits(np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), ""),
                        np.full((len(queries), k), -1, np.int64))
        exhaustive = False
        if filter is not None and self.kind == "hnsw":
            ef_search, exhaustive = filtered_ef(max(k, ef_search or self.config.ef_search), len(self._live_rows),
                                                passing)
        if exhaustive:
            scores, rows = self._exhaustive(queries, k, base_selector)
        else:
            scores, rows = self.index.search(queries, k, params=self._params(ef_search, nprobe, base_selector))
        if filter is not None and self.kind != "exact" and not exhaustive:
            short = np.flatnonzero((rows >= 0).sum(axis=1) < min(k, in_base))
            if len(short):
                redo_scores, redo_rows = self._exhaustive(queries[short], k, base_selector)
                scores[short], rows[short] = redo_scores, redo_rows
        if self.delta is not None and self.delta.ntotal:
            # Rows added after an mmap load: scanned exactly, then the k best of both lists by score
            # (stable: on a tie the base row, the lower row number, comes first).
            params = faiss.SearchParameters(sel=delta_selector) if delta_selector is not None else None
            delta_scores, delta_rows = self.delta.search(queries, min(k, int(self.delta.ntotal)), params=params)
            delta_rows = np.where(delta_rows >= 0, delta_rows + self.index.ntotal, -1)
            scores = np.concatenate([np.where(rows >= 0, scores, -np.inf),
                                     np.where(delta_rows >= 0, delta_scores, -np.inf)], axis=1)
            rows = np.concatenate([rows, delta_rows], axis=1)
            best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            scores, rows = np.take_along_axis(scores, best, axis=1), np.take_along_axis(rows, best, axis=1)
        found = rows >= 0
        ids = np.where(found, self.item_ids[np.where(found, rows, 0)] if len(self.item_ids) else "", "")
        return Hits(np.where(found, scores, -np.inf).astype(np.float32), ids, rows.astype(np.int64))

    def _selectors(self, filter: SearchFilter | None):
        """(base selector, delta selector, live rows that pass, of them in the base). Without a filter:
        the removed-rows selectors kept since the last remove()."""
        if filter is None:
            return self._selector, self._delta_selector, len(self._live_rows), len(self._live_rows)
        allowed = ~self.removed
        if filter.item_ids is not None:
            wanted = np.zeros(len(allowed), dtype=bool)
            wanted[[self._live_rows[i] for i in filter.item_ids if i in self._live_rows]] = True
            allowed &= wanted
        if filter.categories is not None:
            if self.categories is None:
                raise ValueError("SearchFilter(categories=...): this index was built without categories "
                                 "(build(..., categories=...) or build_index with a category column)")
            lookup, codes = self._category_codes()
            allowed &= np.isin(codes, [lookup[c] for c in filter.categories if c in lookup])
        rows = np.flatnonzero(allowed).astype(np.int64)
        base_rows = int(self.index.ntotal)
        in_base, in_delta = rows[rows < base_rows], rows[rows >= base_rows] - base_rows
        return faiss.IDSelectorBatch(in_base), faiss.IDSelectorBatch(in_delta), len(rows), len(in_base)

    def _category_codes(self) -> tuple[dict[str, int], np.ndarray]:
        """(category -> code, code per row), recomputed only after rows were added: a filtered search
        then compares integers, not 200k strings per call. Rows without a category get -1."""
        if self._codes is None or len(self._codes[1]) != len(self.categories):
            named = np.asarray([c is not None for c in self.categories.tolist()], dtype=bool)
            names, codes = np.unique(self.categories[named].astype(str), return_inverse=True)
            all_codes = np.full(len(self.categories), -1, dtype=np.int64)
            all_codes[named] = codes
            self._codes = ({name: i for i, name in enumerate(names.tolist())}, all_codes)
        return self._codes

    def _exhaustive(self, queries: np.ndarray, k: int, selector) -> tuple[np.ndarray, np.ndarray]:
        """Search every passing row of the base: HNSW's flat storage (exact), all IVF lists."""
        if self.kind == "hnsw":
            storage = faiss.downcast_index(self.index.storage)
            return storage.search(queries, k, params=faiss.SearchParameters(sel=selector))
        return self.index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=int(self.index.nlist),
                                                                            sel=selector))

    def _params(self, ef_search: int | None, nprobe: int | None, selector):
        # Per-call parameters, not index attributes: concurrent searches (Serve replicas' threads)
        # never see each other's settings.
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=ef_search or self.config.ef_search, sel=selector)
        if self.kind == "ivfpq":
            return faiss.SearchParametersIVF(nprobe=nprobe or self.config.nprobe, sel=selector)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    # -- properties ------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        """Rows in the faiss index (and its delta), removed ones included."""
        return int(self.index.ntotal) + (int(self.delta.ntotal) if self.delta is not None else 0)

    def __len__(self) -> int:
        return len(self._live_rows)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._live_rows

    def memory_bytes(self) -> int:
        """Size of the serialised index: what it occupies in RAM, give or take a few headers (a mapped
        index: in the page cache; plus its delta's vectors)."""
        delta = int(self.delta.ntotal) * int(self.delta.code_size) if self.delta is not None else 0
        return int(faiss.serialize_index(self.index).size) + delta

    def _merged(self) -> faiss.Index:
        """The faiss index to save: ``index`` itself, or (after adds to a mapped index) an in-memory copy
        of the base with the delta's vectors added the way ``add`` adds to an unmapped index."""
        if self.delta is None or not self.delta.ntotal:
            return self.index
        merged = faiss.deserialize_index(faiss.serialize_index(self.index))
        merged.add(self.delta.reconstruct_n(0, self.delta.ntotal))
        return merged

    # -- artifact --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> dict:
        """Write index.faiss, item_ids.parquet and (last, so a half-written folder never loads)
        index_meta.json; returns the meta."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # After adds to a mapped index: base + delta as one plain index (a heap copy while saving).
        index_bytes = faiss.serialize_index(self._merged()).tobytes()
        # Temp file + rename: a process that mapped the old index.faiss (load(mmap=True)) keeps its
        # file; rewriting it in place would change (or, shorter, SIGBUS) that process's index.
        tmp = directory / f".{INDEX_FILE}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(index_bytes)
            os.replace(tmp, directory / INDEX_FILE)
        finally:
            tmp.unlink(missing_ok=True)
        columns = {"row": pa.array(np.arange(len(self.item_ids)), pa.int64()),
                   "item_id": pa.array(self.item_ids.tolist(), pa.string()), "removed": pa.array(self.removed)}
        if self.categories is not None:
            columns["category"] = pa.array(self.categories.tolist(), pa.string())
        pq.write_table(pa.table(columns), directory / IDS_FILE)
        meta = {"format_version": FORMAT_VERSION,
                "version": _content_hash(index_bytes, self.item_ids, self.removed, self.categories),
                "kind": self.kind, "metric": "inner_product", "dim": self.dim, "n_items": self.ntotal,
                "n_removed": int(self.removed.sum()), "config": dataclasses.asdict(self.config),
                "source_vectors": self.source, "built_utc": self.built_utc, "saved_utc": _utc_now(),
                "faiss_version": faiss.__version__, "index_bytes": len(index_bytes),
                "files": {"index": INDEX_FILE, "item_ids": IDS_FILE}}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        return meta

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = False) -> VectorIndex:
        """The saved index in ``directory``, every file checked against the meta (content hash included).

        ``mmap=True`` maps index.faiss (``MMAP_FLAGS``) instead of copying it onto the heap, and the
        content hash is computed by streaming the file; a kind faiss cannot map is read normally.
        ``loaded_as`` records which happened. A mapped index stays mapped: ``add`` puts new rows in an
        in-memory exact delta (faiss cannot grow a mapped index), and ``save`` merges the two.
        """
        directory = Path(directory)
        for name in (META_FILE, INDEX_FILE, IDS_FILE):
            if not (directory / name).is_file():
                raise IndexArtifactError(f"{directory}: missing {name}; not a saved index (expected "
                                         f"{META_FILE}, {INDEX_FILE}, {IDS_FILE})")
        meta = json.loads((directory / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise IndexArtifactError(f"{directory / META_FILE}: format_version {meta.get('format_version')}, "
                                     f"this code reads {FORMAT_VERSION}; rebuild the index")
        if meta.get("metric") != "inner_product":
            raise IndexArtifactError(f"{directory / META_FILE}: metric {meta.get('metric')!r}: {METRIC_GUARD}")
        path = directory / INDEX_FILE
        index = index_bytes = None
        if mmap:
            stamp = _file_stamp(path)
            try:
                index = faiss.read_index(str(path), MMAP_FLAGS)
            except RuntimeError:  # a layout faiss cannot map: read it onto the heap below
                index = None
        if index is None:
            index_bytes = path.read_bytes()
            index = faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8))
        ids = pq.read_table(directory / IDS_FILE)
        item_ids = np.asarray(ids.column("item_id").to_pylist(), dtype=str)
        removed = np.asarray(ids.column("removed").to_pylist(), dtype=bool)
        categories = (np.asarray(ids.column("category").to_pylist(), dtype=object)
                      if "category" in ids.column_names else None)
        config = IndexConfig(**meta["config"])

        def mismatch(what: str, in_meta, in_file, file: str) -> None:
            if in_meta != in_file:
                raise IndexArtifactError(f"{directory}: {META_FILE} says {what} {in_meta} but {file} has "
                                         f"{in_file}; the files come from different builds, rebuild the index")

        mismatch("dim", meta["dim"], int(index.d), INDEX_FILE)
        mismatch("n_items", meta["n_items"], int(index.ntotal), INDEX_FILE)
        mismatch("n_items", meta["n_items"], len(item_ids), IDS_FILE)
        mismatch("metric", "inner_product", "inner_product" if index.metric_type == faiss.METRIC_INNER_PRODUCT
                 else f"faiss metric {index.metric_type}", INDEX_FILE)
        mismatch("kind", meta["kind"], next((k for k, t in _FAISS_TYPES.items() if isinstance(index, t)),
                                            type(index).__name__), INDEX_FILE)
        # Mapped (or read by faiss from the path): hash the file in chunks, never all of it at once.
        mismatch("version (content hash)", meta["version"],
                 _content_hash(path if index_bytes is None else index_bytes, item_ids, removed, categories),
                 f"{INDEX_FILE} + {IDS_FILE}")
        if index_bytes is None and _file_stamp(path) != stamp:
            raise IndexArtifactError(f"{path}: changed while it was being loaded (the hash may not be the "
                                     "mapped file's); load it again")
        loaded = cls(index, item_ids, config, removed, meta.get("source_vectors"), meta.get("built_utc"),
                     categories)
        loaded.mapped = index_bytes is None and _mapped(index)
        loaded.loaded_as = "mmap" if loaded.mapped else "memory"
        loaded.version, loaded.directory = meta["version"], directory
        return loaded


def _category_column(categories: Sequence[str | None] | None, n: int) -> np.ndarray | None:
    if categories is None:
        return None
    column = np.asarray([None if c is None else str(c) for c in categories], dtype=object)
    if len(column) != n:
        raise ValueError(f"{len(column)} categories but {n} item ids")
    return column


def _file_stamp(path: Path) -> tuple[int, int, int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def load_index(location: str | os.PathLike, cache_dir: str | os.PathLike | None = None, mmap: bool = False,
               *, storage_config: storage.StorageConfig | None = None) -> VectorIndex:
    """A saved index from a local folder (loaded where it is) or an object-store URI (``s3://...``:
    copied once per content hash into ``cache_dir`` by ``recsys.storage.local_cache``, verified,
    then loaded from that node-local copy, so every replica on the node maps the same file).
    ``cache_dir`` None: ``DEFAULT_CACHE_DIR``."""
    local = storage.local_cache(location, cache_dir or DEFAULT_CACHE_DIR, config=storage_config)
    return VectorIndex.load(local, mmap=mmap)


def check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """Queries as a contiguous (Q, dim) float32 matrix (one vector becomes one row), finite; else a
    ValueError naming the problem. Shared by every index backend."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"queries: expected shape (Q, {dim}), got {queries.shape}")
    if not np.isfinite(queries).all():
        raise ValueError(f"queries: row {int(np.flatnonzero(~np.isfinite(queries).all(1))[0])} contains NaN or inf")
    return queries


def check_unique(ids: np.ndarray) -> None:
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dupes = unique[counts > 1].tolist()
        raise ValueError(f"{len(dupes)} duplicate item id(s), e.g. {dupes[:5]}")
