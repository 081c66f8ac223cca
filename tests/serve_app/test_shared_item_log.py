"""Two Recommender replicas that share nothing on disk see each other's item changes through
PostgreSQL (``item_log.kind: postgres``), as replicas on different nodes would.

The Recommender class is the deployment's own body (Serve wraps it unchanged); here two instances
run in this process, each with its own state_dir, against the session's embedded PostgreSQL.
"""
from __future__ import annotations

import dataclasses
import os
import time
import uuid

import numpy as np
import pytest

from recsys.stores.item_log import ItemLogConfig
from serve_app.config import resolve_paths
from serve_app.deployments.recommender import Recommender
from serve_app.errors import NotFound
from serve_app.versions import newest_version, version_label
from tests.serve_app import running

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

DSN_ENV = "FASHIONREC_TEST_ITEM_LOG_DSN"


@pytest.fixture(scope="module")
def replicas(built, pg_dsn, tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        env.setenv(DSN_ENV, pg_dsn)
        table = f"items_{uuid.uuid4().hex[:8]}"
        made = []
        for name in ("node_a", "node_b"):
            config = dataclasses.replace(running.app_config(built["root"]),
                                         state_dir=str(tmp_path_factory.mktemp(name)),
                                         item_log=ItemLogConfig(kind="postgres", dsn_env=DSN_ENV, table=table))
            config = resolve_paths(config)
            made.append(Recommender(config, newest_version(config)))
        yield made


def _eventually(check, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except (AssertionError, NotFound):  # another replica's change shows at its next sync tick
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_an_item_added_on_one_replica_is_served_by_the_other(replicas, built):
    a, b = replicas
    twin = a.get_item(built["item_ids"][1])
    vector = a.state.retriever.item_vector(built["item_ids"][1])
    embedded = {"vector": vector, "extension": "png", "embed_run": version_label(a.state.version)["embed_run"]}
    image = b"\x89PNG fake bytes: the log stores what it is given"
    record = {"item_id": "shared-001", "title": twin["title"], "category": twin["category"],
              "category_path": twin["category_path"], "attributes": twin["attributes"], "styles": twin["styles"],
              "new": True}
    assert a.add_item(record, embedded, image)["item_id"] == "shared-001"

    def on_b():
        assert b.get_item("shared-001")["title"] == twin["title"]
    _eventually(on_b)
    assert b.image("shared-001")[0] == image                       # the picture came from PostgreSQL
    similar = b.similar("shared-001", 1, 5, 1.0)                  # placed by its attributes on b as well
    assert similar["space"] == "item_tower" and similar["results"][0]["item"]["item_id"] == built["item_ids"][1]
    assert similar["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert a.store.describe()["kind"] == b.store.describe()["kind"] == "postgres"

    deleted = b.delete_item("shared-001")
    assert deleted["deleted"] == "shared-001" and deleted["stored_by"] == f"in-process:{os.getpid()}"

    def gone_on_a():
        try:
            a.get_item("shared-001")
        except NotFound:
            return
        raise AssertionError("the item deleted on b is still served on a")
    _eventually(gone_on_a)
    assert np.array_equal(a.state.retriever.item_vector(built["item_ids"][1]), vector)
