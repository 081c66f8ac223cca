"""Index build recipes: the stage config of ``ray_jobs.build_index`` and the checks it runs on item
vectors before they reach :class:`recsys.index.VectorIndex`.

Every input row is indexed, quarantined with a reason (null/empty id, null vector, wrong dimension,
NaN/inf, not unit norm, repeated id) or, when the vectors carry a view column (the embed run's
augmented copies of each item), skipped as another view, so read = indexed + quarantined + skipped
can be proved;
``recall_report`` measures the built index against exact search.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.artifacts import latest_run, local_copy
from recsys.config import ConfigError
from recsys.data.result import AdapterError, reason_counts
from recsys.data.schema import QUARANTINE_SCHEMA
from recsys.index import IndexConfig, VectorIndex, recall_at_k, row_problems
from recsys.models.item_towers import ITEM_VECTORS_FILE
from recsys.stores.postgres import PostgresConfig

BACKENDS = ("faiss", "pgvector")


@dataclass
class BuildIndexConfig:
    vectors: str | None = None                 # parquet file or folder; None: latest run under vectors_root
    vectors_root: str = "artifacts/item_tower"
    vectors_file: str = ITEM_VECTORS_FILE
    id_column: str = "item_id"
    vector_column: str = "vector"
    dim: int | None = None                     # None: the fixed size of the column, else the commonest length
    index: IndexConfig = field(default_factory=IndexConfig)
    output_root: str = "artifacts/index"
    run_name: str | None = None
    view_column: str | None = None             # e.g. "view" for an embed run's image_embeddings
    view: int = 0                              # the row per item that is indexed; other views are skipped
    recall_k: int = 100
    recall_queries: int = 1000                 # indexed vectors sampled as queries for the recall check
    rows_per_batch: int = 4096
    backend: str = "faiss"                     # faiss: index files in the run folder; pgvector: a table in PostgreSQL
    postgres: PostgresConfig = field(default_factory=PostgresConfig)  # pgvector: embedded server unless dsn is set
    table: str | None = None                   # pgvector table; None: named after the run (idx_<run folder>)
    copy_rows: int = 10_000                    # pgvector: rows per parallel COPY task (one connection each)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"build_index backend {self.backend!r}: expected one of {list(BACKENDS)}")


def pgvector_table(cfg: BuildIndexConfig, run_dir: Path) -> str:
    """The run's table name: ``table``, or ``idx_`` + the run folder's name made an identifier."""
    return cfg.table or "idx_" + re.sub(r"[^a-z0-9_]", "_", run_dir.name.lower())[:44]


def rows_to_write(kept: pa.Table) -> pa.Table:
    """The kept rows with their index row numbers (0..N-1 in file order), as parallel writers get them."""
    return pa.table({"row": pa.array(np.arange(kept.num_rows), pa.int64()), "item_id": kept["item_id"],
                     "vector": kept["vector"]})


OTHER_VIEW = "other_view"  # not a fault: an augmented copy of an item, skipped (counted apart)


def validate_batch(batch: pa.Table, id_column: str, vector_column: str, dim: int, tolerance: float,
                   view_column: str | None = None, view: int = 0) -> pa.Table:
    """item_id, vector (null when rejected), reason (null when kept), detail, path (the file, when the
    read added it): one row per input row. With ``view_column``, rows of another view than ``view``
    get the reason ``other_view`` (skipped, not quarantined)."""
    ids = batch[id_column].combine_chunks().cast(pa.string())
    column = batch[vector_column].combine_chunks()
    lengths = pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
    reasons = np.full(batch.num_rows, None, dtype=object)
    details = np.full(batch.num_rows, None, dtype=object)
    vectors = np.zeros((batch.num_rows, dim), dtype=np.float32)
    right_size = lengths == dim
    if right_size.any():  # nulls inside a vector become NaN here, so they fail as not_finite
        flat = pc.list_flatten(column.filter(pa.array(right_size))).to_numpy(zero_copy_only=False)
        vectors[right_size] = flat.astype(np.float32).reshape(-1, dim)
    problems = row_problems(vectors, tolerance)
    norms = np.linalg.norm(vectors, axis=1)
    no_id = pc.fill_null(pc.equal(ids, ""), True).to_numpy(zero_copy_only=False)
    # First matching check wins, in this order.
    views = (pc.fill_null(pc.not_equal(batch[view_column], view), True).to_numpy(zero_copy_only=False)
             if view_column else np.zeros(batch.num_rows, dtype=bool))
    checks = [(views, OTHER_VIEW, lambda r: f"{view_column} is not {view}"),
              (no_id, "null_id", lambda r: f"{id_column} is null or empty"),
              (lengths == -1, "null_vector", lambda r: f"{vector_column} is null"),
              (~right_size, "wrong_dim", lambda r: f"{vector_column} has {lengths[r]} values, expected {dim}"),
              (problems == "not_finite", "not_finite", lambda r: f"{vector_column} contains NaN, inf or null values"),
              (problems == "not_unit_norm", "not_unit_norm", lambda r: f"norm {norms[r]:.4f}, expected 1 ± {tolerance}")]
    rejected = np.zeros(batch.num_rows, dtype=bool)
    for mask, reason, detail in checks:
        for row in np.flatnonzero(mask & ~rejected):
            reasons[row], details[row] = reason, detail(row)
        rejected |= mask
    vector_type = pa.list_(pa.float32(), dim)
    return pa.table({"item_id": ids,
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim,
                                                                 mask=pa.array(rejected)).cast(vector_type),
                     "reason": pa.array(reasons.tolist(), pa.string()),
                     "detail": pa.array(details.tolist(), pa.string()),
                     "path": batch["path"] if "path" in batch.column_names else pa.nulls(batch.num_rows, pa.string())})


def mark_repeated_ids(checked: pa.Table) -> pa.Table:
    """Quarantine every valid row whose id an earlier valid row has (the first one is indexed). Done on
    the whole table in the driver, because repeats can sit in different blocks."""
    valid = np.flatnonzero(pc.is_null(checked["reason"]).to_numpy(zero_copy_only=False))
    repeated = valid[pd.Series(checked["item_id"].take(valid).to_pylist()).duplicated().to_numpy()]
    if not len(repeated):
        return checked
    reasons = checked["reason"].to_pylist()
    details = checked["detail"].to_pylist()
    for row in repeated:
        reasons[row], details[row] = "duplicate_id", "item_id seen in an earlier row; the first one is indexed"
    return (checked.set_column(checked.schema.get_field_index("reason"), "reason", pa.array(reasons, pa.string()))
            .set_column(checked.schema.get_field_index("detail"), "detail", pa.array(details, pa.string())))


def vectors_path(cfg: BuildIndexConfig) -> Path:
    try:
        path = local_copy(cfg.vectors) if cfg.vectors else latest_run(cfg.vectors_root) / cfg.vectors_file
    except FileNotFoundError as exc:  # no item-tower run yet: one line, not a traceback
        raise AdapterError(f"{exc} (or pass --set vectors=PATH)") from exc
    if not path.exists():
        raise AdapterError(f"{path}: no such file or folder (expected item vectors parquet)")
    return path.resolve()


def vector_type(cfg: BuildIndexConfig, path: Path) -> pa.DataType:
    """The vector column's type, after checking that both columns exist (before any Ray work)."""
    schema = pq.ParquetDataset(str(path)).schema
    missing = [c for c in (cfg.id_column, cfg.vector_column, cfg.view_column) if c and c not in schema.names]
    if missing:
        raise AdapterError(f"{path}: missing column(s) {missing}; found {schema.names}")
    kind = schema.field(cfg.vector_column).type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise AdapterError(f"{path}: column {cfg.vector_column} is {kind}, expected a list of floats")
    return kind


def rows_in_files(source: Path) -> int:
    """Row count from the parquet footers: what was there to read, counted apart from the pipeline."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in pq.ParquetDataset(str(source)).files)


def quarantine_table(rows: pa.Table, source: str) -> pa.Table:
    files = rows["path"].to_pylist()
    return pa.table({"source_file": pa.array([f or source for f in files], pa.string()),
                     "record": pa.array([i if i else "<null>" for i in rows["item_id"].to_pylist()], pa.string()),
                     "level": pa.array(["row"] * rows.num_rows, pa.string()),
                     "reason": rows["reason"], "detail": rows["detail"]}, schema=QUARANTINE_SCHEMA)


def split_checked(checked: pa.Table, source: str, read: int) -> tuple[pa.Table, pa.Table, dict]:
    """(rows to index, quarantine table, counts proving read = indexed + quarantined + skipped views)
    of validated rows."""
    kept_mask = pc.is_null(checked["reason"])
    other_view = pc.fill_null(pc.equal(checked["reason"], OTHER_VIEW), False)
    kept = checked.filter(kept_mask)
    rejected = checked.filter(pc.and_(pc.invert(kept_mask), pc.invert(other_view)))
    skipped = int(pc.sum(other_view).as_py() or 0)
    quarantine = quarantine_table(rejected, source)
    counts = {"read": read, "indexed": kept.num_rows, "quarantined": rejected.num_rows,
              "skipped_other_views": skipped,
              "reconciles": read == kept.num_rows + rejected.num_rows + skipped,
              "quarantine_reasons": reason_counts(quarantine)}
    return kept, quarantine, counts


def recall_report(index, vectors: np.ndarray, k: int, n_queries: int, seed: int) -> dict:
    """recall@k of ``index`` against exact search, on a seeded sample of its own vectors as queries."""
    rng = np.random.default_rng(seed)
    queries = vectors[np.sort(rng.choice(len(vectors), min(n_queries, len(vectors)), replace=False))]
    k = min(k, len(vectors))
    started = time.perf_counter()
    found = index.search(queries, k).rows
    index_s = time.perf_counter() - started
    # Truth from FAISS exact unless the index is one (a pgvector exact index would scan every row per query).
    exact = (index if index.kind == "exact" and isinstance(index, VectorIndex)
             else VectorIndex.build(vectors, index.item_ids, IndexConfig(kind="exact")))
    started = time.perf_counter()
    truth = exact.search(queries, k).rows
    exact_s = time.perf_counter() - started
    return {f"recall@{k}": round(recall_at_k(found, truth), 4), "k": k, "queries": len(queries),
            "queries_are": "indexed vectors (each also finds itself)", "index_search_seconds": round(index_s, 3),
            "exact_search_seconds": round(exact_s, 3)}
