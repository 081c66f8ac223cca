"""ray_jobs.build_index on a real (shared) Ray: bad rows quarantined with reasons, counts reconcile,
the saved index loads and answers, recall is reported."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.build_index import BuildIndexConfig, run, validate_batch
from recsys.index import IndexConfig, VectorIndex

pytestmark = pytest.mark.ray


def write_vectors(path, n=600, dim=16):
    """n good unit vectors in 12 clusters, then six bad rows, written as two parquet files."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, dim))
    good = centres[rng.integers(12, size=n)] + 0.3 * rng.standard_normal((n, dim))
    good = (good / np.linalg.norm(good, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"item-{i}" for i in range(n)]
    rows = list(zip(ids, good.tolist()))
    rows += [("nan-vector", [float("nan")] + [0.0] * (dim - 1)),
             ("short-vector", [1.0] * (dim - 1)),
             ("not-unit", [1.0] * dim),
             ("null-vector", None),
             (None, good[0].tolist()),
             ("item-5", good[5].tolist())]   # a repeated id: the first one (row 5) is indexed
    path.mkdir()
    for part, chunk in enumerate((rows[:300], rows[300:])):
        pq.write_table(pa.table({"item_id": pa.array([r[0] for r in chunk], pa.string()),
                                 "vector": pa.array([r[1] for r in chunk], pa.list_(pa.float32()))}),
                       path / f"part-{part}.parquet")
    return good, ids


def test_build_index_quarantines_bad_rows_and_reports_recall(ray_session, tmp_path):
    good, ids = write_vectors(tmp_path / "vectors")
    report = run(BuildIndexConfig(vectors=str(tmp_path / "vectors"), output_root=str(tmp_path / "index"),
                                  index=IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=80),
                                  recall_k=10, recall_queries=100, rows_per_batch=128))
    counts = report["vectors"]
    assert (counts["read"], counts["indexed"], counts["quarantined"]) == (606, 600, 6) and counts["reconciles"]
    assert counts["quarantine_reasons"] == {"not_finite": 1, "wrong_dim": 1, "not_unit_norm": 1, "null_vector": 1,
                                            "null_id": 1, "duplicate_id": 1}
    assert report["dim"] == 16  # the commonest length of a variable-length list column
    run_dir = tmp_path / "index" / report["run_dir"].split("/")[-1]
    quarantine = pq.read_table(run_dir / "quarantine.parquet").to_pylist()
    by_reason = {row["reason"]: row for row in quarantine}
    assert by_reason["wrong_dim"]["record"] == "short-vector" and "15 values, expected 16" in by_reason["wrong_dim"]["detail"]
    assert by_reason["not_unit_norm"]["detail"].startswith("norm 4.0000")
    assert by_reason["null_id"]["record"] == "<null>"
    assert {row["source_file"].split("/")[-1] for row in quarantine} == {"part-1.parquet"}  # the file, not the folder
    for name in ("index.faiss", "item_ids.parquet", "index_meta.json", "index_report.json", "manifest.json",
                 "config.yaml"):
        assert (run_dir / name).is_file(), name
    assert report["recall"]["recall@10"] >= 0.95 and report["recall"]["queries"] == 100

    index = VectorIndex.load(run_dir)
    assert len(index) == 600 and index.item_ids.tolist() == ids  # file order kept, first item-5 indexed
    hits = index.search(good[5], 1)
    assert hits.item_ids[0, 0] == "item-5" and hits.scores[0, 0] == pytest.approx(1.0, abs=1e-4)
    meta = json.loads((run_dir / "index_meta.json").read_text())
    assert meta["source_vectors"] == str((tmp_path / "vectors").resolve()) and meta["metric"] == "inner_product"
    assert (tmp_path / "index" / "LATEST").read_text().strip() == run_dir.name


def test_validate_batch_on_a_fixed_size_column_by_hand():
    vectors = np.eye(4, dtype=np.float32)[:3].copy()
    vectors[1] *= 3
    vectors[2, 0] = np.nan
    column = pa.concat_arrays([pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 4),
                               pa.nulls(1, pa.list_(pa.float32(), 4))])
    out = validate_batch(pa.table({"item_id": ["a", "b", "c", ""], "vector": column}), "item_id", "vector", 4, 1e-3)
    assert out["reason"].to_pylist() == [None, "not_unit_norm", "not_finite", "null_id"]
    assert out["detail"][1].as_py() == "norm 3.0000, expected 1 ± 0.001"
    assert out["vector"].to_pylist()[0] == [1, 0, 0, 0] and out["vector"].null_count == 3


def test_other_views_are_skipped_and_counted_apart():
    """An embed run's image_embeddings hold augmented copies (view > 0) beside each item's row: only
    view 0 is indexed; the copies are neither items nor faults."""
    from recsys.index_build import split_checked

    unit = np.eye(4, dtype=np.float32)
    batch = pa.table({"item_id": ["a", "a", "b", "b", "c"], "view": pa.array([0, 1, 0, 1, 0], pa.int16()),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(unit[[0, 0, 1, 1, 2]].reshape(-1)), 4)})
    checked = validate_batch(batch, "item_id", "vector", 4, 1e-3, view_column="view", view=0)
    assert checked["reason"].to_pylist() == [None, "other_view", None, "other_view", None]
    kept, quarantine, counts = split_checked(checked, "vectors", read=5)
    assert kept["item_id"].to_pylist() == ["a", "b", "c"] and quarantine.num_rows == 0
    assert (counts["indexed"], counts["quarantined"], counts["skipped_other_views"]) == (3, 0, 2)
    assert counts["reconciles"]


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_build_index_writes_pgvector_from_parallel_tasks(ray_session, tmp_path, pg_config, pg_dsn):
    """The pgvector backend: the same quarantine, rows COPYed by five Ray Data tasks (128 rows each)
    into a staging table that is swapped in whole; the run folder holds only the meta naming the table."""
    import psycopg

    from recsys.stores.pgvector_index import PgVectorIndex

    good, ids = write_vectors(tmp_path / "vectors")
    report = run(BuildIndexConfig(vectors=str(tmp_path / "vectors"), output_root=str(tmp_path / "index"),
                                  index=IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=80),
                                  recall_k=10, recall_queries=100, rows_per_batch=128, backend="pgvector",
                                  postgres=pg_config, copy_rows=128, run_name="pg-run"))
    counts = report["vectors"]
    assert (counts["read"], counts["indexed"], counts["quarantined"]) == (606, 600, 6) and counts["reconciles"]
    assert report["index"]["backend"] == "pgvector" and report["index"]["table"] == "idx_pg_run"
    run_dir = tmp_path / "index" / "pg-run"
    assert not (run_dir / "index.faiss").exists() and (run_dir / "index_meta.json").is_file()
    assert report["recall"]["recall@10"] >= 0.95
    with PgVectorIndex.load(run_dir, pg_dsn) as index:
        assert len(index) == 600 and index.item_ids.tolist() == ids  # file order kept, first item-5 indexed
        hits = index.search(good[5], 1)
        assert hits.item_ids[0, 0] == "item-5" and hits.scores[0, 0] == pytest.approx(1.0, abs=1e-4)
        assert index.version == report["index"]["version"]
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('idx_pg_run_staging')").fetchone()[0] is None
    # The same run name again: rebuilt and swapped in (a new build time, the same content).
    again = run(BuildIndexConfig(vectors=str(tmp_path / "vectors"), output_root=str(tmp_path / "index"),
                                 index=IndexConfig(kind="exact"), recall_k=10, recall_queries=20, backend="pgvector",
                                 postgres=pg_config, copy_rows=256, run_name="pg-run"))
    assert again["index"]["kind"] == "exact" and again["index"]["n_items"] == 600
