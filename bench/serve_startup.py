"""A new Recommender replica's start time on a large catalog (200,000 items by default).

    python -m bench.serve_startup --config configs/bench_serve_startup.yaml   (make bench-serve-startup)

Scales the newest demo version up to ``n_items`` items: the demo's items repeated under new ids,
each given its item's image vector plus seeded noise (unit norm again), written as an embed run
(``image_embeddings``, view 0) and an items table, and a ``build_index`` artifact over them (the
library's ``VectorIndex.build`` + ``save``, as the job writes it). Then times what a replica does
when it starts, and how much its resident memory grows:

- the artifact alone, ``VectorIndex.load`` read into memory and ``load(mmap=True)`` (mapped: the
  vectors stay in the page cache, which every replica on a node mapping the file shares), each
  in a fresh process followed by one search (that touches every mapped page of an exact index);
- the catalog with ``build_index``'s artifact, read into memory and mapped (``index.mmap`` of the
  Serve config), and the catalog building its own index from the vectors (no artifact), each in a
  fresh process;
- the whole ``Recommender`` (query models, users, catalog with the artifact as configs/serve.yaml
  loads it, ranking), in this process: the state a Serve replica builds in ``reconfigure``.

Memory growth is from /proc/self/status: ``heap`` (RssAnon, private to the process), ``file``
(RssFile, mapped file pages: page cache shared with every process mapping the same file), ``rss``
(their sum) and ``peak`` (VmHWM). The page cache is warm (the artifact was just written), as for
every replica after a node's first.

Writes ``artifacts/bench/serve_startup/startup-<time>.json`` and ``.png``. The catalog is synthetic
(repeated demo items) and the image vectors come from the stand-in encoder: this measures loading,
not quality.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifacts import new_run_dir, write_json, write_manifest
from recsys.data.vectors import vector_column
from recsys.index import IndexConfig, VectorIndex
from recsys.plots import plt, save_figure
from recsys.stores.postgres import PostgresConfig
from ray_jobs.common.cli import load_stage_config, run_main
from serve_app.config import load_serve_yaml, resolve_paths


@dataclass
class BenchServeStartupConfig:
    serve_config: str = "configs/serve.yaml"
    output_root: str = "artifacts/bench/serve_startup"
    n_items: int = 200_000
    index: IndexConfig = field(default_factory=lambda: IndexConfig(kind="exact"))
    noise: float = 0.05
    seed: int = 0
    work_dir: str | None = None        # None: a temporary folder, removed afterwards
    pgvector: bool = True              # also a catalog on a shared pgvector table (index.backend: pgvector)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)  # embedded server unless dsn is set


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_mib() -> dict[str, float]:
    """This process's resident memory in MiB (Linux /proc/self/status)."""
    wanted = {"VmRSS": "rss", "RssAnon": "heap", "RssFile": "file", "VmHWM": "peak"}
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in wanted:
                out[wanted[key]] = int(value.split()[0]) / 1024
    return out


def probe(what: str, args: dict) -> dict:
    """One replica start step, run by ``_in_fresh_process``: ``what`` "index" (``VectorIndex.load``)
    or "catalog" (``Catalog``), then one search; its seconds (the load, not the search) and memory
    growth in MiB (heap, file-backed, rss after the search; peak over the whole step)."""
    import faiss

    from serve_app.catalog import Catalog
    from serve_app.config import ServeIndexSettings
    from recsys.stores.item_log import FileItemLog, PostgresItemLog

    faiss.omp_set_num_threads(1)  # as a Serve replica (serve_app.catalog)
    gc.collect()
    before = _memory_mib()
    started = time.perf_counter()
    if what == "index":
        index = VectorIndex.load(args["index_run"], mmap=args["mmap"])
        seconds = time.perf_counter() - started
        query = np.zeros((1, index.dim), dtype=np.float32)
        query[0, 0] = 1
        index.search(query, 10)
        info = {"loaded_as": index.loaded_as}
    else:
        backend = args.get("backend", "faiss")
        settings = ServeIndexSettings(kind=args["kind"], mmap=args["mmap"], backend=backend)
        store = (PostgresItemLog(os.environ[DSN_ENV], args["log_table"]) if backend == "pgvector"
                 else FileItemLog(args["state_dir"]))
        catalog = Catalog(args["version"], store, None, (), settings)
        seconds = time.perf_counter() - started
        catalog.search(catalog.vectors[0], None, 10, 0.0)
        info = {"loaded_as": catalog.index_info["loaded_as"], "index": catalog.index_info["source"],
                "items": len(catalog.ids)}
    after = _memory_mib()
    growth = {key: round(after[key] - before[key if key != "peak" else "rss"], 1) for key in after}
    return {"seconds": round(seconds, 2), "memory_growth_mib": growth, **info}


DSN_ENV = "FASHIONREC_BENCH_STARTUP_DSN"  # the probes' DSN (inherited, never on a command line)


def _pgvector_run(dsn: str, scaled: dict, work: Path, name: str) -> str:
    """A pgvector build_index run over the scaled catalog's image vectors (the table ``name``); its folder."""
    from recsys.data.vectors import read_vectors
    from recsys.stores.pgvector_index import PgVectorIndex

    ids, vectors = read_vectors(Path(scaled["embed_run"]) / "image_embeddings", where={"view": 0})
    run_dir = work / "index_pgvector" / name
    with PgVectorIndex.build(vectors, ids, IndexConfig(kind="exact"), dsn=dsn, name=name, replace=True,
                             source=str(Path(scaled["embed_run"]) / "image_embeddings")) as index:
        index.save(run_dir)
    return str(run_dir)


def _drop_tables(dsn: str, names: list[str]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, names))))
        conn.execute("DELETE FROM vector_index_meta WHERE name = ANY(%s)", (names,))


def _in_fresh_process(what: str, args: dict) -> dict:
    """``probe(what, args)`` in a new Python process, as a new replica starts (nothing cached on its heap)."""
    code = ("import json, sys; from bench.serve_startup import probe; "
            "print('PROBE ' + json.dumps(probe(sys.argv[1], json.loads(sys.argv[2]))))")
    done = subprocess.run([sys.executable, "-c", code, what, json.dumps(args)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"probe {what} {args.get('mmap')} failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("PROBE "))[6:])


def scaled_version(version: dict, n_items: int, index_config: IndexConfig, noise: float, seed: int,
                   work: Path) -> tuple[dict, dict]:
    """The demo version with its catalog grown to ``n_items`` (embed run, items, index run, item tower
    vectors)."""
    items = pq.read_table(version["items"])
    vectors = pq.read_table(Path(version["embed_run"]) / "image_embeddings", columns=["item_id", "view", "vector"])
    base = {i: v for i, view, v in zip(vectors["item_id"].to_pylist(), vectors["view"].to_pylist(),
                                      vectors["vector"].to_pylist()) if view == 0}
    items = items.filter(pa.array([i in base for i in items["item_id"].to_pylist()]))
    copies = -(-n_items // items.num_rows)
    rng = np.random.default_rng(seed)
    ids, rows = [], []
    base_ids = items["item_id"].to_pylist()
    for copy in range(copies):
        ids += [f"{i}#{copy}" for i in base_ids]
        rows.append(np.arange(items.num_rows))
    take = np.concatenate(rows)[:n_items]
    ids = ids[:n_items]
    grown = items.take(pa.array(take)).set_column(items.schema.get_field_index("item_id"), "item_id", pa.array(ids))
    matrix = np.asarray([base[base_ids[r]] for r in take], dtype=np.float32)
    matrix += noise * rng.standard_normal(matrix.shape).astype(np.float32) / np.sqrt(matrix.shape[1])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    embed_run = work / "embed" / "scaled"
    (embed_run / "image_embeddings").mkdir(parents=True)
    pq.write_table(pa.table({"item_id": pa.array(ids), "view": pa.array(np.zeros(len(ids), np.int16)),
                             "vector": vector_column(matrix)}), embed_run / "image_embeddings" / "part-0.parquet")
    for name in ("embed_report.json", "config.yaml"):
        source = Path(version["embed_run"]) / name
        if source.is_file():
            (embed_run / name).write_bytes(source.read_bytes())
    (work / "items").mkdir()
    pq.write_table(grown, work / "items" / "part-0.parquet")
    started = time.perf_counter()
    index = VectorIndex.build(matrix, ids, index_config, source=str(embed_run / "image_embeddings"))
    build_s = time.perf_counter() - started
    index_run = new_run_dir(work / "index", index_config, "scaled")
    meta = index.save(index_run)
    write_manifest(index_run, "build_index", {"vectors": str(embed_run / "image_embeddings")}, {})
    scaled = {**version, "embed_run": str(embed_run), "items": str(work / "items"), "index_run": str(index_run),
              "item_tower_run": _scaled_tower(version.get("item_tower_run"), base_ids, take, ids, work)}
    return scaled, {"items": len(ids), "dim": int(matrix.shape[1]), "index_kind": index.kind,
                    "index_bytes": meta["index_bytes"], "index_build_s": round(build_s, 2),
                    "vectors_parquet_mib": round((embed_run / "image_embeddings" / "part-0.parquet").stat().st_size
                                                 / 2 ** 20, 1)}


def _scaled_tower(tower_run: str | None, base_ids: list[str], take: np.ndarray, ids: list[str],
                  work: Path) -> str | None:
    """The version's item tower run with an exported vector for every grown item (each copy gets its
    original's vector), as train_item_tower on the grown catalog would export: a replica then reads
    the vectors instead of encoding 200k items' attributes at load."""
    if not tower_run:
        return None
    import shutil

    from recsys.models.item_towers import ITEM_VECTORS_FILE

    target = work / "item_tower" / "scaled"
    shutil.copytree(tower_run, target, ignore=shutil.ignore_patterns(ITEM_VECTORS_FILE, "ray_results", "*.png"))
    table = pq.read_table(Path(tower_run) / ITEM_VECTORS_FILE)
    row_of = {item_id: n for n, item_id in enumerate(table["item_id"].to_pylist())}
    rows = pa.array([row_of[base_ids[r]] for r in take])
    grown = table.take(rows).set_column(table.schema.get_field_index("item_id"), "item_id", pa.array(ids))
    pq.write_table(grown, target / ITEM_VECTORS_FILE)
    return str(target)


def run(cfg: BenchServeStartupConfig) -> dict:
    from serve_app.deployments.recommender import Recommender
    from recsys.stores.item_log import TABLE_PARTS, FileItemLog
    from serve_app.versions import newest_version

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    config, _ = load_serve_yaml(cfg.serve_config)
    config = resolve_paths(config)
    version = newest_version(config)
    with tempfile.TemporaryDirectory(prefix="bench-startup-", dir=cfg.work_dir) as tmp:
        work = Path(tmp)
        config = replace(config, state_dir=str(work / "state"))
        print(f"[startup] growing the demo catalog to {cfg.n_items} items ({cfg.index.kind} index)", flush=True)
        scaled, data = scaled_version(version, cfg.n_items, cfg.index, cfg.noise, cfg.seed, work)
        print(f"[startup] {data}", flush=True)
        FileItemLog(config.state_dir)  # created once here: the fresh processes only read it
        timings, memory, loaded_as = {}, {}, {}
        steps = [(f"index load, {mode}", "index", {"index_run": scaled["index_run"], "mmap": mode == "mmap"})
                 for mode in ("memory", "mmap")]
        steps += [(f"catalog with build_index's artifact, {mode}", "catalog",
                   {"version": scaled, "state_dir": config.state_dir, "kind": cfg.index.kind, "mmap": mode == "mmap"})
                  for mode in ("memory", "mmap")]
        steps.append(("catalog building its own index", "catalog", {"version": {**scaled, "index_run": None},
                      "state_dir": config.state_dir, "kind": cfg.index.kind, "mmap": False}))
        tables = []
        if cfg.pgvector:
            from recsys.stores.postgres import ensure_server

            os.environ[DSN_ENV] = ensure_server(cfg.postgres)
            suffix = stamp.replace("-", "_")
            table, log_table = f"bench_startup_{suffix}", f"bench_startup_log_{suffix}"
            tables = [table, log_table, *(f"{log_table}_{part}" for part in TABLE_PARTS)]
            started = time.perf_counter()
            pg_run = _pgvector_run(os.environ[DSN_ENV], scaled, work, table)
            data["pgvector_build_s"] = round(time.perf_counter() - started, 2)
            pg_args = {"version": {**scaled, "index_run": pg_run}, "state_dir": config.state_dir, "kind": "exact",
                       "mmap": False, "backend": "pgvector", "log_table": log_table}
            steps += [("catalog on the shared pgvector table, first replica (imports the products)", "catalog", pg_args),
                      ("catalog on the shared pgvector table, later replica", "catalog", pg_args)]
        try:
            for name, what, args in steps:
                measured = _in_fresh_process(what, args)
                timings[name], memory[name], loaded_as[name] = (measured["seconds"], measured["memory_growth_mib"],
                                                                measured["loaded_as"])
                print(f"[startup] {name}: {timings[name]} s, memory growth {memory[name]} MiB "
                      f"(loaded as {loaded_as[name]}{', ' + measured['index'] if 'index' in measured else ''})",
                      flush=True)
        finally:
            if tables:
                _drop_tables(os.environ[DSN_ENV], tables)
        gc.collect()
        started = time.perf_counter()
        recommender = Recommender(replace(config, text=replace(config.text, enabled=False)), scaled)
        timings["whole Recommender replica state"] = round(time.perf_counter() - started, 2)
        served = recommender.health()["catalog"]["index"]
        loaded_as["whole Recommender replica state"] = served.get("loaded_as")
        print(f"[startup] whole Recommender: {timings['whole Recommender replica state']} s "
              f"(index {served['source']}, version {served['version']}, loaded as {served.get('loaded_as')})",
              flush=True)
    result = {"benchmark": "serve_startup", "created_utc": stamp, "data": data, "seconds": timings,
              "memory_growth_mib": memory, "loaded_as": loaded_as,
              "memory_note": "heap: RssAnon (private to the replica); file: RssFile (mapped index.faiss pages, "
                             "page cache shared by all replicas of a node); rss = heap + file after one search; "
                             "peak: VmHWM growth during the step. Each step but the whole Recommender ran in a "
                             "fresh process; the whole Recommender loads the index as configs/serve.yaml says",
              "peak_rss_mib": round(_peak_rss_mib(), 1),
              "note": "synthetic catalog (demo items repeated under new ids, stand-in image vectors): loading "
                      "time, not quality; free-text title vectors off (the demo's are not scaled)",
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    out = Path(cfg.output_root)
    write_json(out / f"startup-{stamp}.json", result)
    fig, (ax, mem) = plt.subplots(1, 2, figsize=(13, 3.6), sharey=True)
    names = list(timings)
    ax.barh(names, [timings[n] for n in names], color="#4c72b0")
    for y, name in enumerate(names):
        ax.text(timings[name], y, f" {timings[name]} s", va="center", fontsize=8)
    ax.set_xlabel("seconds")
    ax.invert_yaxis()
    heap = [memory.get(n, {}).get("heap", 0) for n in names]
    mapped = [memory.get(n, {}).get("file", 0) for n in names]
    mem.barh(names, heap, color="#c44e52", label="heap (per replica)")
    mem.barh(names, mapped, left=heap, color="#8c8c8c", label="mapped files (shared page cache)")
    for y, name in enumerate(names):
        if name in memory:
            mem.text(heap[y] + mapped[y], y, f" {heap[y]:.0f} + {mapped[y]:.0f} MiB", va="center", fontsize=8)
    mem.set_xlabel("resident memory growth in a fresh process, MiB")
    mem.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"a new replica's start on {data['items']:,} items ({data['index_kind']} index, synthetic catalog)",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / f"startup-{stamp}.png")
    print(f"results: {out / f'startup-{stamp}.json'} and .png")
    return result


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BenchServeStartupConfig,
                                 "configs/bench_serve_startup.yaml", argv))


if __name__ == "__main__":
    run_main(main)
