"""Build a FAISS index over exported item vectors, with quarantine and a recall report.

    python -m ray_jobs.build_index --config configs/index.yaml [--set index.kind=ivfpq --set vectors=PATH]

Reads ``item_id`` + ``vector`` parquet (default: ``item_vectors.parquet`` of the latest item-tower
run) with Ray Data and validates every row in parallel: null ids, null/NaN/wrong-dimension/non-unit
vectors and repeated ids go to ``quarantine.parquet`` with a reason, and ``index_report.json``
proves read = indexed + quarantined. The index (``recsys.index``: index.faiss, item_ids.parquet,
index_meta.json) is written into ``artifacts/index/<timestamp>-<hash>/``, with recall@k against
exact search, measured on a sample of the indexed vectors used as queries.

The index is built in the driver: it is one in-memory object and faiss spreads the build over the
driver's cores (OpenMP). On a cluster give the job the cores it needs: ``ray job submit
--entrypoint-num-cpus 8 ...``.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.artifacts import latest_run, new_run_dir, write_json, write_manifest
from recsys.data.result import AdapterError, reason_counts
from recsys.data.schema import QUARANTINE_SCHEMA
from recsys.index import IndexConfig, VectorIndex, recall_at_k, row_problems
from ray_jobs.cli import init_ray, load_stage_config, run_main


@dataclass
class BuildIndexConfig:
    vectors: str | None = None                 # parquet file or folder; None: latest run under vectors_root
    vectors_root: str = "artifacts/item_tower"
    vectors_file: str = "item_vectors.parquet"
    id_column: str = "item_id"
    vector_column: str = "vector"
    dim: int | None = None                     # None: the fixed size of the column, else the commonest length
    index: IndexConfig = field(default_factory=IndexConfig)
    output_root: str = "artifacts/index"
    run_name: str | None = None
    recall_k: int = 100
    recall_queries: int = 1000                 # indexed vectors sampled as queries for the recall check
    rows_per_batch: int = 4096


def validate_batch(batch: pa.Table, id_column: str, vector_column: str, dim: int, tolerance: float) -> pa.Table:
    """item_id, vector (null when rejected), reason (null when kept), detail, path (the file, when the
    read added it): one row per input row."""
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
    checks = [(no_id, "null_id", lambda r: f"{id_column} is null or empty"),
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


def _vectors_path(cfg: BuildIndexConfig) -> Path:
    try:
        path = Path(cfg.vectors) if cfg.vectors else latest_run(cfg.vectors_root) / cfg.vectors_file
    except FileNotFoundError as exc:  # no item-tower run yet: one line, not a traceback
        raise AdapterError(f"{exc} (or pass --set vectors=PATH)") from exc
    if not path.exists():
        raise AdapterError(f"{path}: no such file or folder (expected item vectors parquet)")
    return path.resolve()


def _vector_type(cfg: BuildIndexConfig, path: Path) -> pa.DataType:
    """The vector column's type, after checking that both columns exist (before any Ray work)."""
    schema = pq.ParquetDataset(str(path)).schema
    missing = [c for c in (cfg.id_column, cfg.vector_column) if c not in schema.names]
    if missing:
        raise AdapterError(f"{path}: missing column(s) {missing}; found {schema.names}")
    kind = schema.field(cfg.vector_column).type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)):
        raise AdapterError(f"{path}: column {cfg.vector_column} is {kind}, expected a list of floats")
    return kind


def _vector_dim(kind: pa.DataType, dataset, column: str, path: Path) -> int:
    if pa.types.is_fixed_size_list(kind):
        return kind.list_size
    # Variable-length lists: the commonest length is the model's; the other rows fail as wrong_dim.
    lengths = dataset.map_batches(lambda b: pa.table({"n": pc.list_value_length(b[column])}), batch_format="pyarrow")
    counts = Counter(n for n in lengths.to_pandas()["n"].dropna().astype(int) if n > 0)
    if not counts:
        raise AdapterError(f"{path}: no non-empty vectors in column {column}")
    return counts.most_common(1)[0][0]


def _collect(dataset, source: Path) -> pa.Table:
    import ray

    tables = ray.get(dataset.to_arrow_refs())
    if not tables:
        raise AdapterError(f"{source}: no rows")
    return pa.concat_tables(tables)


def rows_in_files(source: Path) -> int:
    """Row count from the parquet footers: what was there to read, counted apart from the pipeline."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in pq.ParquetDataset(str(source)).files)


def quarantine_table(rows: pa.Table, source: str) -> pa.Table:
    files = rows["path"].to_pylist()
    return pa.table({"source_file": pa.array([f or source for f in files], pa.string()),
                     "record": pa.array([i if i else "<null>" for i in rows["item_id"].to_pylist()], pa.string()),
                     "level": pa.array(["row"] * rows.num_rows, pa.string()),
                     "reason": rows["reason"], "detail": rows["detail"]}, schema=QUARANTINE_SCHEMA)


def recall_report(index: VectorIndex, vectors: np.ndarray, k: int, n_queries: int, seed: int) -> dict:
    """recall@k of ``index`` against exact search, on a seeded sample of its own vectors as queries."""
    rng = np.random.default_rng(seed)
    queries = vectors[np.sort(rng.choice(len(vectors), min(n_queries, len(vectors)), replace=False))]
    k = min(k, len(vectors))
    started = time.perf_counter()
    found = index.search(queries, k).rows
    index_s = time.perf_counter() - started
    exact = index if index.kind == "exact" else VectorIndex.build(vectors, index.item_ids, IndexConfig(kind="exact"))
    started = time.perf_counter()
    truth = exact.search(queries, k).rows
    exact_s = time.perf_counter() - started
    return {f"recall@{k}": round(recall_at_k(found, truth), 4), "k": k, "queries": len(queries),
            "queries_are": "indexed vectors (each also finds itself)", "index_search_seconds": round(index_s, 3),
            "exact_search_seconds": round(exact_s, 3)}


def run(cfg: BuildIndexConfig) -> dict:
    import ray

    source = _vectors_path(cfg)
    vector_type = _vector_type(cfg, source)
    init_ray()
    dataset = (ray.data.read_parquet(str(source), include_paths=True)
               .select_columns([cfg.id_column, cfg.vector_column, "path"]))
    dim = cfg.dim or _vector_dim(vector_type, dataset, cfg.vector_column, source)
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    print(f"build_index: {cfg.index.kind} over {source} ({dim}-d) -> {run_dir}")

    started = time.perf_counter()
    validated = dataset.map_batches(
        validate_batch, fn_kwargs={"id_column": cfg.id_column, "vector_column": cfg.vector_column, "dim": dim,
                                   "tolerance": cfg.index.norm_tolerance},
        batch_size=cfg.rows_per_batch, batch_format="pyarrow")
    validated.context.execution_options.preserve_order = True  # rows keep file order: same input, same index
    checked = mark_repeated_ids(_collect(validated, source))
    kept_mask = pc.is_null(checked["reason"])
    kept, rejected = checked.filter(kept_mask), checked.filter(pc.invert(kept_mask))
    quarantine = quarantine_table(rejected, str(source))
    pq.write_table(quarantine, run_dir / "quarantine.parquet")
    read = rows_in_files(source)
    counts = {"read": read, "indexed": kept.num_rows, "quarantined": rejected.num_rows,
              "reconciles": read == kept.num_rows + rejected.num_rows,
              "quarantine_reasons": reason_counts(quarantine), "validate_seconds": round(time.perf_counter() - started, 2)}
    if kept.num_rows == 0:
        raise AdapterError(f"{source}: no valid vectors to index ({counts['quarantine_reasons']})")

    vectors = kept["vector"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    started = time.perf_counter()
    index = VectorIndex.build(vectors, kept["item_id"].to_pylist(), cfg.index, source=str(source), progress=True)
    build_s = time.perf_counter() - started
    meta = index.save(run_dir)
    recall = recall_report(index, vectors, cfg.recall_k, cfg.recall_queries, cfg.index.seed)
    report = {"source_vectors": str(source), "vectors": counts, "dim": dim,
              "index": {"kind": index.kind, "version": meta["version"], "n_items": meta["n_items"],
                        "build_seconds": round(build_s, 2), "index_bytes": meta["index_bytes"],
                        "config": meta["config"], "faiss_version": meta["faiss_version"]},
              "recall": recall}
    write_json(run_dir / "index_report.json", report)
    upstream = source.parent / "manifest.json" if source.is_file() else source / "manifest.json"
    write_manifest(run_dir, "build_index",
                   {"vectors": str(source), "vectors_manifest": str(upstream) if upstream.is_file() else None},
                   {name: str(run_dir / name) for name in ("index.faiss", "item_ids.parquet", "index_meta.json",
                                                           "quarantine.parquet", "index_report.json")},
                   {"index_version": meta["version"]})
    _print_summary(report, run_dir)
    if not counts["reconciles"]:
        raise RuntimeError(f"counts do not reconcile, see {run_dir / 'index_report.json'}")
    return report | {"run_dir": str(run_dir)}


def _print_summary(report: dict, run_dir: Path) -> None:
    counts, index, recall = report["vectors"], report["index"], report["recall"]
    print(f"vectors: read {counts['read']} = indexed {counts['indexed']} + quarantined {counts['quarantined']}  "
          f"[{'ok' if counts['reconciles'] else 'MISMATCH'}]")
    for reason, count in counts["quarantine_reasons"].items():
        print(f"  quarantine {reason}: {count}")
    print(f"index: {index['kind']}, {index['n_items']} items x {report['dim']}-d, built in {index['build_seconds']} s, "
          f"{index['index_bytes'] / 2 ** 20:.1f} MiB, version {index['version']}")
    key = f"recall@{recall['k']}"
    print(f"{key} vs exact search on {recall['queries']} indexed vectors: {recall[key]}")
    print(f"results in {run_dir}")


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BuildIndexConfig, "configs/index.yaml", argv))


if __name__ == "__main__":
    run_main(main)
