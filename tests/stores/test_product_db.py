"""The product database: the PostgreSQL item log and a shared pgvector index table written in ONE
transaction (``PostgresItemLog.add/delete(..., index=...)``), kept in step across tables
(``catch_up``), rejecting bad input whole, immune to SQL injection, and losing no acknowledged item
when the server is killed hard under 16 concurrent writers. Real PostgreSQL + pgvector throughout."""
from __future__ import annotations

import os
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest

from recsys.config import ConfigError
from recsys.index import IndexConfig, SearchFilter
from recsys.stores.item_log import DuplicateItem, FileItemLog, PostgresItemLog, image_key
from recsys.stores.pgvector_index import PgVectorIndex
from recsys.stores.postgres import PostgresConfig, ensure_server, stop_server
from tests.stores.conftest import free_port, kill_hard

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

DIM = 16
INJECTIONS = ["x'); DROP TABLE {index}; --", "' OR '1'='1", "a\"; DELETE FROM vector_index_meta; --",
              "$$; TRUNCATE {log}; $$", "\\'; SELECT pg_sleep(5); --"]


def unit(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal(DIM))[0]


def build_index(dsn: str, name: str, n: int = 50) -> PgVectorIndex:
    vectors = unit(np.random.default_rng(0).standard_normal((n, DIM)))
    return PgVectorIndex.build(vectors, [f"cat-{i}" for i in range(n)], IndexConfig(kind="exact"), dsn=dsn, name=name,
                               replace=True)


def add(log: PostgresItemLog, index, item_id: str, vector: np.ndarray, data: bytes = b"jpeg bytes") -> int:
    item = {"item_id": item_id, "title": f"title of {item_id}", "image": image_key(item_id, data, "jpg")}
    return log.add(item, vector, None, image=data, index=index)


def table_rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def live_in_index(dsn: str, table: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(f'SELECT item_id FROM "{table}" WHERE NOT removed')}


def live_in_log(log: PostgresItemLog) -> dict[str, dict]:
    state: dict[str, dict] = {}
    for operation in log.read_since(0)[0]:
        if operation["op"] == "add":
            state[operation["item"]["item_id"]] = operation["item"]
        else:
            state.pop(operation["item_id"], None)
    return state


@pytest.fixture
def db(pg_dsn):
    name = uuid.uuid4().hex[:10]
    index = build_index(pg_dsn, f"idx_{name}")
    log = PostgresItemLog(pg_dsn, f"items_{name}")
    yield pg_dsn, log, index
    log.close()
    index.close()


def test_an_add_writes_log_image_and_index_row_together(db):
    dsn, log, index = db
    vector = random_unit(1)
    position = add(log, index, "new-1", vector, b"picture")
    # the index row is searchable at once, by any connection, with the log row and the image beside it
    hits = index.search(vector, 1)
    assert hits.item_ids[0, 0] == "new-1" and hits.scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert log.read_since(position - 1)[0][0]["item"]["item_id"] == "new-1"
    assert log.read_image(image_key("new-1", b"picture", "jpg")) == b"picture"
    assert log.applied_position(index) == position
    # the stored vector is the float32 one sent (text form, 9 digits: exact)
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(f"SELECT embedding::text FROM {index.name} WHERE item_id = 'new-1'").fetchone()[0]
    assert np.array_equal(np.array(stored.strip("[]").split(","), dtype=np.float32), vector)
    # "new products only" is a WHERE on the same query
    only = index.search(random_unit(2), 5, filter=SearchFilter(item_ids=["new-1", "cat-3"]))
    assert set(only.item_ids[0, :2]) == {"new-1", "cat-3"} and only.item_ids[0, 2] == ""

    log.delete("new-1", index=index)
    log.delete("cat-3", index=index)                 # a catalog item goes from the shared table too
    assert "new-1" not in index and "cat-3" not in index and len(index) == 49
    assert log.applied_position(index) == log.size()


@pytest.mark.parametrize("problem", ["dimension", "nan", "not unit", "duplicate id", "catalog id"])
def test_bad_input_is_rejected_whole(db, problem):
    dsn, log, index = db
    add(log, index, "kept", random_unit(3))
    before = (log.size(), table_rows(dsn, index.name), table_rows(dsn, f"{log.table}_images"))
    vector, item_id, error = random_unit(4), "bad-1", ValueError
    if problem == "dimension":
        vector = unit(np.ones(DIM + 3))[0]
    elif problem == "nan":
        vector = vector.copy()
        vector[2] = np.nan
    elif problem == "not unit":
        vector = vector * 3
    elif problem == "duplicate id":
        item_id, error = "kept", DuplicateItem
    else:
        item_id, error = "cat-7", DuplicateItem
    with pytest.raises(error) as caught:
        add(log, index, item_id, vector, b"other picture")
    assert item_id in str(caught.value) or problem in ("dimension", "nan", "not unit")
    assert "nothing was written" in str(caught.value) or problem in ("dimension", "nan", "not unit")
    assert (log.size(), table_rows(dsn, index.name), table_rows(dsn, f"{log.table}_images")) == before
    assert "kept" in index and log.applied_position(index) == log.size()


def test_a_table_built_later_or_served_elsewhere_catches_up(db):
    dsn, log, first = db
    add(log, first, "a", random_unit(5))
    add(log, first, "b", random_unit(6))
    log.delete("a", index=first)
    # another version's table, built after those writes: catch_up applies the whole log to it once
    second = build_index(dsn, f"{first.name}_v2")
    try:
        assert log.catch_up(second) == 3 and log.catch_up(second) == 0
        assert "b" in second and "a" not in second and len(second) == 51
        # replicas serving two tables (a version move): each write applies what its table missed first,
        # and a reader's sync catches its table up (Catalog.sync)
        add(log, second, "c", random_unit(7))
        assert "c" in second and "c" not in first
        add(log, first, "d", random_unit(8))
        assert {"b", "c", "d"} <= live_in_index(dsn, first.name) and "d" not in second
        assert log.catch_up(second) == 1 and live_in_index(dsn, first.name) == live_in_index(dsn, second.name)
        # a table rebuilt under the same name is a new table: the log is applied to it from the start
        rebuilt = build_index(dsn, second.name)
        assert rebuilt.applied_key != second.applied_key
        assert log.catch_up(rebuilt) == 5 and live_in_index(dsn, rebuilt.name) == live_in_index(dsn, first.name)
        rebuilt.close()
    finally:
        second.close()


def test_sql_injection_through_ids_changes_nothing(db):
    dsn, log, index = db
    for n, raw in enumerate(INJECTIONS):
        item_id = raw.format(index=index.name, log=log.table)
        add(log, index, item_id, random_unit(10 + n))
        assert item_id in index and index.search(random_unit(10 + n), 1).item_ids[0, 0] == item_id
        hits = index.search(random_unit(10 + n), 3, filter=SearchFilter(item_ids=[item_id, "' OR 1=1 --"]))
        assert list(hits.item_ids[0]) == [item_id, "", ""]
        log.delete(item_id, index=index)
    assert len(index) == 50 and table_rows(dsn, index.name) == 50 + len(INJECTIONS)
    assert log.size() == 2 * len(INJECTIONS) and live_in_log(log) == {}


def test_a_file_log_refuses_a_shared_index_and_cleans_orphan_images(tmp_path, db):
    _, _, index = db
    log = FileItemLog(tmp_path / "state")
    with pytest.raises(ConfigError, match="item_log.kind: postgres"):
        log.add({"item_id": "x"}, random_unit(1), None, index=index)
    named = image_key("kept", b"a", "jpg")
    log.add({"item_id": "kept", "image": named}, random_unit(1), None, image=b"a")
    orphan = log.root / image_key("crashed", b"b", "jpg")   # a crash after the image, before the line
    orphan.write_bytes(b"b")
    young = log.root / image_key("in-flight", b"c", "jpg")   # an add being written right now
    young.write_bytes(b"c")
    old = time.time() - 2 * 3600
    os.utime(orphan, (old, old))
    FileItemLog(tmp_path / "state")                         # any later open cleans up
    assert not orphan.exists() and young.exists() and (log.root / named).exists()


@pytest.mark.timeout(300)
def test_sigkill_under_16_writers_loses_no_acknowledged_item(make_state_dir):
    """16 writers (one connection each, as 16 replicas) add items with their index rows and images; the
    postmaster is SIGKILLed mid-stream. After a restart every acknowledged item is in the log, in the
    index and has its image, and log and index agree item for item (a commit that raced the kill may
    be there unacknowledged; nothing is half there: log, index, products table and images agree)."""
    cfg = PostgresConfig(data_dir=str(make_state_dir()), port=free_port())
    dsn = ensure_server(cfg)
    try:
        index = build_index(dsn, "idx_crash")
        PostgresItemLog(dsn, "items_crash").close()             # tables exist before the race starts
        acknowledged: list[str] = []
        failures: list[str] = []
        ack_lock = threading.Lock()
        killed = threading.Event()

        def writer(w: int) -> None:
            log = PostgresItemLog(dsn, "items_crash")
            try:
                for n in range(10_000):
                    item_id = f"w{w:02d}-{n:05d}"
                    try:
                        add(log, index, item_id, random_unit(w * 100_000 + n), item_id.encode())
                    except Exception as exc:  # the server died under this call: not acknowledged
                        failures.append(type(exc).__name__)
                        return
                    with ack_lock:
                        acknowledged.append(item_id)
                    if killed.is_set():
                        return
            finally:
                log.close()

        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(16)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acknowledged) >= 300, "writers too slow to reach the kill point"
        kill_hard(cfg)
        killed.set()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads) and failures, "no writer saw the kill"
        acked = set(acknowledged)

        started = time.monotonic()
        assert ensure_server(cfg) == dsn                          # crash recovery
        recovery_s = time.monotonic() - started
        log = PostgresItemLog(dsn, "items_crash")
        try:
            in_log = live_in_log(log)
            in_index = live_in_index(dsn, "idx_crash") - {f"cat-{i}" for i in range(50)}
            assert acked <= set(in_log), f"acknowledged but lost: {sorted(acked - set(in_log))[:5]}"
            assert set(in_log) == in_index == set(log.products())  # log, index and products never disagree
            for item_id in sorted(acked)[:: max(1, len(acked) // 50)]:
                assert log.read_image(in_log[item_id]["image"]) == item_id.encode()
            with psycopg.connect(dsn) as conn:
                images = conn.execute("SELECT count(*) FROM items_crash_images").fetchone()[0]
            assert images == len(in_log)                           # no image without its row
            print(f"sigkill: {len(acked)} acknowledged, {len(in_log) - len(acked)} committed unacknowledged, "
                  f"{len(failures)} writers cut off; restart took {recovery_s:.1f} s")
        finally:
            log.close()
            index.close()
    finally:
        stop_server(cfg)


def test_products_table_tracks_the_log_and_refuses_bad_rows(db):
    dsn, log, index = db
    catalog = [{"item_id": f"cat-{i}", "title": f"t{i}", "category": "skirt", "category_path": ["bottom", "skirt"],
                "attributes": {"color": ["red"]}, "styles": ["street"], "price": 10.0 + i, "image": f"/img/{i}.jpg",
                "new": False} for i in range(3)]
    assert log.import_catalog(catalog, items_run="run-1") == 3
    assert log.import_catalog(catalog, items_run="run-1") == 0          # once per items run
    add(log, index, "api-1", random_unit(20))
    products = log.products()
    assert products["cat-1"]["source"] == "catalog" and products["cat-1"]["category_path"] == ["bottom", "skirt"]
    assert products["cat-1"]["attributes"] == {"color": ["red"]} and products["cat-1"]["price"] == 11.0
    assert products["api-1"]["source"] == "api" and products["api-1"]["position"] == log.size()
    log.delete("cat-2", index=index)
    assert "cat-2" not in log.products() and log.products(live_only=False)["cat-2"]["deleted_at"] is not None
    # a later items run updates catalog rows but neither resurrects what the API deleted nor overwrites its rows
    renamed = [{**item, "title": "renamed"} for item in catalog] + [{**catalog[0], "item_id": "api-1"}]
    assert log.import_catalog(renamed, items_run="run-2") == 2
    products = log.products()
    assert products["cat-0"]["title"] == "renamed" and products["cat-0"]["items_run"] == "run-2"
    assert "cat-2" not in products and products["api-1"]["source"] == "api"

    before = (log.size(), table_rows(dsn, index.name), len(log.products(live_only=False)))
    for bad in ({"price": -1.0}, {"price": float("nan")}, {"source": "scraped"}):
        item = {"item_id": "bad-price", "image": image_key("bad-price", b"x", "jpg"), **bad}
        with pytest.raises(ValueError, match="nothing was written"):
            log.add(item, random_unit(21), None, image=b"x", index=index)
    assert (log.size(), table_rows(dsn, index.name), len(log.products(live_only=False))) == before
