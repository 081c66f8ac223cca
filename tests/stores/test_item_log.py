"""recsys.stores.item_log: the file and PostgreSQL item logs behave alike (round trip, replay, images), two
PostgreSQL logs see each other's changes, concurrent writer processes lose nothing and are read in position
order, concurrent table creation, the append lock, and the config/factory."""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest

from recsys.config import ConfigError
from recsys.stores.item_log import (DEFAULT_DSN_ENV, TABLE_PARTS, FileItemLog, ImageNotFound, ItemLog, ItemLogConfig,
                                    PostgresItemLog, open_item_log)

pytestmark = pytest.mark.timeout(120)

DIM = 8
KINDS = ["file", pytest.param("postgres", marks=pytest.mark.postgres)]


def fresh_table() -> str:
    return f"item_log_{uuid.uuid4().hex[:12]}"


def drop_tables(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}, " + ", ".join(f"{table}_{part}" for part in TABLE_PARTS))


@pytest.fixture
def pg_table(request):
    """A fresh table name in the session's embedded PostgreSQL, dropped afterwards."""
    dsn = request.getfixturevalue("pg_dsn")
    table = fresh_table()
    yield dsn, table
    drop_tables(dsn, table)


@pytest.fixture(params=KINDS)
def make_log(request, tmp_path):
    """``make_log()`` -> a new handle on ONE store (as another replica would open it)."""
    opened = []
    if request.param == "file":
        def make():
            opened.append(FileItemLog(tmp_path / "state"))
            return opened[-1]
    else:
        dsn, table = request.getfixturevalue("pg_table")

        def make():
            opened.append(PostgresItemLog(dsn, table))
            return opened[-1]
    yield make
    for item_log in opened:
        item_log.close()


def vector(seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def replay(state: dict, operations: list[dict]) -> dict:
    """What Catalog.sync does, in miniature: add sets, delete removes."""
    for operation in operations:
        if operation["op"] == "add":
            state[operation["item"]["item_id"]] = (operation["item"], operation["vector"], operation["text_vector"])
        else:
            state.pop(operation["item_id"], None)
    return state


def test_round_trip_with_vectors(make_log):
    item_log = make_log()
    assert isinstance(item_log, ItemLog)
    assert item_log.size() == 0 and item_log.read_since(0) == ([], 0)
    item = {"item_id": "a:1", "title": "블라우스 \u00e9", "attributes": {"color": ["레드"]}, "price": 12.5, "new": True}
    p1 = item_log.add(item, vector(1), None)
    p2 = item_log.delete("a:1")
    p3 = item_log.add({"item_id": "b"}, vector(2) * 3, vector(3, 4))
    assert 0 < p1 < p2 < p3 == item_log.size()
    operations, position = item_log.read_since(0)
    assert position == p3 and [o["op"] for o in operations] == ["add", "delete", "add"]
    first, deleted, last = operations
    assert first["item"] == item and first["text_vector"] is None
    assert first["vector"].dtype == np.float32 and np.array_equal(first["vector"], vector(1))
    assert deleted["item_id"] == "a:1"
    assert np.array_equal(last["vector"], vector(2) * 3) and np.array_equal(last["text_vector"], vector(3, 4))
    assert all(isinstance(o["ts"], float) for o in operations)
    # from a middle position: exactly the rest; from the end: nothing
    rest, end = item_log.read_since(p1)
    assert [o["op"] for o in rest] == ["delete", "add"] and end == p3
    assert item_log.read_since(p3) == ([], p3)


def test_replay_is_idempotent(make_log):
    item_log = make_log()
    item_log.add({"item_id": "x"}, vector(1), None)
    middle = item_log.add({"item_id": "y"}, vector(2), None)
    item_log.delete("x")
    item_log.add({"item_id": "x", "v": 2}, vector(3), None)
    item_log.delete("y")
    everything, _ = item_log.read_since(0)
    once = replay({}, everything)
    twice = replay(replay({}, everything), everything)
    prefix_twice = replay(replay({}, item_log.read_since(0)[0][:2]), everything)
    for state in (twice, prefix_twice):
        assert state.keys() == once.keys() == {"x"}
        assert state["x"][0] == {"item_id": "x", "v": 2} and np.array_equal(state["x"][1], vector(3))
    # a reader that started at `middle` and one that read everything agree on what changed after it
    assert replay(replay({}, everything[:2]), item_log.read_since(middle)[0]).keys() == {"x"}


def test_images_saved_and_read(make_log):
    item_log = make_log()
    data = bytes(range(256)) * 10
    key = item_log.save_image("x/../../etc", data, "JPG")
    assert key.startswith("images/") and key.endswith(".jpg") and ".." not in key
    assert item_log.save_image("x/../../etc", data, "JPG") == key  # same id + content: same key, saved once
    assert item_log.read_image(key) == data
    other = item_log.save_image("y", data, "png")
    assert other != key and item_log.read_image(other) == data
    with pytest.raises(ValueError, match="extension"):
        item_log.save_image("z", data, "../jpg")


def test_missing_image_is_a_clear_error(make_log):
    item_log = make_log()
    missing = "images/" + "0" * 40 + ".jpg"
    with pytest.raises(ImageNotFound, match="no image"):
        item_log.read_image(missing)
    with pytest.raises(FileNotFoundError):  # what callers that know nothing of item logs catch
        item_log.read_image(missing)
    for bad in ("../items.jsonl", "/etc/passwd", "images/../items.jsonl", ""):
        with pytest.raises(ImageNotFound, match="not an image key"):
            item_log.read_image(bad)


def test_two_handles_see_each_others_changes(make_log):
    first, second = make_log(), make_log()  # two replicas
    first.add({"item_id": "a"}, vector(1), None)
    key = second.save_image("b", b"png-bytes", "png")
    second.add({"item_id": "b", "image": key}, vector(2), None)
    operations, position = first.read_since(0)
    assert [o.get("item", {}).get("item_id") for o in operations] == ["a", "b"]
    assert first.read_image(key) == b"png-bytes"
    first.delete("a")
    later, end = second.read_since(position)
    assert later[0]["op"] == "delete" and later[0]["item_id"] == "a" and end == first.size() == second.size()


def test_describe_has_kind_and_location(make_log):
    info = make_log().describe()
    assert info["kind"] in ("file", "postgres") and info["location"]


# -- PostgreSQL only -----------------------------------------------------------------------------------
@pytest.mark.postgres
def test_describe_hides_the_password(pg_table):
    dsn, table = pg_table
    password = psycopg.conninfo.conninfo_to_dict(dsn)["password"]
    with PostgresItemLog(dsn, table) as item_log:
        info = item_log.describe()
    assert info["kind"] == "postgres" and info["table"] == table
    assert password not in repr(info) and "127.0.0.1" in info["location"]


def _append_worker(dsn: str, table: str, writer: int, count: int, start: multiprocessing.Event) -> None:
    item_log = PostgresItemLog(dsn, table)
    start.wait(30)
    for i in range(count):
        item_id = f"w{writer}-{i}"
        if i % 5 == 4:
            item_log.delete(f"w{writer}-{i - 1}")
        else:
            item_log.add({"item_id": item_id, "writer": writer, "i": i}, np.full(DIM, writer * 1000 + i, np.float32),
                         None)
    item_log.close()


def _sequence(operations: list[dict]) -> list[tuple]:
    return [("add", o["item"]["item_id"]) if o["op"] == "add" else ("delete", o["item_id"]) for o in operations]


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_concurrent_writer_processes_lose_nothing_and_are_read_in_order(pg_table):
    dsn, table = pg_table
    writers, count = 4, 40
    reader = PostgresItemLog(dsn, table)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [context.Process(target=_append_worker, args=(dsn, table, w, count, start), daemon=True)
                 for w in range(writers)]
    try:
        for process in processes:
            process.start()
        start.set()
        polled, position, deadline = [], 0, time.monotonic() + 150
        while time.monotonic() < deadline:
            done = not any(p.is_alive() for p in processes)  # checked BEFORE the read: then it is the last one
            operations, new_position = reader.read_since(position)
            assert new_position >= position
            polled.extend(operations)
            position = new_position
            if done:
                break
        assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
        everything, end = reader.read_since(0)
        assert len(everything) == writers * count and end == position == reader.size()
        # what the poller saw batch by batch is exactly the full log in position order: no gap, no repeat
        assert _sequence(polled) == _sequence(everything)
        # and each writer's own operations appear in the order it committed them
        for w in range(writers):
            mine = [key for key in _sequence(polled) if key[1].startswith(f"w{w}-")]
            expected = [("delete", f"w{w}-{i - 1}") if i % 5 == 4 else ("add", f"w{w}-{i}") for i in range(count)]
            assert mine == expected
        adds = [o for o in polled if o["op"] == "add"]
        assert all(np.array_equal(o["vector"], np.full(DIM, o["item"]["writer"] * 1000 + o["item"]["i"], np.float32))
                   for o in adds)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(10)
        reader.close()


@pytest.mark.postgres
def test_an_append_waits_for_the_append_lock(pg_table):
    """Appends serialise on the advisory lock until commit (what keeps position order = commit order)."""
    dsn, table = pg_table
    item_log = PostgresItemLog(dsn, table)
    finished = threading.Event()
    with psycopg.connect(dsn) as holder:  # a transaction holding the lock, as a slow concurrent append would
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (item_log.append_lock_key,))
        thread = threading.Thread(target=lambda: (item_log.add({"item_id": "late"}, vector(1), None), finished.set()),
                                  daemon=True)
        thread.start()
        assert not finished.wait(1.0), "the append did not wait for the lock"
        holder.commit()
    assert finished.wait(30)
    thread.join(10)
    assert _sequence(item_log.read_since(0)[0]) == [("add", "late")]
    item_log.close()


@pytest.mark.postgres
def test_tables_created_by_several_instances_at_once(pg_dsn):
    table = fresh_table()
    instances, errors = [], []
    barrier = threading.Barrier(6)

    def open_one():
        try:
            barrier.wait(30)
            instances.append(PostgresItemLog(pg_dsn, table))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_one, daemon=True) for _ in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors and len(instances) == 6
        instances[0].add({"item_id": "a"}, vector(1), None)
        assert all(len(other.read_since(0)[0]) == 1 for other in instances)
    finally:
        for instance in instances:
            instance.close()
        drop_tables(pg_dsn, table)


@pytest.mark.postgres
def test_reads_survive_a_dropped_connection(pg_table):
    dsn, table = pg_table
    with PostgresItemLog(dsn, table) as item_log:
        item_log.add({"item_id": "a"}, vector(1), None)
        pid = item_log._conn.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as admin:  # as a server restart would
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert len(item_log.read_since(0)[0]) == 1  # reconnected and retried
        item_log.delete("a")
        assert item_log.size() == 2


# -- config and factory --------------------------------------------------------------------------------
def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="kind"):
        ItemLogConfig(kind="redis")
    with pytest.raises(ConfigError, match="dsn_env") as caught:
        ItemLogConfig(kind="postgres", dsn_env="postgresql://u:secret@h/db")
    assert "secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="table"):
        ItemLogConfig(kind="postgres", table="x; DROP TABLE y")
    with pytest.raises(ConfigError, match="table"):
        PostgresItemLog("host=unused", table="Bad-Name")


def test_open_file_log(tmp_path):
    explicit = open_item_log(ItemLogConfig(kind="file", path=str(tmp_path / "a")), default_path=tmp_path / "b")
    assert isinstance(explicit, FileItemLog) and explicit.root == tmp_path / "a"
    default = open_item_log(ItemLogConfig(), default_path=tmp_path / "b")
    assert isinstance(default, FileItemLog) and default.root == tmp_path / "b"
    with pytest.raises(ConfigError, match="path"):
        open_item_log(ItemLogConfig())


def test_open_postgres_log_needs_the_environment_variable(monkeypatch):
    monkeypatch.delenv("FASHIONREC_TEST_ITEM_LOG_DSN", raising=False)
    with pytest.raises(ConfigError, match="FASHIONREC_TEST_ITEM_LOG_DSN"):
        open_item_log(ItemLogConfig(kind="postgres", dsn_env="FASHIONREC_TEST_ITEM_LOG_DSN"))
    monkeypatch.setenv("FASHIONREC_TEST_ITEM_LOG_DSN", "  ")
    with pytest.raises(ConfigError, match="FASHIONREC_TEST_ITEM_LOG_DSN"):
        open_item_log(ItemLogConfig(kind="postgres", dsn_env="FASHIONREC_TEST_ITEM_LOG_DSN"))
    assert ItemLogConfig(kind="postgres").dsn_env == DEFAULT_DSN_ENV


@pytest.mark.postgres
def test_open_postgres_log_from_the_environment(monkeypatch, pg_table):
    dsn, table = pg_table
    monkeypatch.setenv("FASHIONREC_TEST_ITEM_LOG_DSN", dsn)
    with open_item_log(ItemLogConfig(kind="postgres", dsn_env="FASHIONREC_TEST_ITEM_LOG_DSN", table=table)) as item_log:
        assert isinstance(item_log, PostgresItemLog) and item_log.table == table
        item_log.add({"item_id": "a"}, vector(1), None)
        assert item_log.size() > 0
    assert os.environ["FASHIONREC_TEST_ITEM_LOG_DSN"] == dsn
