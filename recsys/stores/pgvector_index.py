"""A vector index in PostgreSQL with pgvector, mirroring ``recsys.index.VectorIndex`` (the FAISS class).

    dsn = ensure_server(PostgresConfig())
    index = PgVectorIndex.build(vectors, item_ids, IndexConfig(kind="hnsw"), dsn=dsn, name="item_vectors",
                                categories=categories)
    hits = index.search(queries, k=100, filter=SearchFilter(categories=("shoes",)))
    index.save(run_dir); PgVectorIndex.load(run_dir, dsn)      # or PgVectorIndex.open(dsn, "item_vectors")

Same semantics as the FAISS class: inner product on unit vectors only (``METRIC_GUARD``), scores are
cosines, rows are positions 0..N-1 in insertion order mapped to string item ids, ``remove`` is a soft
delete (the row stays, searches skip it, a removed id may be added again as a new row), a live id is
unique, and ``version`` is a content hash of rows, ids, removed flags and vectors. Kinds: ``exact`` (no
vector index: a sequential scan, exact) and ``hnsw`` (``vector_ip_ops``); ``ivfpq`` is FAISS-only.

One table per index: ``row`` (primary key), ``item_id``, ``removed``, ``category`` (optional, for
filters) and ``embedding vector(dim)``, with constraints that repeat the Python checks (dimension, unit
norm, NaN rejected by pgvector, one live row per id), so a writer that bypasses this class cannot corrupt
it either. ``vector_index_meta`` records each index's kind, dim, config and build time. Every write is
one transaction: a bad batch leaves nothing behind. Every value reaches SQL as a parameter and table
names are checked identifiers, so ids and filters cannot inject SQL.

pgvector's ``<#>`` is the NEGATIVE inner product (ascending order = best first), so scores are its negation.
A filtered HNSW search still returns k results when 1% of items pass the filter: with pgvector >= 0.8
an iterative index scan (``hnsw.iterative_scan = relaxed_order``) keeps walking the graph until k rows
pass (up to ``hnsw.max_scan_tuples``); with older pgvector (the embedded server's 0.6.2) the walk
over-fetches, ``ef_search`` x 1.5 / the filter's selectivity, and a filter too selective for that (or a
query that still comes back short) is answered exactly: the passing rows sorted by score. Results are
re-sorted by score either way.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from recsys.config import ConfigError
from recsys.index import (MAX_EF_SEARCH, METRIC_GUARD, Hits, IndexArtifactError, IndexConfig, SearchFilter,
                          check_queries, check_unique, check_unit_vectors, filtered_ef)
from recsys.stores.postgres import ITERATIVE_SCANS, PostgresError, pgvector_problem, version_tuple

KINDS = ("exact", "hnsw")
FORMAT_VERSION = 1
BACKEND = "pgvector"
META_FILE = "index_meta.json"
META_TABLE = "vector_index_meta"
COPY_BATCH = 10_000           # rows per COPY write; all batches of one call share one transaction
BUILD_MEMORY = "1GB"          # maintenance_work_mem for HNSW builds: a graph that fits builds several times faster
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_name(name: str) -> str:
    if not _TABLE_NAME.match(name) or name == META_TABLE:
        raise ValueError(f"index name {name!r}: must match {_TABLE_NAME.pattern} and not be {META_TABLE!r} "
                         "(it becomes a table name)")
    return name


def _check_config(config: IndexConfig) -> IndexConfig:
    if config.kind not in KINDS:
        raise ConfigError(f"pgvector index kind {config.kind!r}: expected one of {list(KINDS)} (ivfpq is FAISS-only)")
    return config


def _connect(dsn: str) -> psycopg.Connection:
    problem = pgvector_problem(dsn)
    if problem is not None:
        raise PostgresError(problem)
    conn = psycopg.connect(dsn, autocommit=True)
    register_vector(conn)
    return conn


class PgVectorIndex:
    """An index table in PostgreSQL plus the config it was built with; holds one connection (thread-safe)."""

    def __init__(self, dsn: str, name: str, config: IndexConfig, dim: int, source: str | None = None,
                 built_utc: str | None = None):
        self.dsn, self.name, self.config, self.source = dsn, _check_name(name), _check_config(config), source
        self._dim = int(dim)
        self.built_utc = built_utc or _utc_now()
        self._table = sql.Identifier(name)
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._iterative: bool | None = None

    # -- connection ------------------------------------------------------------------------------
    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PgVectorIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, item_ids: Sequence[str], config: IndexConfig | None = None,
              source: str | None = None, progress: bool = False, *, dsn: str, name: str = "item_vectors",
              categories: Sequence[str | None] | None = None, replace: bool = False) -> PgVectorIndex:
        """Create table ``name`` with these vectors (and its HNSW index), in one transaction. An existing
        index of that name is an error unless ``replace`` (then it is swapped atomically)."""
        config = _check_config(config or IndexConfig())
        ids, vectors, categories = _checked_batch(vectors, item_ids, categories, None, config)
        if len(vectors) == 0:
            raise ValueError("no vectors to index")
        index = cls(dsn, name, config, vectors.shape[1], source)
        with index._transaction() as cur:
            index._replace_guard(cur, replace)
            _create_table(cur, name, index.dim, config)
            index._copy(cur, 0, ids, vectors, categories, progress)
            index._finish(cur)
        return index

    @classmethod
    def from_staging(cls, dsn: str, staging: str, name: str, config: IndexConfig, source: str | None = None,
                     replace: bool = False) -> PgVectorIndex:
        """Swap a staging table that parallel writers filled (``create_staging`` + ``copy_batch``) in as
        index ``name``, with its indexes, in one transaction: readers see the old index or the whole
        new one. The rows must be 0..N-1 without gaps (each writer copies the rows it was given)."""
        config = _check_config(config)
        with _connect(dsn) as conn:
            dim = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND "
                               "attname = 'embedding'", (_check_name(staging),)).fetchone()[0]
        index = cls(dsn, name, config, dim, source)
        with index._transaction() as cur:
            n, first, last = cur.execute(sql.SQL("SELECT count(*), min(row), max(row) FROM {}").format(
                sql.Identifier(staging))).fetchone()
            if n == 0 or first != 0 or last != n - 1:
                raise ValueError(f"staging table {staging!r}: rows {first}..{last} for {n} rows; expected 0..{n - 1} "
                                 "(a writer failed or wrote twice); nothing was swapped in")
            index._replace_guard(cur, replace)
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(staging), index._table))
            cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(f"{staging}_pkey"),
                                                                       sql.Identifier(f"{name}_pkey")))
            index._finish(cur)
        return index

    def _replace_guard(self, cur: psycopg.Cursor, replace: bool) -> None:
        """Create the meta table, lock it (concurrent builds of one name), drop an index this one replaces."""
        cur.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, kind text NOT NULL, "
                    "dim integer NOT NULL CHECK (dim > 0), metric text NOT NULL CHECK (metric = "
                    "'inner_product'), config jsonb NOT NULL, source text, built_utc text NOT NULL)")
        cur.execute(f"LOCK TABLE {META_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        if cur.execute(sql.SQL("SELECT to_regclass({})").format(sql.Literal(self.name))).fetchone()[0] is not None:
            if not replace:
                raise ValueError(f"index {self.name!r} already exists in the database; open() it, or build "
                                 "with replace=True to rebuild it")
            cur.execute(sql.SQL("DROP TABLE {}").format(self._table))

    def _finish(self, cur: psycopg.Cursor) -> None:
        """Secondary indexes (live ids, categories, the HNSW graph), statistics and the meta row."""
        name, t, config = self.name, self._table, self.config
        cur.execute(sql.SQL("CREATE UNIQUE INDEX {} ON {} (item_id) WHERE NOT removed").format(
            sql.Identifier(f"{name}_live_item"), t))
        cur.execute(sql.SQL("CREATE INDEX {} ON {} (category) WHERE NOT removed").format(
            sql.Identifier(f"{name}_category"), t))
        if config.kind == "hnsw":  # after the load: building the graph once is faster than growing it
            cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (BUILD_MEMORY,))
            cur.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_ip_ops) "
                                "WITH (m = {m}, ef_construction = {ef})").format(
                sql.Identifier(f"{name}_hnsw"), t, m=sql.Literal(config.hnsw_m),
                ef=sql.Literal(config.ef_construction)))
        cur.execute(sql.SQL("ANALYZE {}").format(t))  # planner statistics now, not when autovacuum runs
        # microseconds: a rebuild under the same name is another table to the item log (applied_key)
        self.built_utc = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        cur.execute(f"INSERT INTO {META_TABLE} (name, kind, dim, metric, config, source, built_utc) "
                    "VALUES (%s, %s, %s, 'inner_product', %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                    "kind = EXCLUDED.kind, dim = EXCLUDED.dim, config = EXCLUDED.config, "
                    "source = EXCLUDED.source, built_utc = EXCLUDED.built_utc",
                    (name, config.kind, self.dim, json.dumps(dataclasses.asdict(config)), self.source,
                     self.built_utc))

    @classmethod
    def open(cls, dsn: str, name: str = "item_vectors") -> PgVectorIndex:
        """Attach to an index built earlier (by any process) in this database."""
        _check_name(name)
        with _connect(dsn) as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (META_TABLE,)).fetchone()[0]
            row = exists and conn.execute(f"SELECT kind, dim, metric, config, source, built_utc FROM {META_TABLE} "
                                          "WHERE name = %s", (name,)).fetchone()
        if not row:
            raise KeyError(f"no pgvector index named {name!r} in this database; build it first")
        kind, dim, metric, config, source, built_utc = row
        if metric != "inner_product":
            raise IndexArtifactError(f"index {name!r}: metric {metric!r}: {METRIC_GUARD}")
        return cls(dsn, name, IndexConfig(**config), dim, source, built_utc)

    def add(self, vectors: np.ndarray, item_ids: Sequence[str], progress: bool = False, *,
            categories: Sequence[str | None] | None = None) -> None:
        """Append new items as rows ntotal.. in one transaction. A live id is an error; a removed one may return."""
        ids, vectors, categories = _checked_batch(vectors, item_ids, categories, self.dim, self.config)
        if len(ids) == 0:
            return
        with self._transaction() as cur:
            # One writer at a time: rows must stay 0..N-1 without gaps (readers are not blocked).
            cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self._table))
            present = [r[0] for r in cur.execute(sql.SQL(
                "SELECT item_id FROM {} WHERE NOT removed AND item_id = ANY(%s) ORDER BY item_id LIMIT 5").format(
                self._table), (ids.tolist(),))]
            if present:
                raise ValueError(f"item id(s) already in the index, e.g. {present}; remove() them first to "
                                 "replace their vectors")
            first = cur.execute(sql.SQL("SELECT coalesce(max(row) + 1, 0) FROM {}").format(self._table)).fetchone()[0]
            self._copy(cur, first, ids, vectors, categories, progress)

    def _copy(self, cur: psycopg.Cursor, first: int, ids: np.ndarray, vectors: np.ndarray,
              categories: list[str | None], progress: bool) -> None:
        from tqdm import tqdm

        starts = range(0, len(ids), COPY_BATCH)
        for start in tqdm(starts, desc=f"copy into {self.name}", unit="batch", disable=not progress or len(starts) < 2):
            end = min(start + COPY_BATCH, len(ids))
            _copy_rows(cur, self.name, range(first + start, first + end), ids[start:end].tolist(),
                       categories[start:end], vectors[start:end])

    def remove(self, item_ids: Sequence[str]) -> int:
        """Soft delete: search skips these items from now on. Unknown (or already removed) ids are an error
        and then nothing is removed."""
        wanted = [str(i) for i in item_ids]
        with self._transaction() as cur:
            done = {r[0] for r in cur.execute(sql.SQL(
                "UPDATE {} SET removed = true WHERE NOT removed AND item_id = ANY(%s) RETURNING item_id").format(
                self._table), (wanted,))}
            unknown = [i for i in dict.fromkeys(wanted) if i not in done]
            if unknown:
                raise KeyError(f"{len(unknown)} item id(s) not in the index, e.g. {unknown[:5]}")
        return len(done)

    # -- item-log operations in the caller's transaction ----------------------------------------
    @property
    def applied_key(self) -> str:
        """The name under which an item log records how far it has applied itself to this table: the
        table and its build time, so a table rebuilt under the same name starts from the log's beginning."""
        return f"{self.name}@{self.built_utc}"

    def is_live_in(self, cur: psycopg.Cursor, item_id: str) -> bool:
        return bool(cur.execute(sql.SQL("SELECT exists(SELECT 1 FROM {} WHERE NOT removed AND item_id = %s)")
                                .format(self._table), (str(item_id),)).fetchone()[0])

    def apply_operations(self, cur: psycopg.Cursor, operations: Sequence[dict]) -> int:
        """Apply item-log operations (``recsys.stores.item_log``: ``{"op": "add", "item", "vector"}`` or
        ``{"op": "delete", "item_id"}``) to this table on the CALLER's cursor, inside its transaction, so
        a log row and its index row commit together or not at all. The log's replay semantics: an add
        replaces a live row of its id by a new row, a delete removes the live row (none: nothing).
        Vectors are checked as ``add`` checks them first; a bad one raises and the caller's transaction
        rolls back. Returns the rows changed. (The cursor may be a plain connection's: vectors travel as
        pgvector's text form, exact for float32 at 9 significant digits.)"""
        if not operations:
            return 0
        cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(self._table))  # rows stay 0..N-1
        next_row = cur.execute(sql.SQL("SELECT coalesce(max(row) + 1, 0) FROM {}").format(self._table)).fetchone()[0]
        changed = 0
        for operation in operations:
            adding = operation["op"] == "add"
            item_id = str(operation["item"]["item_id"] if adding else operation["item_id"])
            if adding:  # before any write: a bad vector leaves the live row in place (and the caller rolls back)
                _, vectors, _ = _checked_batch(np.asarray(operation["vector"])[None], [item_id], None, self.dim,
                                               self.config)
            changed += cur.execute(sql.SQL("UPDATE {} SET removed = true WHERE NOT removed AND item_id = %s")
                                   .format(self._table), (item_id,)).rowcount
            if adding:
                cur.execute(sql.SQL("INSERT INTO {} (row, item_id, embedding) VALUES (%s, %s, %s::vector)")
                            .format(self._table), (next_row, item_id, vector_text(vectors[0])))
                next_row += 1
                changed += 1
        return changed

    # -- searching -------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, ef_search: int | None = None, nprobe: int | None = None, *,
               filter: SearchFilter | None = None) -> Hits:
        """Top-k live items per query by inner product (that pass ``filter``). ``ef_search`` overrides
        the config for this call; ``nprobe`` is accepted for interface parity and unused (no IVF here)."""
        queries = check_queries(queries, self.dim)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        where, params = [sql.SQL("NOT removed")], {"k": int(k)}
        if filter is not None and filter.item_ids is not None:
            where.append(sql.SQL("item_id = ANY(%(ids)s)"))
            params["ids"] = list(filter.item_ids)
        if filter is not None and filter.categories is not None:
            where.append(sql.SQL("category = ANY(%(categories)s)"))
            params["categories"] = list(filter.categories)
        where_sql = sql.SQL(" AND ").join(where)
        query = sql.SQL("SELECT row, item_id, -(embedding <#> %(q)s) FROM {} WHERE {} "
                        "ORDER BY embedding <#> %(q)s LIMIT %(k)s").format(self._table, where_sql)
        # Exact whatever the planner likes: ordering rows of a materialised CTE cannot use the HNSW index.
        exact_query = sql.SQL("WITH passing AS MATERIALIZED (SELECT row, item_id, embedding FROM {} WHERE {}) "
                              "SELECT row, item_id, -(embedding <#> %(q)s) FROM passing "
                              "ORDER BY embedding <#> %(q)s LIMIT %(k)s").format(self._table, where_sql)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), "", dtype=object)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        with self._transaction() as cur:
            ef = max(k, ef_search or self.config.ef_search)
            plan, passing, ef = (self._filtered_plan(cur, where_sql, params, k, ef) if len(where) > 1
                                 else ("index", 0, ef))
            if self.kind == "hnsw":  # SET LOCAL via set_config: per transaction, never leaks to other calls
                cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(MAX_EF_SEARCH, ef)),))
                if self._iterative_scans(cur):
                    cur.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            short = []
            for qi, q in enumerate(queries):
                found = [] if plan == "exact" else cur.execute(query, {**params, "q": q}).fetchall()
                if plan == "exact" or len(found) < min(k, passing):
                    short.append(qi)
                self._fill(qi, found, rows, ids, scores)
            if short and self.kind == "hnsw":
                # An HNSW walk that ended before k rows passed the filter: answer those queries exactly
                # (filter first, then sort the passing rows; no graph).
                for qi in short:
                    self._fill(qi, cur.execute(exact_query, {**params, "q": queries[qi]}).fetchall(), rows, ids,
                               scores)
        return Hits(scores, ids.astype(str), rows)

    @staticmethod
    def _fill(qi: int, found: list, rows: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> None:
        found.sort(key=lambda r: (-r[2], r[0]))  # relaxed_order may return rows out of order; row breaks ties
        for j, (row, item_id, score) in enumerate(found):
            rows[qi, j], ids[qi, j], scores[qi, j] = row, item_id, score

    def _filtered_plan(self, cur: psycopg.Cursor, where_sql: sql.Composable, params: dict, k: int,
                       ef: int) -> tuple[str, int, int]:
        """(plan, items passing the filter, ef_search) for a filtered search. HNSW gets k rows either by an
        iterative scan (pgvector >= 0.8) or by a walk over-fetching by 1 / selectivity (older pgvector,
        e.g. the embedded 0.6.2); when even the largest ef_search could not reach k passing rows, the plan
        is ``exact``: sort just the passing rows. Queries that still come back short are redone exactly."""
        if self.kind != "hnsw":
            return "index", k, ef
        passing, live = cur.execute(sql.SQL("SELECT count(*) FILTER (WHERE {}), count(*) FILTER (WHERE NOT removed) "
                                            "FROM {}").format(where_sql, self._table), params).fetchone()
        if self._iterative_scans(cur):
            return "index", int(passing), ef
        ef, exhaustive = filtered_ef(ef, int(live), int(passing))
        return ("exact" if exhaustive else "index"), int(passing), ef

    def _iterative_scans(self, cur: psycopg.Cursor) -> bool:
        """Whether the server's pgvector has iterative index scans (asked once per index object)."""
        if self._iterative is None:
            version = cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            self._iterative = version_tuple(version) >= ITERATIVE_SCANS
        return self._iterative

    # -- properties ------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def dim(self) -> int:
        return self._dim

    def _scalar(self, query: sql.Composable, params: tuple = ()):
        with self._transaction() as cur:
            return cur.execute(query, params).fetchone()[0]

    @property
    def ntotal(self) -> int:
        """Rows in the table, removed ones included."""
        return int(self._scalar(sql.SQL("SELECT count(*) FROM {}").format(self._table)))

    def __len__(self) -> int:
        return int(self._scalar(sql.SQL("SELECT count(*) FROM {} WHERE NOT removed").format(self._table)))

    def __contains__(self, item_id: str) -> bool:
        return bool(self._scalar(sql.SQL("SELECT exists(SELECT 1 FROM {} WHERE NOT removed AND item_id = %s)")
                                 .format(self._table), (str(item_id),)))

    @property
    def item_ids(self) -> np.ndarray:
        """Item id of every row, in row order (removed rows included), as in the FAISS class."""
        return self._column("item_id").astype(str)

    @property
    def removed(self) -> np.ndarray:
        return self._column("removed").astype(bool)

    def _column(self, column: str) -> np.ndarray:
        with self._transaction() as cur:
            values = [r[0] for r in cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY row").format(
                sql.Identifier(column), self._table))]
        return np.asarray(values, dtype=object)

    def memory_bytes(self) -> int:
        """Table + indexes on disk (the server caches what it uses in shared buffers)."""
        return int(self._scalar("SELECT pg_total_relation_size(%s::regclass)", (self.name,)))

    @property
    def version(self) -> str:
        """Content hash of kind, config, rows, ids, removed flags and vectors (16 hex chars)."""
        with self._transaction() as cur:
            table_hash = cur.execute(sql.SQL(
                "SELECT coalesce(md5(string_agg(row::text || ',' || item_id || ',' || removed::text || ',' || "
                "coalesce(category, '') || ',' || md5(embedding::text), E'\\n' ORDER BY row)), '') FROM {}").format(
                self._table)).fetchone()[0]
        digest = hashlib.sha256(json.dumps({"kind": self.kind, "dim": self.dim,
                                            "config": dataclasses.asdict(self.config)}, sort_keys=True).encode())
        digest.update(table_hash.encode())
        return digest.hexdigest()[:16]

    # -- artifact --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> dict:
        """Write index_meta.json naming the table and its content hash (the data stays in the database;
        the DSN is not written: it may hold a password). Returns the meta."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._transaction() as cur:
            n_items, n_removed = cur.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE removed) FROM {}")
                                             .format(self._table)).fetchone()
            pgvector_version = cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        meta = {"format_version": FORMAT_VERSION, "backend": BACKEND, "table": self.name, "version": self.version,
                "kind": self.kind, "metric": "inner_product", "dim": self.dim, "n_items": int(n_items),
                "n_removed": int(n_removed), "config": dataclasses.asdict(self.config),
                "source_vectors": self.source, "built_utc": self.built_utc, "saved_utc": _utc_now(),
                "pgvector_version": pgvector_version, "files": {}}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        return meta

    @classmethod
    def load(cls, directory: str | Path, dsn: str, live: bool = False) -> PgVectorIndex:
        """The index that ``save`` described, checked against the table: same kind, dim, row count and
        content hash, or IndexArtifactError naming the difference. ``live``: a table the item log writes
        to (Serve's pgvector backend): it may have grown and had rows removed since the save, so the
        row count must be at least the saved one and the content hash (a scan of every row) is skipped."""
        path = Path(directory) / META_FILE
        if not path.is_file():
            raise IndexArtifactError(f"{Path(directory)}: missing {META_FILE}; not a saved pgvector index")
        meta = json.loads(path.read_text())
        if meta.get("backend") != BACKEND:
            raise IndexArtifactError(f"{path}: backend {meta.get('backend', 'faiss')!r}, expected {BACKEND!r}; "
                                     "load it with recsys.index.VectorIndex")
        if meta.get("format_version") != FORMAT_VERSION:
            raise IndexArtifactError(f"{path}: format_version {meta.get('format_version')}, this code reads "
                                     f"{FORMAT_VERSION}; rebuild the index")
        if meta.get("metric") != "inner_product":
            raise IndexArtifactError(f"{path}: metric {meta.get('metric')!r}: {METRIC_GUARD}")
        try:
            index = cls.open(dsn, meta["table"])
        except KeyError as exc:
            raise IndexArtifactError(f"{path}: {exc.args[0]}") from None
        # built_utc: a table rebuilt under the same name (a fixed build_index.table) is not this artifact's
        checks = [("kind", meta["kind"], index.kind), ("dim", meta["dim"], index.dim),
                  ("built_utc", meta["built_utc"], index.built_utc)]
        if not live:
            checks += [("n_items", meta["n_items"], index.ntotal),
                       ("version (content hash)", meta["version"], index.version)]
        elif index.ntotal < meta["n_items"]:  # rows are only appended (a removal is a flag): fewer is another table
            checks.append(("n_items (or more)", meta["n_items"], index.ntotal))
        for what, in_meta, in_db in checks:
            if in_meta != in_db:
                index.close()
                raise IndexArtifactError(f"{path} says {what} {in_meta} but table {meta['table']!r} has {in_db}; "
                                         "the table changed after the save (or was rebuilt)")
        return index


def _create_table(cur: psycopg.Cursor, name: str, dim: int, config: IndexConfig) -> None:
    """An index table without its secondary indexes: the constraints that repeat the Python checks."""
    cur.execute(sql.SQL(
        "CREATE TABLE {t} (row bigint PRIMARY KEY CHECK (row >= 0), "
        "item_id text NOT NULL CHECK (item_id <> ''), removed boolean NOT NULL DEFAULT false, "
        "category text, embedding vector({dim}) NOT NULL "
        "CHECK (abs(vector_norm(embedding) - 1) <= {tol}))").format(
        t=sql.Identifier(name), dim=sql.Literal(int(dim)), tol=sql.Literal(config.norm_tolerance)))


def staging_name(name: str) -> str:
    return _check_name(f"{name[:40]}_staging")


def create_staging(dsn: str, name: str, dim: int, config: IndexConfig) -> str:
    """An empty staging table for index ``name`` (a leftover of a failed build is dropped first);
    parallel writers fill it with ``copy_batch``, ``PgVectorIndex.from_staging`` swaps it in."""
    staging = staging_name(_check_name(name))
    with _connect(dsn) as conn, conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging)))
        _create_table(conn.cursor(), staging, dim, _check_config(config))
    return staging


def copy_batch(batch, dsn: str, table: str, config: IndexConfig, dim: int):
    """Ray Data ``map_batches`` writer: one connection per call, the batch's rows (``row``, ``item_id``,
    ``vector``, optional ``category``) checked as ``build`` checks them and COPYed in one transaction.
    Returns one row: {"written": n}."""
    import pyarrow as pa

    ids = batch["item_id"].to_pylist()
    vectors = batch["vector"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    categories = batch["category"].to_pylist() if "category" in batch.column_names else None
    ids, vectors, categories = _checked_batch(vectors, ids, categories, dim, config)
    rows = batch["row"].to_pylist()
    with _connect(dsn) as conn, conn.transaction():
        _copy_rows(conn.cursor(), _check_name(table), rows, ids.tolist(), categories, vectors)
    return pa.table({"written": [len(rows)]})


def vector_text(vector: np.ndarray) -> str:
    """pgvector's text form of a float32 vector; 9 significant digits read back as the same float32."""
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, dtype=np.float32).tolist()) + "]"


def _copy_rows(cur: psycopg.Cursor, table: str, rows, ids, categories, vectors) -> None:
    """One binary COPY (vectors travel as float32 bytes, no text round trip)."""
    with cur.copy(sql.SQL("COPY {} (row, item_id, category, embedding) FROM STDIN WITH (FORMAT BINARY)")
                  .format(sql.Identifier(table))) as copy:
        copy.set_types(["int8", "text", "text", "vector"])
        for row, item_id, category, vector in zip(rows, ids, categories, vectors):
            copy.write_row((row, item_id, category, vector))


class _Transaction:
    """``with index._transaction() as cur``: the shared connection, locked and inside one transaction;
    a broken connection is replaced on the next call."""

    def __init__(self, index: PgVectorIndex):
        self.index = index

    def __enter__(self) -> psycopg.Cursor:
        self.index._lock.acquire()
        try:
            if self.index._conn is None or self.index._conn.closed:
                self.index._conn = _connect(self.index.dsn)
            self._tx = self.index._conn.transaction()
            self._tx.__enter__()
            self._cur = self.index._conn.cursor()
            return self._cur
        except BaseException:
            self.index._lock.release()
            raise

    def __exit__(self, *exc) -> None:
        try:
            self._cur.close()
            self._tx.__exit__(*exc)
        finally:
            self.index._lock.release()
        if exc[0] is not None and isinstance(exc[1], psycopg.Error):
            _reraise_clearly(exc[1])


def _reraise_clearly(error: psycopg.Error) -> None:
    """Constraint violations as ValueError naming the problem (a writer raced us past the Python checks)."""
    if isinstance(error, psycopg.errors.UniqueViolation):
        raise ValueError(f"duplicate item id: another live row has it ({error.diag.message_detail})") from error
    if isinstance(error, (psycopg.errors.CheckViolation, psycopg.DataError)):
        raise ValueError(f"rejected by the database: {error.diag.message_primary}") from error


def _checked_batch(vectors: np.ndarray, item_ids: Sequence[str], categories: Sequence[str | None] | None,
                   dim: int | None, config: IndexConfig) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """The same checks as the FAISS class (shape, finite, unit norm, unique ids), before any SQL runs."""
    ids = np.asarray(list(item_ids), dtype=str)
    vectors = check_unit_vectors(vectors, ids, dim=dim, tolerance=config.norm_tolerance)
    if len(vectors) != len(ids):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} item ids")
    if (ids == "").any():
        raise ValueError(f"item ids: row {int(np.flatnonzero(ids == '')[0])} is empty")
    check_unique(ids)
    categories = [None] * len(ids) if categories is None else [None if c is None else str(c) for c in categories]
    if len(categories) != len(ids):
        raise ValueError(f"{len(categories)} categories but {len(ids)} item ids")
    for what, values in (("item ids", ids.tolist()), ("categories", categories)):
        bad = next((i for i, value in enumerate(values) if value is not None and "\x00" in value), None)
        if bad is not None:  # PostgreSQL text cannot hold NUL
            raise ValueError(f"{what}: row {bad} ({values[bad]!r}) contains a NUL byte")
    return ids, vectors, categories
