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
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys import storage
from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.data.result import AdapterError
from recsys.index import VectorIndex
from recsys.index_build import (BuildIndexConfig, mark_repeated_ids, pgvector_table, recall_report, rows_in_files,
                                rows_to_write, split_checked, validate_batch, vector_type, vectors_path)
from ray_jobs.common.cli import init_ray, load_stage_config, run_main

__all__ = ["BuildIndexConfig", "main", "run", "validate_batch"]  # the recipes: recsys.index_build


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


def run(cfg: BuildIndexConfig) -> dict:
    import ray

    source = vectors_path(cfg)
    kind = vector_type(cfg, source)
    init_ray()
    columns = [cfg.id_column, cfg.vector_column, *([cfg.view_column] if cfg.view_column else []), "path"]
    # Read where every node reaches the vectors (an object-store run there, not this node's copy).
    dataset = ray.data.read_parquet(**storage.arrow_args(location_of(source), "paths"),
                                    include_paths=True).select_columns(columns)
    dim = cfg.dim or _vector_dim(kind, dataset, cfg.vector_column, source)
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    location = location_of(run_dir)  # the run's URI when output_root is on object storage
    print(f"build_index: {cfg.index.kind} over {source} ({dim}-d) -> {run_dir}")

    started = time.perf_counter()
    validated = dataset.map_batches(
        validate_batch, fn_kwargs={"id_column": cfg.id_column, "vector_column": cfg.vector_column, "dim": dim,
                                   "tolerance": cfg.index.norm_tolerance, "view_column": cfg.view_column,
                                   "view": cfg.view},
        batch_size=cfg.rows_per_batch, batch_format="pyarrow")
    validated.context.execution_options.preserve_order = True  # rows keep file order: same input, same index
    kept, quarantine, counts = split_checked(mark_repeated_ids(_collect(validated, source)), str(source),
                                             rows_in_files(source))
    counts["validate_seconds"] = round(time.perf_counter() - started, 2)
    pq.write_table(quarantine, run_dir / "quarantine.parquet")
    if kept.num_rows == 0:
        raise AdapterError(f"{source}: no valid vectors to index ({counts['quarantine_reasons']})")

    vectors = kept["vector"].combine_chunks().flatten().to_numpy().reshape(-1, dim)
    started = time.perf_counter()
    index = (_build_pgvector(cfg, kept, dim, source, run_dir) if cfg.backend == "pgvector" else
             VectorIndex.build(vectors, kept["item_id"].to_pylist(), cfg.index, source=str(source), progress=True))
    build_s = time.perf_counter() - started
    meta = index.save(run_dir)
    recall = recall_report(index, vectors, cfg.recall_k, cfg.recall_queries, cfg.index.seed)
    report = {"source_vectors": str(source), "vectors": counts, "dim": dim,
              "index": {"backend": cfg.backend, "kind": index.kind, "version": meta["version"],
                        "n_items": meta["n_items"], "build_seconds": round(build_s, 2),
                        "index_bytes": meta.get("index_bytes", index.memory_bytes()), "config": meta["config"],
                        **{key: meta[key] for key in ("faiss_version", "pgvector_version", "table") if key in meta}},
              "recall": recall}
    if hasattr(index, "close"):
        index.close()
    write_json(run_dir / "index_report.json", report)
    upstream = source.parent / "manifest.json" if source.is_file() else source / "manifest.json"
    write_manifest(run_dir, "build_index",
                   {"vectors": str(source), "vectors_manifest": str(upstream) if upstream.is_file() else None},
                   {name: str(run_dir / name) for name in ("index.faiss", "item_ids.parquet", "index_meta.json",
                                                           "quarantine.parquet", "index_report.json")
                    if (run_dir / name).is_file()},
                   {"index_version": meta["version"]})
    _print_summary(report, location)
    if not counts["reconciles"]:
        raise RuntimeError(f"counts do not reconcile, see {storage.join(location, 'index_report.json')}")
    return report | {"run_dir": location}


def _build_pgvector(cfg: BuildIndexConfig, kept, dim: int, source: Path, run_dir: Path):
    """Parallel COPY from Ray Data tasks (one connection each) into a staging table, swapped in at once."""
    import ray

    from recsys.stores.pgvector_index import PgVectorIndex, copy_batch, create_staging
    from recsys.stores.postgres import ensure_server

    dsn, name = ensure_server(cfg.postgres), pgvector_table(cfg, run_dir)
    staging = create_staging(dsn, name, dim, cfg.index)
    written = ray.data.from_arrow(rows_to_write(kept)).map_batches(
        copy_batch, fn_kwargs={"dsn": dsn, "table": staging, "config": cfg.index, "dim": dim},
        batch_size=cfg.copy_rows, batch_format="pyarrow")
    total = sum(sum(t["written"].to_pylist()) for t in ray.get(written.to_arrow_refs()))
    if total != kept.num_rows:
        raise RuntimeError(f"{staging}: {total} rows written for {kept.num_rows} kept; nothing was swapped in")
    print(f"build_index: {total} rows copied into {staging} by parallel tasks; building the {cfg.index.kind} table")
    return PgVectorIndex.from_staging(dsn, staging, name, cfg.index, source=str(source), replace=cfg.run_name is not None)


def _print_summary(report: dict, run_dir: str) -> None:
    counts, index, recall = report["vectors"], report["index"], report["recall"]
    skipped = f" + other views skipped {counts['skipped_other_views']}" if counts["skipped_other_views"] else ""
    print(f"vectors: read {counts['read']} = indexed {counts['indexed']} + quarantined {counts['quarantined']}"
          f"{skipped}  [{'ok' if counts['reconciles'] else 'MISMATCH'}]")
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
