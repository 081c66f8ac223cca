"""Serve on pgvector (``index.backend: pgvector``): a second application on the package's Serve instance,
two Recommender replicas searching one build_index table in the session's embedded PostgreSQL.

What it proves: an item added through one replica is found by the other on the very next request (the
responses name the replica that wrote and the one that answered; no waiting: read-your-writes), a
deletion likewise, "new products only" runs as a SQL filter, hostile ids are refused at the API and
change no table, and the replicas load no vectors into an index of their own.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from PIL import Image

from recsys.data.vectors import read_vectors
from recsys.index import IndexConfig
from recsys.stores.item_log import ItemLogConfig
from recsys.stores.pgvector_index import PgVectorIndex
from recsys.artifacts import write_manifest
from serve_app.config import ServeIndexSettings, resolve_paths
from serve_app.demo import with_index_backend
from serve_app.versions import newest_version
from tests.serve_app import running

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

APP, PREFIX = "fashionrec_pgvector", "/pgvector"
DSN_ENV = "FASHIONREC_TEST_PGVECTOR_DSN"


def _jpeg(color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 96), color).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def pg_app(url, built, pg_dsn, tmp_path_factory):
    from ray import serve

    from serve_app.app import build_app

    suffix = uuid.uuid4().hex[:8]
    base = running.app_config(built["root"])
    embed_run = Path(newest_version(resolve_paths(base))["embed_run"])
    vectors_dir = embed_run / "image_embeddings"
    ids, vectors = read_vectors(vectors_dir, where={"view": 0})
    # a pgvector build_index run as the job writes it (meta naming the table, manifest naming the vectors),
    # found by the version resolution like the demo's, which skips runs of the other backend
    index_root = tmp_path_factory.mktemp("index_pgvector")
    run_dir = index_root / "20990101-000000-pgvector"
    with PgVectorIndex.build(vectors, ids, IndexConfig(kind="hnsw", hnsw_m=8, ef_construction=32), dsn=pg_dsn,
                             name=f"idx_serve_{suffix}", source=str(vectors_dir)) as index:
        index.save(run_dir)
    write_manifest(run_dir, "build_index", {"vectors": str(vectors_dir)}, {})
    with pytest.MonkeyPatch.context() as env:
        env.setenv(DSN_ENV, pg_dsn)  # set: with_index_backend starts no server of its own
        config = with_index_backend(dataclasses.replace(
            base, state_dir=str(tmp_path_factory.mktemp("unused_state")),
            artifacts=dataclasses.replace(base.artifacts, index_root=str(index_root)),
            item_log=ItemLogConfig(dsn_env=DSN_ENV, table=f"items_serve_{suffix}"),
            index=ServeIndexSettings(kind="hnsw")), "pgvector")
    assert newest_version(resolve_paths(config))["index_run"] == str(run_dir.resolve())
    assert newest_version(resolve_paths(with_index_backend(config, "faiss")))["index_run"] is None
    options = copy.deepcopy(running.OPTIONS)
    options["Recommender"].update(num_replicas=2, ray_actor_options={
        "num_cpus": 0.2, "runtime_env": {"env_vars": {DSN_ENV: pg_dsn}}})
    serve.run(build_app(config, options), name=APP, route_prefix=PREFIX, blocking=False)
    base_url = url + PREFIX
    running.wait_healthy(base_url, timeout=180)
    yield base_url, index.name, f"items_serve_{suffix}", pg_dsn, ids
    serve.delete(APP)


def _add(url, item_id, color):
    metadata = {"item_id": item_id, "title": "그린 블라우스", "category": "블라우스", "attributes": {"color": ["그린"]}}
    return requests.post(f"{url}/api/items", headers=running.ADMIN, data={"metadata": json.dumps(metadata)},
                         files={"file": ("new.jpg", _jpeg(color), "image/jpeg")}, timeout=60)


def _photo_search(url, color, scope):
    response = requests.post(f"{url}/api/recommend/customer_input", files={"file": ("q.jpg", _jpeg(color), "image/jpeg")},
                             data={"k": "3", "scope": scope}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _rows(dsn, table) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT count(*), count(*) FILTER (WHERE NOT removed) FROM "{table}"').fetchone()


def test_replicas_read_each_others_writes_at_once(pg_app):
    url, table, log_table, dsn, ids = pg_app
    health = requests.get(f"{url}/api/kpi", timeout=30).json()["serving"]["catalog"]["index"]
    assert health["backend"] == "pgvector" and health["table"] == table and health["loaded_as"] == "shared PostgreSQL table"

    added = _add(url, "pg-new-1", (20, 200, 40))
    assert added.status_code == 201, added.text
    writer = added.json()["stored_by"]
    assert _rows(dsn, table) == (len(ids) + 1, len(ids) + 1)     # the row went in with the item log's
    answered_by = set()
    deadline = time.monotonic() + 60
    while len(answered_by - {writer}) == 0 and time.monotonic() < deadline:
        # every response, from either replica, already has it: no retry, no sleep
        found = _photo_search(url, (20, 200, 40), "new")
        assert found["model"]["index_backend"] == "pgvector"
        assert found["scope"] == "new" and [r["item"]["item_id"] for r in found["results"]] == ["pg-new-1"]
        answered_by.add(found["model"]["replica"])
    assert answered_by - {writer}, f"only {writer} answered in 60 s"
    other = (answered_by - {writer}).pop()

    deleted = requests.delete(f"{url}/api/items/pg-new-1", headers=running.ADMIN, timeout=30).json()
    assert deleted["deleted"] == "pg-new-1"
    seen = set()
    while len(seen) < 2 and time.monotonic() < deadline + 60:
        found = _photo_search(url, (20, 200, 40), "all")
        assert "pg-new-1" not in [r["item"]["item_id"] for r in found["results"]]
        seen.add(found["model"]["replica"])
    assert seen == {writer, other}
    assert _rows(dsn, table) == (len(ids) + 1, len(ids))          # soft delete, as FAISS
    with psycopg.connect(dsn) as conn:                               # the products table: catalog + the API's
        rows = dict(conn.execute(f'SELECT item_id, (source, deleted_at IS NOT NULL)::text FROM "{log_table}_products"'))
    assert len(rows) == len(ids) + 1 and rows["pg-new-1"] == "(api,t)" and rows[ids[0]] == "(catalog,f)"


def test_hostile_ids_are_refused_and_change_no_table(pg_app):
    url, table, log_table, dsn, ids = pg_app
    before = (_rows(dsn, table), requests.get(f"{url}/api/kpi", timeout=30).json()["serving"]["catalog"]["items"])
    for hostile in (f"x'); DROP TABLE {table}; --", "' OR '1'='1", f"a; TRUNCATE {log_table}"):
        refused = _add(url, hostile, (1, 2, 3))
        assert refused.status_code == 422 and "item_id" in refused.text, refused.text  # the id's pattern
        response = requests.delete(f"{url}/api/items/{requests.utils.quote(hostile, safe='')}", headers=running.ADMIN,
                                   timeout=30)
        assert response.status_code in (400, 404, 422)
    after = (_rows(dsn, table), requests.get(f"{url}/api/kpi", timeout=30).json()["serving"]["catalog"]["items"])
    assert after == before
