"""bench.index at toy size: the report's shape, not its timings."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import index as bench
from recsys.index import IndexConfig

# One faiss thread: on a busy 2-core machine OpenMP barriers make tiny multi-threaded runs far slower.
SMALL = ["--set", "threads=1", "--set", "k=10", "--set", "n_queries=100", "--set", "batch_sizes=[1, 16]", "--set", "progress=false",
         "--set", "hnsw.hnsw_m=16", "--set", "hnsw.ef_construction=64", "--set", "ef_search_sweep=[16, 64]",
         "--set", "ivfpq.nlist=32", "--set", "ivfpq.pq_m=16", "--set", "ivfpq.pq_bits=6", "--set", "nprobe_sweep=[2, 8]"]


def test_clustered_unit_vectors_are_seeded_and_unit_norm():
    first = bench.clustered_unit_vectors(500, 16, clusters=10, spread=1.0, seed=3)
    assert first.shape == (500, 16) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    assert np.array_equal(first, bench.clustered_unit_vectors(500, 16, clusters=10, spread=1.0, seed=3))


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_bench_writes_json_and_png_for_every_index(tmp_path, pg_config, pg_dsn):
    result = bench.main(["--config", "configs/bench_index.yaml", "--set", "synthetic.n=5000", "--set", "synthetic.dim=32",
                         "--set", "synthetic.clusters=50", "--set", f"output_root={tmp_path}", *SMALL,
                         "--set", f"pgvector.postgres.data_dir={pg_config.data_dir}",
                         "--set", f"pgvector.postgres.port={pg_config.port}", "--set", "qps_max_seconds=0.5",
                         "--set", "concurrency=4", "--set", "filter_queries=20", "--set", "pgvector.recall_queries=30"])
    saved = json.loads(Path(result["json"]).read_text())
    assert Path(result["png"]).is_file() and saved["data"]["synthetic"] is True
    assert saved["data"]["n_indexed"] == 5000 and saved["data"]["n_queries"] == 100
    assert saved["machine"]["faiss_omp_threads"] == 1 and saved["machine"]["pgvector"]
    assert set(saved["indexes"]) == {"exact", "hnsw", "ivfpq", "pgvector_exact", "pgvector_hnsw"}
    assert saved["indexes"]["exact"]["recall@10"] == 1.0
    assert saved["indexes"]["pgvector_exact"]["recall@10"] == 1.0  # against FAISS exact, first 30 queries
    assert saved["indexes"]["pgvector_exact"]["recall_queries"] == 30
    for entry in saved["indexes"].values():
        assert set(entry["qps"]) == {"batch_1", "batch_16", "concurrent_4"} and entry["build_seconds"] >= 0
        assert entry["memory_bytes"] > 0 and 0 < entry["recall@10"] <= 1
        # 50 of 5,000 items pass the filter: every index still fills k rows, all of them passing.
        filtered = entry["filtered"]
        assert filtered["fraction_passing"] == 0.01 and filtered["rows_filled"] == 1.0
        assert filtered["rows_passing_filter"] == 1.0 and filtered["recall@10"] >= 0.8
    for kind in ("exact", "hnsw"):
        ratios = saved["pgvector_vs_faiss"][kind]
        assert ratios["qps_batch_1"] == pytest.approx(saved["indexes"][f"pgvector_{kind}"]["qps"]["batch_1"]
                                                      / saved["indexes"][kind]["qps"]["batch_1"], abs=1e-4)
        assert ratios["recall@10"][1] == saved["indexes"][f"pgvector_{kind}"]["recall@10"]
    assert [s["ef_search"] for s in saved["indexes"]["hnsw"]["sweep"]] == [16, 64]
    assert [s["nprobe"] for s in saved["indexes"]["ivfpq"]["sweep"]] == [2, 8]
    # IVF-PQ stores 16 one-byte-or-less codes a vector instead of 32 float32s.
    assert saved["indexes"]["ivfpq"]["memory_bytes"] < saved["indexes"]["exact"]["memory_bytes"] / 2


def test_bench_reads_exported_vectors(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path = tmp_path / "item_vectors.parquet"
    pq.write_table(pa.table({"item_id": [f"p{i}" for i in range(1200)],
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 16)}), path)
    result = bench.main(["--vectors", str(path), "--set", f"output_root={tmp_path / 'out'}", *SMALL,
                         "--set", "ivfpq.pq_m=8", "--set", "pgvector.enabled=false", "--set", "qps_max_seconds=0.5"])
    assert result["data"] == {"source": str(path.resolve()), "synthetic": False, "n_indexed": 1100,
                              "n_queries": 100, "dim": 16}
    assert IndexConfig(**result["indexes"]["ivfpq"]["config"]).pq_m == 8
