"""The item log: durable item changes (added items with their vectors and image, deletions) that every
reader replays in one order. One interface, two stores:

    log = open_item_log(ItemLogConfig(kind="file", path="artifacts/serve/state"))      # one node
    log = open_item_log(ItemLogConfig(kind="postgres", dsn_env="FASHIONREC_ITEM_LOG_DSN"))  # shared

    key = image_key(item_id, data, "jpg")
    log.add({**item, "image": key}, vector, text_vector, image=data)   # -> the position after it
    log.add(..., index=pgvector_index)     # PostgreSQL: the shared index's row in the same transaction
    log.delete(item_id)
    operations, position = log.read_since(position)        # what others appended since, in commit order

An operation is ``{"op": "add", "item": {...}, "vector": float32 array, "text_vector": array | None,
"ts": unix seconds}`` or ``{"op": "delete", "item_id": ..., "ts": ...}``. Operations are idempotent
set/remove, so replaying any prefix twice gives the same state. A position is opaque to callers and
means something only to the log that returned it (bytes for the file log, a sequence number for
PostgreSQL); 0 is the start. ``read_since`` never returns a partly written operation and never skips
one: a reader that keeps the returned position and calls again sees every later operation once.

:class:`FileItemLog` (one folder, one node: the Serve app's original ``ItemStore``)::

    items.jsonl          one operation per line: {"op": "add", "item": {...}, "vector": b64, ...}
                                                 {"op": "delete", "item_id": "..."}
    images/<sha1>.<ext>  uploaded images, written atomically before the line that names them

A line is appended with one ``write`` under an exclusive ``flock`` and fsynced before ``add`` returns;
replay applies every complete line in order (a torn last line from a crash is skipped).

:class:`PostgresItemLog` (every replica on every node that reaches the database): table ``<table>``
holds the operations (``position bigserial``, vectors as little-endian float32 ``bytea``, the item as
``json``), ``<table>_images`` the images as ``bytea`` under the same keys as the file log
(``images/<sha1 of id and content>.<ext>``). Appends are serialised by an advisory lock so that
position order is commit order (see :meth:`PostgresItemLog._append`). ``<table>_products`` holds every
product as it stands (catalog rows imported once per items run, API rows written in the operation's
transaction); ``<table>_applied`` records how far each shared pgvector index table (``index=`` on
add/delete, :meth:`PostgresItemLog.catch_up`) has applied the log, so a log row, its image, its product
row and its index row commit together or not at all (docs/pgvector.md).
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, TypeVar, runtime_checkable

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
import psycopg.rows
from psycopg.types.json import Json, Jsonb

from recsys.config import ConfigError

log = logging.getLogger(__name__)

LOG_NAME = "items.jsonl"
TABLE_PARTS = ("images", "applied", "products", "catalog_runs")  # <table>_<part> beside the operations table
ORPHAN_MIN_AGE_S = 3600  # an unnamed image younger than this may be an add in flight: kept
KINDS = ("file", "postgres")
DEFAULT_DSN_ENV = "FASHIONREC_ITEM_LOG_DSN"
_EXTENSION = re.compile(r"^[A-Za-z0-9]{1,16}$")
_IMAGE_KEY = re.compile(r"^images/[0-9a-f]{40}\.[a-z0-9]{1,16}$")
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
T = TypeVar("T")


class SharedIndex(Protocol):
    """What the PostgreSQL log needs of a vector index it keeps in step with itself (the pgvector
    ``recsys.stores.pgvector_index.PgVectorIndex``): its rows change on the log's own transaction."""

    applied_key: str

    def is_live_in(self, cur: psycopg.Cursor, item_id: str) -> bool: ...

    def apply_operations(self, cur: psycopg.Cursor, operations: list[dict]) -> int: ...


class IndexOutOfStep(RuntimeError):
    """A shared index cannot apply operations written before this one (e.g. vectors of another
    dimension in the log); nothing was written."""


class Rejected(ValueError):
    """A write the database refused (a constraint); nothing was written. ``table``: the refusing table."""

    def __init__(self, message: str, table: str | None = None):
        super().__init__(message)
        self.table = table


class DuplicateItem(ValueError):
    """``add(..., index=...)``: the id is live in the shared index already; nothing was written."""


class ImageNotFound(FileNotFoundError):
    """``read_image``: no image under this key in this log (or the key is not one this log makes)."""


@runtime_checkable
class ItemLog(Protocol):
    """Durable, ordered item changes shared by every reader of one store (see the module docstring)."""

    def add(self, item: dict, vector: np.ndarray, text_vector: np.ndarray | None, *, image: bytes | None = None,
            index: SharedIndex | None = None) -> int:
        """Append an add of ``item`` (a JSON-able dict with ``item_id``); the position after it. ``image``:
        its bytes, stored under ``item["image"]`` (an :func:`image_key`) with the add. ``index``: a shared
        vector index table (PostgreSQL only) that gets the item's row in the same transaction; a live id
        there is a ValueError and nothing is written."""

    def delete(self, item_id: str, *, index: SharedIndex | None = None) -> int:
        """Append a delete of ``item_id``; the position after it. ``index`` as for :meth:`add`."""

    def size(self) -> int:
        """The position after the last committed operation (``read_since`` of it returns nothing)."""

    def read_since(self, position: int) -> tuple[list[dict], int]:
        """Operations committed after ``position``, in commit order, and the position after them."""

    def save_image(self, item_id: str, data: bytes, extension: str) -> str:
        """Store an image under a key derived from id and content (never the raw id); the key."""

    def read_image(self, key: str) -> bytes:
        """The bytes saved under ``key``; :class:`ImageNotFound` (a FileNotFoundError) when there are none."""

    def describe(self) -> dict:
        """``{"kind": ..., "location": ...}`` for status pages and logs (never a password)."""

    def close(self) -> None:
        """Release connections (a no-op for the file log)."""


def image_key(item_id: str, data: bytes, extension: str) -> str:
    """``images/<sha1(id, content)>.<ext>``: the same key in every log, safe as a file name."""
    if not _EXTENSION.match(extension or ""):
        raise ValueError(f"image extension {extension!r}: 1-16 letters or digits")
    digest = hashlib.sha1(item_id.encode("utf-8") + b"\0" + data).hexdigest()
    return f"images/{digest}.{extension.lower()}"


def _check_image_key(key: str) -> str:
    if not isinstance(key, str) or not _IMAGE_KEY.match(key):
        raise ImageNotFound(f"{key!r} is not an image key of an item log (images/<sha1>.<ext>)")
    return key


def encode_vector(vector: np.ndarray | None) -> str | None:
    if vector is None:
        return None
    return base64.b64encode(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).decode("ascii")


def decode_vector(text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- one folder on one node ------------------------------------------------------------------------
class FileItemLog:
    """JSON lines + image files under one folder; positions are byte offsets into ``items.jsonl``."""

    kind = "file"

    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "images").mkdir(exist_ok=True)
        self.log_path = self.root / LOG_NAME
        self.log_path.touch(exist_ok=True)
        self.remove_orphan_images()

    # -- writing -------------------------------------------------------------------------------
    def save_image(self, item_id: str, data: bytes, extension: str) -> str:
        """Store an uploaded image under a name derived from id and content (never the raw id)."""
        key = image_key(item_id, data, extension)
        path = self.root / key
        if not path.exists():
            _write_atomic(path, data)
        return key

    def append(self, operation: dict) -> int:
        """Append one operation durably; returns the log size after it."""
        line = (json.dumps({**operation, "ts": time.time()}, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and not self._ends_with_newline(size):
                os.write(fd, b"\n")  # isolate a torn line left by a crash
            os.write(fd, line)
            os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _ends_with_newline(self, size: int) -> bool:
        with open(self.log_path, "rb") as handle:
            handle.seek(size - 1)
            return handle.read(1) == b"\n"

    def add(self, item: dict, vector: np.ndarray, text_vector: np.ndarray | None, *, image: bytes | None = None,
            index: SharedIndex | None = None) -> int:
        _no_shared_index(index)
        if image is not None:  # the image first: a crash before the line leaves an orphan, removed at a later open
            path = self.root / _check_image_key(item.get("image"))
            if path.exists():
                os.utime(path)  # young again: an orphan clean-up running now must not take it
            else:
                _write_atomic(path, image)
        return self.append({"op": "add", "item": item, "vector": encode_vector(vector),
                            "text_vector": encode_vector(text_vector)})

    def delete(self, item_id: str, *, index: SharedIndex | None = None) -> int:
        _no_shared_index(index)
        return self.append({"op": "delete", "item_id": item_id})

    def remove_orphan_images(self, min_age_s: float = ORPHAN_MIN_AGE_S) -> list[str]:
        """Delete images no add in the log names that are older than ``min_age_s`` (younger ones may
        belong to an add being written right now); the keys removed. Run at every open, so a crash
        between an image and its line leaves no file behind for long."""
        images = self.root / "images"
        named = {operation["item"].get("image") for operation in self.read_since(0)[0]
                 if operation.get("op") == "add" and isinstance(operation.get("item"), dict)}
        cutoff, removed = time.time() - min_age_s, []
        for path in images.iterdir():
            key = f"images/{path.name}"
            if path.is_file() and key not in named and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed.append(key)
        if removed:
            log.warning("%s: removed %d image(s) that no item names (a crash between image and log line)",
                        self.root, len(removed))
        return removed

    # -- reading -------------------------------------------------------------------------------
    def size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def read_since(self, offset: int) -> tuple[list[dict], int]:
        """Complete operations after byte ``offset`` and the offset after the last complete line."""
        if self.size() <= offset:
            return [], offset
        with open(self.log_path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return [], offset
        operations = []
        for raw in chunk[:end].split(b"\n"):
            if not raw.strip():
                continue
            try:
                operation = json.loads(raw)
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line near byte %d", self.log_path, offset)
                continue
            for key in ("vector", "text_vector"):
                if key in operation:
                    operation[key] = decode_vector(operation[key])
            operations.append(operation)
        return operations, offset + end + 1

    def image_path(self, relative: str) -> Path:
        return self.root / relative

    def read_image(self, key: str) -> bytes:
        path = self.root / _check_image_key(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ImageNotFound(f"no image {key!r} in {self.root}") from None

    def describe(self) -> dict:
        return {"kind": self.kind, "location": str(self.root.resolve())}

    def close(self) -> None:
        pass

    def __enter__(self) -> FileItemLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


PRODUCT_COLUMNS = ("item_id", "title", "category", "category_path", "attributes", "styles", "price", "image",
                   "source", "is_new")  # what an item record fills (product_row), in this order
_PRODUCT_SQL = {  # the pieces every products-table write is built from
    "columns": sql.SQL(", ").join(map(sql.Identifier, PRODUCT_COLUMNS)),
    "values": sql.SQL(", ").join([sql.Placeholder()] * len(PRODUCT_COLUMNS)),
    "updates": sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in PRODUCT_COLUMNS[1:]),
}


def product_row(item: dict) -> tuple:
    """An item record's products-table values, in ``PRODUCT_COLUMNS`` order."""
    attributes = item.get("attributes") or {}
    return (str(item["item_id"]), item.get("title"), item.get("category"), list(item.get("category_path") or []),
            Jsonb({k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in attributes.items()}),
            list(item.get("styles") or []), item.get("price"), item.get("image"), item.get("source") or "api",
            bool(item.get("new")))


PGVECTOR_NEEDS_POSTGRES_LOG = ("index.backend pgvector needs item_log.kind: postgres (the same database): the shared "
                               "index's rows change in the item log's transactions, which the file log cannot hold")


def _no_shared_index(index: SharedIndex | None) -> None:
    if index is not None:
        raise ConfigError(PGVECTOR_NEEDS_POSTGRES_LOG)


# -- PostgreSQL: every replica, every node ----------------------------------------------------------
def _lock_key(text: str) -> int:
    """A signed 64-bit advisory-lock key from a name (sha1: stable across processes and nodes)."""
    return int.from_bytes(hashlib.sha1(f"fashionrec.item_log:{text}".encode()).digest()[:8], "big", signed=True)


def _vector_bytes(vector: np.ndarray | None) -> bytes | None:
    if vector is None:
        return None
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()  # little-endian: the same bytes on every node


def _vector_of(data: bytes | memoryview | None) -> np.ndarray | None:
    if data is None:
        return None
    return np.frombuffer(bytes(data), dtype="<f4").astype(np.float32)


def safe_location(dsn: str) -> str:
    """host:port/dbname as user, from a DSN (key=value or URI), without the password."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable dsn>"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    return f"{parts.get('user') or '?'}@{host}:{port}/{parts.get('dbname') or '?'}"


class PostgresItemLog:
    """The item log in PostgreSQL: tables ``<table>`` (operations) and ``<table>_<part>`` for each of
    ``TABLE_PARTS`` (images, applied positions, products, imported catalog runs), created when missing
    (a role without CREATE needs an administrator to create them first). Holds one connection
    (reconnected after a server restart), thread-safe."""

    kind = "postgres"
    lock_timeout = "30s"        # an append waits this long for the append lock before failing
    connect_timeout_s = 10      # when the DSN sets none

    def __init__(self, dsn: str, table: str = "item_log"):
        if not _TABLE_NAME.match(table):
            raise ConfigError(f"item log table {table!r}: must match {_TABLE_NAME.pattern} (it becomes a table name)")
        self.dsn, self.table = dsn, table
        self._ops = sql.Identifier(table)
        self._images = sql.Identifier(f"{table}_images")
        self._applied = sql.Identifier(f"{table}_applied")
        self._products = sql.Identifier(f"{table}_products")
        self._catalog_runs = sql.Identifier(f"{table}_catalog_runs")
        self._catalog_lock_key = _lock_key(f"{table}:catalog")
        self.append_lock_key = _lock_key(f"{table}:append")
        self._schema_lock_key = _lock_key(f"{table}:schema")
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._run(self._create_tables, retry=True)

    # -- connection ------------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        extra = {} if "connect_timeout" in conninfo_to_dict(self.dsn) else {"connect_timeout": self.connect_timeout_s}
        try:
            return psycopg.connect(self.dsn, autocommit=True, **extra)
        except psycopg.OperationalError as exc:
            raise psycopg.OperationalError(f"item log: cannot connect to PostgreSQL at {safe_location(self.dsn)}: "
                                           f"{' '.join(str(exc).split())}") from None

    def _run(self, work: Callable[[psycopg.Connection], T], retry: bool) -> T:
        """``work(conn)`` under the lock. A broken connection (server restart) is dropped; reads are
        retried once on a new one. Writes are not: the commit may have happened before the break, and a
        replayed add could undo another replica's later delete."""
        with self._lock:
            for attempt in range(2 if retry else 1):
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self._connect()
                try:
                    return work(self._conn)
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    if not (self._conn.closed or self._conn.broken):
                        raise  # a statement error (lock timeout, ...), the connection is fine
                    self._conn.close()
                    self._conn = None
                    if attempt or not retry:
                        raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PostgresItemLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create_tables(self, conn: psycopg.Connection) -> None:
        names = [self.table, *(f"{self.table}_{part}" for part in TABLE_PARTS)]
        exists = conn.execute("SELECT " + " AND ".join(["to_regclass(%s) IS NOT NULL"] * len(names)),
                              names).fetchone()[0]
        if exists:
            return  # also lets a role without CREATE use tables an administrator made
        # CREATE TABLE IF NOT EXISTS is not safe against itself: two sessions that both find the name
        # free both create, and one fails on pg_type/pg_class's unique index. The advisory lock makes
        # replicas starting at once create one after the other (the second finds the tables).
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._schema_lock_key,))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {ops} ("
                "position bigserial PRIMARY KEY, "
                "op text NOT NULL CHECK (op IN ('add', 'delete')), "
                "item_id text NOT NULL, "
                "item json, "
                "vector bytea, "
                "text_vector bytea, "
                "created_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                "CHECK (op = 'delete' OR (item IS NOT NULL AND vector IS NOT NULL)))").format(ops=self._ops))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {images} (key text PRIMARY KEY, data bytea NOT NULL, "
                "created_at timestamptz NOT NULL DEFAULT clock_timestamp())").format(images=self._images))
            # the products as they stand (the log is their history): catalog rows imported per items run,
            # API rows written in the same transaction as their log row; the constraints repeat the API's
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {products} ("
                "item_id text PRIMARY KEY CHECK (item_id <> ''), "
                "title text, category text, "
                "category_path text[] NOT NULL DEFAULT '{{}}', "
                "attributes jsonb NOT NULL DEFAULT '{{}}' CHECK (jsonb_typeof(attributes) = 'object'), "
                "styles text[] NOT NULL DEFAULT '{{}}', "
                "price double precision CHECK (price IS NULL OR (price >= 0 AND price < 'Infinity')), "
                "image text, "
                "source text NOT NULL CHECK (source IN ('catalog', 'api')), "
                "is_new boolean NOT NULL DEFAULT false, "
                "items_run text, "
                "position bigint REFERENCES {ops} (position), "
                "updated_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                "deleted_at timestamptz, "
                "CHECK (source = 'catalog' OR position IS NOT NULL))").format(
                products=self._products, ops=self._ops))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {runs} (items_run text PRIMARY KEY, items integer NOT NULL CHECK (items >= 0), "
                "imported_at timestamptz NOT NULL DEFAULT clock_timestamp())").format(runs=self._catalog_runs))
            # how far each shared vector index table has applied this log (SharedIndex.applied_key)
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {applied} (index_key text PRIMARY KEY, "
                "position bigint NOT NULL CHECK (position >= 0))").format(applied=self._applied))

    # -- writing ---------------------------------------------------------------------------------
    def _append(self, op: str, item_id: str, item: dict | None, vector: bytes | None, text_vector: bytes | None,
                image: bytes | None = None, index: SharedIndex | None = None) -> int:
        def work(conn: psycopg.Connection) -> int:
            # Why the lock: a bigserial value is taken at INSERT, but the row becomes visible at COMMIT.
            # Two unserialised writers can take 7 and 8 and commit 8 first; a reader that reads then
            # continues after 8 and never sees 7. Holding a transaction-scoped advisory lock from before
            # the INSERT until the COMMIT (PostgreSQL releases it only after the commit is visible)
            # makes appends take positions and commit one at a time, so position order is commit
            # order and every row below a visible position is already visible. Readers take no lock.
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (self.lock_timeout,))
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.append_lock_key,))
                if index is not None:
                    try:  # writes of replicas serving another table first
                        self._catch_up_in(conn, index)
                    except ValueError as exc:  # not this request's fault: a server-side error, not a 4xx
                        raise IndexOutOfStep(f"index {index.applied_key} cannot apply earlier item-log operations: "
                                             f"{exc}") from exc
                    if op == "add" and index.is_live_in(conn.cursor(), item_id):
                        raise DuplicateItem(f"item {item_id!r} is already in index {index.applied_key}; delete it "
                                         "first to replace it (nothing was written)")
                if image is not None:
                    conn.execute(sql.SQL("INSERT INTO {images} (key, data) VALUES (%s, %s) ON CONFLICT (key) "
                                         "DO NOTHING").format(images=self._images), (item["image"], image))
                position = conn.execute(sql.SQL(
                    "INSERT INTO {ops} (op, item_id, item, vector, text_vector) VALUES (%s, %s, %s, %s, %s) "
                    "RETURNING position").format(ops=self._ops),
                    (op, item_id, None if item is None else Json(item), vector, text_vector)).fetchone()[0]
                self._write_product(conn, op, item_id, item, position)
                if index is not None:
                    self._catch_up_in(conn, index)  # this operation's index row, in this transaction
                return position

        try:
            return self._run(work, retry=False)
        except (psycopg.errors.IntegrityError, psycopg.DataError) as exc:  # nothing was committed
            raise Rejected(f"item log {self.table}: {op} of {item_id!r} rejected by the database "
                           f"({exc.diag.message_primary}); nothing was written", exc.diag.table_name) from exc

    def add(self, item: dict, vector: np.ndarray, text_vector: np.ndarray | None, *, image: bytes | None = None,
            index: SharedIndex | None = None) -> int:
        if not isinstance(item, dict) or not item.get("item_id"):
            raise ValueError("item log add: item must be a dict with a non-empty item_id")
        if image is not None:
            _check_image_key(item.get("image"))
        return self._append("add", str(item["item_id"]), item, _vector_bytes(vector), _vector_bytes(text_vector),
                            image=None if image is None else bytes(image), index=index)

    def delete(self, item_id: str, *, index: SharedIndex | None = None) -> int:
        return self._append("delete", str(item_id), None, None, None, index=index)

    def _write_product(self, conn: psycopg.Connection, op: str, item_id: str, item: dict | None,
                       position: int) -> None:
        """The products table after one operation, in its transaction: an add upserts the row (a deleted
        id comes back), a delete stamps ``deleted_at``."""
        if op == "delete":
            conn.execute(sql.SQL("UPDATE {products} SET deleted_at = clock_timestamp(), updated_at = clock_timestamp(), "
                                 "position = %s WHERE item_id = %s AND deleted_at IS NULL").format(
                products=self._products), (position, item_id))
            return
        conn.execute(sql.SQL(
            "INSERT INTO {products} ({columns}, position) VALUES ({values}, %s) ON CONFLICT (item_id) DO UPDATE "
            "SET {updates}, items_run = NULL, position = EXCLUDED.position, updated_at = clock_timestamp(), "
            "deleted_at = NULL").format(products=self._products, columns=_PRODUCT_SQL["columns"],
                                        values=_PRODUCT_SQL["values"], updates=_PRODUCT_SQL["updates"]),
            (*product_row(item), position))

    def import_catalog(self, items: list[dict], items_run: str) -> int:
        """Catalog products (``serve_app.catalog.item_record`` dicts) of one items run into the products
        table, once per run (recorded in ``<table>_catalog_runs``) and in one transaction: new ids are
        inserted, catalog rows of earlier runs take this run's values, rows the API wrote or deleted
        (they name a log position) are left alone. Its own lock, not the append lock: the API's writes
        go on meanwhile. The rows inserted or updated (0: the run was imported already)."""
        def work(conn: psycopg.Connection) -> int:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (self.lock_timeout,))
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._catalog_lock_key,))
                if conn.execute(sql.SQL("SELECT exists(SELECT 1 FROM {runs} WHERE items_run = %s)").format(
                        runs=self._catalog_runs), (items_run,)).fetchone()[0]:
                    return 0
                conn.execute(sql.SQL("CREATE TEMP TABLE incoming (LIKE {products} INCLUDING DEFAULTS) ON COMMIT DROP")
                             .format(products=self._products))
                with conn.cursor().copy(sql.SQL("COPY incoming ({columns}, items_run) FROM STDIN").format(
                        columns=_PRODUCT_SQL["columns"])) as copy:
                    for item in items:
                        copy.write_row((*product_row({**item, "source": "catalog"}), items_run))
                changed = conn.execute(sql.SQL(
                    "INSERT INTO {products} AS p ({columns}, items_run) SELECT {columns}, items_run FROM incoming "
                    "ON CONFLICT (item_id) DO UPDATE SET {updates}, items_run = EXCLUDED.items_run, "
                    "updated_at = clock_timestamp() WHERE p.position IS NULL").format(
                    products=self._products, columns=_PRODUCT_SQL["columns"],
                    updates=_PRODUCT_SQL["updates"])).rowcount
                conn.execute(sql.SQL("INSERT INTO {runs} (items_run, items) VALUES (%s, %s)").format(
                    runs=self._catalog_runs), (items_run, len(items)))
                return changed

        try:
            return self._run(work, retry=False)
        except (psycopg.errors.IntegrityError, psycopg.DataError) as exc:
            raise ValueError(f"item log {self.table}: catalog {items_run} rejected by the products table "
                             f"({exc.diag.message_primary}); nothing was imported") from exc

    def products(self, live_only: bool = True) -> dict[str, dict]:
        """The products table: item_id -> its row (``deleted_at`` None while live)."""
        def work(conn: psycopg.Connection) -> dict[str, dict]:
            cur = conn.cursor(row_factory=psycopg.rows.dict_row)
            rows = cur.execute(sql.SQL("SELECT * FROM {products}{where}").format(
                products=self._products, where=sql.SQL(" WHERE deleted_at IS NULL" if live_only else ""))).fetchall()
            return {row["item_id"]: row for row in rows}

        return self._run(work, retry=True)

    def catch_up(self, index: SharedIndex) -> int:
        """Apply the operations ``index`` has not seen yet (a table built after items were added, or one
        that replicas serving another table wrote past) under the append lock; how many were applied."""
        def work(conn: psycopg.Connection) -> int:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (self.lock_timeout,))
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.append_lock_key,))
                return self._catch_up_in(conn, index)

        return self._run(work, retry=False)

    def _catch_up_in(self, conn: psycopg.Connection, index: SharedIndex) -> int:
        """Inside the caller's transaction (holding the append lock): operations after the index's
        applied position, applied to it, and the position moved past them."""
        key = index.applied_key
        conn.execute(sql.SQL("INSERT INTO {applied} (index_key, position) VALUES (%s, 0) ON CONFLICT DO NOTHING")
                     .format(applied=self._applied), (key,))
        done = conn.execute(sql.SQL("SELECT position FROM {applied} WHERE index_key = %s").format(
            applied=self._applied), (key,)).fetchone()[0]
        operations, position = self._operations_since(conn, done)
        if operations:
            index.apply_operations(conn.cursor(), operations)
            conn.execute(sql.SQL("UPDATE {applied} SET position = %s WHERE index_key = %s").format(
                applied=self._applied), (position, key))
        return len(operations)

    def applied_position(self, index: SharedIndex) -> int:
        """How far ``index`` has applied this log (0: not at all)."""
        row = self._run(lambda conn: conn.execute(sql.SQL("SELECT position FROM {applied} WHERE index_key = %s")
                                                  .format(applied=self._applied), (index.applied_key,)).fetchone(),
                        retry=True)
        return 0 if row is None else int(row[0])

    def save_image(self, item_id: str, data: bytes, extension: str) -> str:
        key = image_key(item_id, data, extension)
        self._run(lambda conn: conn.execute(sql.SQL("INSERT INTO {images} (key, data) VALUES (%s, %s) "
                                                    "ON CONFLICT (key) DO NOTHING").format(images=self._images),
                                            (key, bytes(data))), retry=True)  # idempotent: safe to retry
        return key

    # -- reading ---------------------------------------------------------------------------------
    def size(self) -> int:
        return self._run(lambda conn: conn.execute(sql.SQL("SELECT coalesce(max(position), 0) FROM {ops}").format(
            ops=self._ops)).fetchone()[0], retry=True)

    def read_since(self, position: int) -> tuple[list[dict], int]:
        return self._run(lambda conn: self._operations_since(conn, position), retry=True)

    def _operations_since(self, conn: psycopg.Connection, position: int) -> tuple[list[dict], int]:
        rows = conn.execute(sql.SQL(
            "SELECT position, op, item_id, item, vector, text_vector, extract(epoch FROM created_at) "
            "FROM {ops} WHERE position > %s ORDER BY position").format(ops=self._ops), (int(position),)).fetchall()
        operations = []
        for _, op, item_id, item, vector, text_vector, ts in rows:
            if op == "add":
                operations.append({"op": "add", "item": item, "vector": _vector_of(vector),
                                   "text_vector": _vector_of(text_vector), "ts": float(ts)})
            else:
                operations.append({"op": "delete", "item_id": item_id, "ts": float(ts)})
        return operations, (rows[-1][0] if rows else int(position))

    def read_image(self, key: str) -> bytes:
        _check_image_key(key)
        row = self._run(lambda conn: conn.execute(sql.SQL("SELECT data FROM {images} WHERE key = %s").format(
            images=self._images), (key,)).fetchone(), retry=True)
        if row is None:
            raise ImageNotFound(f"no image {key!r} in {self.table}_images at {safe_location(self.dsn)}")
        return bytes(row[0])

    def describe(self) -> dict:
        return {"kind": self.kind, "location": safe_location(self.dsn), "table": self.table}


# -- configuration -----------------------------------------------------------------------------------
@dataclass
class ItemLogConfig:
    kind: str = "file"                  # "file": one folder, one node; "postgres": shared by every replica/node
    path: str | None = None             # file: the folder (None: the caller's default, e.g. the Serve state_dir)
    dsn_env: str = DEFAULT_DSN_ENV      # postgres: NAME of the environment variable that holds the DSN
    table: str = "item_log"             # postgres: operations table (images in <table>_images)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"item_log.kind: expected one of {list(KINDS)}, got {self.kind!r}")
        if not _ENV_NAME.match(self.dsn_env or ""):
            # never echo the value: someone may have pasted the DSN itself (with its password) here
            raise ConfigError("item_log.dsn_env: must be the name of an environment variable (letters, digits, "
                              "'_'), not a DSN; put the DSN in that variable")
        if not _TABLE_NAME.match(self.table):
            raise ConfigError(f"item_log.table: {self.table!r} must match {_TABLE_NAME.pattern}")


def open_item_log(config: ItemLogConfig, default_path: str | Path | None = None) -> ItemLog:
    """The item log ``config`` describes. ``default_path``: the file log's folder when ``config.path``
    is None. For PostgreSQL the DSN is read from the environment variable ``config.dsn_env``."""
    if config.kind == "file":
        path = config.path if config.path is not None else default_path
        if path is None:
            raise ConfigError("item_log.path: the file item log needs a folder (item_log.path or a default)")
        return FileItemLog(path)
    dsn = os.environ.get(config.dsn_env, "").strip()
    if not dsn:
        raise ConfigError(f"item_log.kind is postgres but the environment variable {config.dsn_env} is unset or "
                          f"empty: set it to the PostgreSQL DSN (e.g. `export {config.dsn_env}=$(python -m "
                          "recsys.stores.postgres dsn)` on the head node, and pass it to every Serve replica)")
    return PostgresItemLog(dsn, config.table)

