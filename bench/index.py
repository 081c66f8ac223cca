"""Index benchmark: FAISS exact vs HNSW vs IVF-PQ and pgvector exact vs HNSW on the same vectors, one run.

    python -m bench.index --config configs/bench_index.yaml [--vectors item_vectors.parquet] [--set synthetic.n=50000]

By default the vectors are SYNTHETIC: 200,000 indexed + 1,000 held-out query vectors, 128-d, drawn
around 1,000 seeded cluster centres of uneven size and spread, then L2-normalised (real item
vectors cluster by product type in the same way, but these numbers are not a measurement on them).
``--vectors`` reads exported vectors instead (``item_id`` + ``vector`` parquet) and holds 1,000 of
them out as queries. For each index: build seconds, recall@100 against exact search, queries/s at
batch 1 and batch 64 (through ``VectorIndex.search``, id mapping included), serialised size, and a
sweep of ef_search (HNSW) / nprobe (IVF-PQ) for the recall-vs-QPS plot. Each queries/s
measurement stops after ``qps_max_seconds`` (the report says how many queries it timed).

The same vectors also go into PostgreSQL with pgvector (the embedded server, or ``pgvector.postgres.dsn``):
exact (a sequential scan) and HNSW with the hnsw section's M / ef_construction / ef_search. For every
index, FAISS and pgvector alike: queries/s with ``concurrency`` clients at once (threads, batch 1; each
pgvector client has its own connection, the FAISS clients share the index), and filtered search: a
category that ``filter_fraction`` (1%) of the items carry, recall@k against exact filtered search and
queries/s at batch 1. pgvector answers one query per round trip, so its recall passes use the first
``pgvector.recall_queries`` queries. ``pgvector_vs_faiss`` gives the ratios of the same kind measured
in this run. Writes ``artifacts/bench/index/index-<timestamp>.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import threading
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from recsys.artifacts import write_json
from recsys.config import to_dict
from recsys.index import IndexConfig, SearchFilter, VectorIndex, VectorStore, check_unit_vectors, recall_at_k
from recsys.plots import plt, save_figure
from recsys.stores.postgres import PostgresConfig
from ray_jobs.common.cli import load_stage_config, run_main


@dataclass
class SyntheticVectorsConfig:
    n: int = 200_000             # indexed vectors (queries are drawn on top of these)
    dim: int = 128
    clusters: int = 1000
    spread: float = 1.0          # noise norm relative to the unit centre, scaled per cluster by 0.5-1.5
    seed: int = 0


@dataclass
class PgVectorBenchConfig:
    enabled: bool = True
    postgres: PostgresConfig = field(default_factory=PostgresConfig)  # embedded server unless dsn is set
    kinds: list[str] = field(default_factory=lambda: ["exact", "hnsw"])  # HNSW: the hnsw section's parameters
    recall_queries: int = 200    # one round trip a query, and exact scans every row: recall on the first N


@dataclass
class BenchIndexConfig:
    vectors: str | None = None   # exported vectors parquet (item_id, vector); None: synthetic
    synthetic: SyntheticVectorsConfig = field(default_factory=SyntheticVectorsConfig)
    n_queries: int = 1000
    k: int = 100
    batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    exact: IndexConfig = field(default_factory=lambda: IndexConfig(kind="exact"))
    # Lighter builds than configs/index.yaml (M 32, ef_construction 200, 100k training vectors), to keep
    # the default run within a few minutes on 2 cores.
    hnsw: IndexConfig = field(default_factory=lambda: IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=100))
    ivfpq: IndexConfig = field(default_factory=lambda: IndexConfig(kind="ivfpq", train_size=50_000))
    ef_search_sweep: list[int] = field(default_factory=lambda: [100, 128, 256, 512])   # below k faiss uses k
    nprobe_sweep: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    sweep_batch: int = 64        # also the batch of the recall pass
    qps_max_seconds: float = 10.0  # each queries/s measurement stops after this long (>= 1 call)
    concurrency: int = 16        # clients searching at once (threads, batch 1) for qps_concurrent
    filter_fraction: float = 0.01  # share of items carrying the category that filtered queries ask for
    filter_queries: int = 200    # queries of the filtered recall pass (their own exact truth)
    pgvector: PgVectorBenchConfig = field(default_factory=PgVectorBenchConfig)
    threads: int | None = None   # faiss OpenMP threads; None: faiss's default (every core)
    output_root: str = "artifacts/bench/index"
    progress: bool = True


def clustered_unit_vectors(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    """Seeded points around unit cluster centres; cluster sizes are lognormal (a few big categories,
    many small ones) and each cluster has its own spread, so no single nlist/ef fits every region."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, clusters)
    labels = rng.choice(clusters, n, p=weights / weights.sum())
    scale = (spread * rng.uniform(0.5, 1.5, clusters) / np.sqrt(dim)).astype(np.float32)
    vectors = centres[labels] + rng.standard_normal((n, dim), dtype=np.float32) * scale[labels, None]
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def load_vectors(cfg: BenchIndexConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """(indexed vectors, held-out queries, description of the data)."""
    if cfg.vectors:
        table = pq.read_table(cfg.vectors, columns=["item_id", "vector"])
        vectors = check_unit_vectors(np.stack(table.column("vector").to_numpy(zero_copy_only=False)),
                                     table.column("item_id").to_pylist(),
                                     what=f"{cfg.vectors} (run ray_jobs.build_index to quarantine bad rows)")
        about = {"source": str(Path(cfg.vectors).resolve()), "synthetic": False}
    else:
        s = cfg.synthetic
        vectors = clustered_unit_vectors(s.n + cfg.n_queries, s.dim, s.clusters, s.spread, s.seed)
        about = {"source": "synthetic clustered unit vectors (seeded), not real item vectors", "synthetic": True,
                 **to_dict(s)}
    order = np.random.default_rng(cfg.synthetic.seed + 1).permutation(len(vectors))
    if len(vectors) <= cfg.n_queries:
        raise ValueError(f"{len(vectors)} vectors: need more than n_queries={cfg.n_queries}")
    queries, base = vectors[order[:cfg.n_queries]], vectors[order[cfg.n_queries:]]
    return np.ascontiguousarray(base), np.ascontiguousarray(queries), about | {"n_indexed": len(base),
                                                                              "n_queries": len(queries),
                                                                              "dim": int(vectors.shape[1])}


def search_all(index: VectorStore, queries: np.ndarray, k: int, batch: int, **params) -> tuple[np.ndarray, float]:
    """(rows of every query, queries per second) searching ``batch`` queries per call."""
    started = time.perf_counter()
    rows = [index.search(queries[s:s + batch], k, **params).rows for s in range(0, len(queries), batch)]
    return np.concatenate(rows), len(queries) / (time.perf_counter() - started)


def queries_per_second(index: VectorStore, queries: np.ndarray, k: int, batch: int, max_seconds: float,
                       progress: bool, **params) -> tuple[float, int]:
    """(queries/s, queries timed): ``batch`` queries per call, stopping once ``max_seconds`` have passed,
    so a slow configuration (exact search one query at a time) cannot blow the time budget."""
    starts = range(0, len(queries), batch)
    timed = 0
    started = time.perf_counter()
    for start in tqdm(starts, desc=f"{index.kind} batch {batch}", unit="call", leave=False,
                      disable=not progress or len(starts) < 50):
        timed += len(index.search(queries[start:start + batch], k, **params).rows)
        if time.perf_counter() - started > max_seconds:
            break
    return timed / (time.perf_counter() - started), timed


def concurrent_qps(open_client, queries: np.ndarray, k: int, clients: int, max_seconds: float) -> tuple[float, int]:
    """(queries/s, queries answered) with ``clients`` threads each searching one query at a time until
    ``max_seconds`` have passed. ``open_client()`` gives a thread its index handle (and closes it after)."""
    counts, errors = [0] * clients, []
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(slot: int) -> None:
        try:
            with open_client() as index:
                ready.wait()
                i = slot
                while time.perf_counter() < deadline[0]:
                    index.search(queries[i % len(queries)], k)
                    counts[slot] += 1
                    i += clients
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            errors.append(exc)
            ready.abort()

    threads = [threading.Thread(target=client, args=(slot,), daemon=True) for slot in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + 3600
    ready.wait()
    started = time.perf_counter()
    deadline[0] = started + max_seconds
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts) / (time.perf_counter() - started), sum(counts)


def bench_one(backend: str, config: IndexConfig, build, open_client, base: np.ndarray, queries: np.ndarray,
              truth: np.ndarray | None, filtered: dict, cfg: BenchIndexConfig, recall_queries: int | None = None
              ) -> tuple[dict, np.ndarray]:
    """One index: build it (``build()`` -> index), then recall, queries/s (batches, concurrent clients,
    filtered). ``truth``: exact rows of the first queries (None: this index is exact and gives them)."""
    label = f"{backend} {config.kind}"
    print(f"[{label}] building over {len(base)} vectors")
    started = time.perf_counter()
    index = build()
    build_s = time.perf_counter() - started
    memory = index.memory_bytes()
    recall_set = queries[:recall_queries] if recall_queries else queries
    rows, _ = search_all(index, recall_set, cfg.k, cfg.sweep_batch)
    truth = rows if truth is None else truth[:len(recall_set)]  # the exact index is its own ground truth
    result = {"backend": backend, "config": to_dict(index.config), "build_seconds": round(build_s, 2),
              "memory_bytes": memory, "memory_mib": round(memory / 2 ** 20, 1),
              "bytes_per_vector": round(memory / len(base), 1), f"recall@{cfg.k}": round(recall_at_k(rows, truth), 4),
              "recall_queries": len(recall_set), "qps": {}, "queries_timed": {}}
    for batch in cfg.batch_sizes:
        qps, timed = queries_per_second(index, queries, cfg.k, batch, cfg.qps_max_seconds, cfg.progress)
        result["qps"][f"batch_{batch}"], result["queries_timed"][f"batch_{batch}"] = round(qps, 1), timed
    qps, timed = concurrent_qps(open_client(index), queries, cfg.k, cfg.concurrency, cfg.qps_max_seconds)
    result["qps"][f"concurrent_{cfg.concurrency}"] = round(qps, 1)
    result["queries_timed"][f"concurrent_{cfg.concurrency}"] = timed
    where = SearchFilter(categories=(filtered["category"],))
    found = index.search(filtered["queries"], cfg.k, filter=where)
    passing = np.isin(found.rows, filtered["rows"]) & (found.rows >= 0)
    qps, timed = queries_per_second(index, filtered["queries"], cfg.k, 1, cfg.qps_max_seconds, False, filter=where)
    result["filtered"] = {"fraction_passing": filtered["fraction"], f"recall@{cfg.k}": round(recall_at_k(
        found.rows, filtered["truth"]), 4), "rows_filled": round(float((found.rows >= 0).mean()), 4),
        "rows_passing_filter": round(float(passing.sum() / max((found.rows >= 0).sum(), 1)), 4),
        "qps_batch_1": round(qps, 1), "queries_timed": timed}
    param = {"hnsw": "ef_search", "ivfpq": "nprobe"}.get(config.kind)
    result["sweep"] = []
    for value in {"hnsw": cfg.ef_search_sweep, "ivfpq": cfg.nprobe_sweep}.get(config.kind, []):
        rows, qps = search_all(index, recall_set, cfg.k, cfg.sweep_batch, **{param: value})
        result["sweep"].append({param: value, f"recall@{cfg.k}": round(recall_at_k(rows, truth), 4),
                                f"qps_batch_{cfg.sweep_batch}": round(qps, 1)})
    if hasattr(index, "close"):
        index.close()
    qps_text = ", ".join(f"{k} {v:,.0f} q/s" for k, v in result["qps"].items())
    print(f"[{label}] build {build_s:.1f} s, {result['memory_mib']} MiB, recall@{cfg.k} "
          f"{result[f'recall@{cfg.k}']}, {qps_text}; {filtered['fraction']:.0%} filter: recall "
          f"{result['filtered'][f'recall@{cfg.k}']}, {result['filtered']['qps_batch_1']:,.0f} q/s")
    return result, truth


def filtered_queries(base: np.ndarray, queries: np.ndarray, cfg: BenchIndexConfig) -> tuple[np.ndarray, dict]:
    """(a category per item, the filtered-search setup): a seeded ``filter_fraction`` of the items carry
    "rare", the rest one of ten others; the truth is exact search over the rare items."""
    rng = np.random.default_rng(cfg.synthetic.seed + 2)
    categories = np.asarray([f"c{i}" for i in rng.integers(10, size=len(base))], dtype=object)
    rare = np.sort(rng.choice(len(base), max(1, round(cfg.filter_fraction * len(base))), replace=False))
    categories[rare] = "rare"
    subset = queries[:cfg.filter_queries]
    scores = subset @ base[rare].T
    truth = rare[np.argsort(-scores, axis=1, kind="stable")[:, :cfg.k]]
    return categories, {"category": "rare", "rows": rare, "fraction": round(len(rare) / len(base), 4),
                        "queries": subset, "truth": truth}


COLOURS = {"exact": "black", "hnsw": "#4c72b0", "ivfpq": "#dd8452", "pgvector_exact": "#8c8c8c",
           "pgvector_hnsw": "#55a868"}


def plot(result: dict, path: Path) -> Path:
    k, batch, clients = result["k"], result["sweep_batch"], result.get("concurrency", 16)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 5), gridspec_kw={"width_ratios": [3, 3, 2]})
    for name, entry in result["indexes"].items():
        colour = COLOURS.get(name, "grey")
        sweep = entry["sweep"]
        if sweep:
            param = next(p for p in sweep[0] if p in ("ef_search", "nprobe"))
            xs = [s[f"qps_batch_{batch}"] for s in sweep]
            ys = [s[f"recall@{k}"] for s in sweep]
            left.plot(xs, ys, marker="o", color=colour, label=f"{name} ({param} sweep)")
            for s, x, y in zip(sweep, xs, ys):
                left.annotate(str(s[param]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        if f"batch_{batch}" in entry["qps"]:
            left.scatter([entry["qps"][f"batch_{batch}"]], [entry[f"recall@{k}"]], marker="*", s=160,
                         color=colour, zorder=3, label=f"{name} as configured")
    left.set_xscale("log")
    left.set_xlabel(f"queries/s (batch {batch}, {result['machine']['faiss_omp_threads']} faiss thread(s))")
    left.set_ylabel(f"recall@{k} vs exact")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=7, loc="lower left")
    names = list(result["indexes"])
    groups = [("batch 1", lambda e: e["qps"].get("batch_1")),
              (f"{clients} clients", lambda e: e["qps"].get(f"concurrent_{clients}")),
              (f"filter {next(iter(result['indexes'].values()))['filtered']['fraction_passing']:.0%}",
               lambda e: e["filtered"]["qps_batch_1"])]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [get(result["indexes"][name]) or 0 for _, get in groups]
        bars = middle.bar(np.arange(len(groups)) + i * width, values, width, color=COLOURS.get(name, "grey"), label=name)
        middle.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=6, rotation=90, padding=2)
    middle.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, [g for g, _ in groups])
    middle.set_yscale("log")
    middle.set_ylabel("queries/s (one query a call)")
    middle.legend(fontsize=7)
    memory = [result["indexes"][name]["memory_mib"] for name in names]
    bars = right.bar(names, memory, color=[COLOURS.get(name, "grey") for name in names])
    right.bar_label(bars, labels=[f"{m} MiB\nbuild {result['indexes'][name]['build_seconds']} s"
                                  for m, name in zip(memory, names)], fontsize=7)
    right.set_ylabel("index size (MiB; pgvector: table + indexes on disk)")
    right.set_ylim(0, max(memory) * 1.3)
    right.tick_params(axis="x", labelrotation=30, labelsize=7)
    data = result["data"]
    fig.suptitle(f"{data['n_indexed']:,} x {data['dim']}-d "
                 f"{'SYNTHETIC clustered vectors' if data['synthetic'] else Path(data['source']).name}, "
                 f"{data['n_queries']} held-out queries; FAISS and pgvector in one run")
    fig.tight_layout()
    return save_figure(fig, path)


def run(cfg: BenchIndexConfig) -> dict:
    threads_before = faiss.omp_get_max_threads()
    if cfg.threads:
        faiss.omp_set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:  # the thread count is process-wide; leave it as found (tests share the process)
        faiss.omp_set_num_threads(threads_before)


def _run(cfg: BenchIndexConfig) -> dict:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base, queries, about = load_vectors(cfg)
    ids = np.array([f"v{i}" for i in range(len(base))])
    categories, filtered = filtered_queries(base, queries, cfg)
    result = {"benchmark": "index", "created_utc": stamp, "data": about, "k": cfg.k, "sweep_batch": cfg.sweep_batch,
              "concurrency": cfg.concurrency,
              "machine": {"cpus": os.cpu_count(), "faiss_omp_threads": faiss.omp_get_max_threads(),
                          "faiss": faiss.__version__, "python": platform.python_version(), "numpy": np.__version__},
              "indexes": {}}
    print(f"bench index: {about['n_indexed']} x {about['dim']}-d ({'synthetic' if about['synthetic'] else about['source']}), "
          f"{about['n_queries']} queries, k={cfg.k}, {result['machine']['faiss_omp_threads']} faiss threads")
    truth = None
    for name in ("exact", "hnsw", "ivfpq"):  # exact first: it gives the ground truth
        config = getattr(cfg, name)
        if config.kind != name:
            raise ValueError(f"{name}.kind is {config.kind!r}; each section benchmarks its own kind")
        result["indexes"][name], truth = bench_one(
            "faiss", config, lambda c=config: VectorIndex.build(base, ids, c, progress=cfg.progress, categories=categories),
            lambda index: lambda: contextlib.nullcontext(index), base, queries, truth, filtered, cfg)
    if cfg.pgvector.enabled:
        result["indexes"].update(_bench_pgvector(cfg, base, ids, categories, queries, truth, filtered, result))
    out = Path(cfg.output_root)
    write_json(out / f"index-{stamp}.json", result)
    plot(result, out / f"index-{stamp}.png")
    print(f"-> {out / f'index-{stamp}.json'} (+ .png)")
    return result | {"json": str(out / f"index-{stamp}.json"), "png": str(out / f"index-{stamp}.png")}


def _bench_pgvector(cfg: BenchIndexConfig, base, ids, categories, queries, truth, filtered, result) -> dict:
    """pgvector's exact and HNSW indexes over the same vectors, and their ratios to FAISS's of that kind."""
    from recsys.stores.pgvector_index import PgVectorIndex
    from recsys.stores.postgres import ensure_server, server_info

    dsn = ensure_server(cfg.pgvector.postgres)
    info = server_info(dsn)
    result["machine"] |= {"postgresql": info.server_version, "pgvector": info.pgvector_version}
    entries, ratios = {}, {}
    for kind in cfg.pgvector.kinds:
        config = getattr(cfg, kind)
        name = f"bench_index_{kind}"

        def build(config=config, name=name):
            return PgVectorIndex.build(base, ids, config, dsn=dsn, name=name, categories=categories.tolist(),
                                       replace=True, progress=cfg.progress)

        entry, _ = bench_one("pgvector", config, build, lambda index: lambda: PgVectorIndex.open(dsn, index.name),
                             base, queries, truth, filtered, cfg, recall_queries=cfg.pgvector.recall_queries)
        entries[f"pgvector_{kind}"] = entry
        faiss_entry = result["indexes"][kind]
        ratios[kind] = {f"qps_{q}": round(entry["qps"][q] / faiss_entry["qps"][q], 4) for q in entry["qps"]} | {
            "qps_filtered_batch_1": round(entry["filtered"]["qps_batch_1"] / faiss_entry["filtered"]["qps_batch_1"], 4),
            "build_seconds": round(entry["build_seconds"] / max(faiss_entry["build_seconds"], 1e-3), 2),
            f"recall@{cfg.k}": [faiss_entry[f"recall@{cfg.k}"], entry[f"recall@{cfg.k}"]],
            f"filtered_recall@{cfg.k}": [faiss_entry["filtered"][f"recall@{cfg.k}"],
                                          entry["filtered"][f"recall@{cfg.k}"]]}
    result["pgvector_vs_faiss"] = ratios  # pgvector / FAISS, same kind, same run; recalls as [faiss, pgvector]
    return entries


def main(argv: list[str] | None = None) -> dict:
    # --vectors PATH is shorthand for --set vectors=PATH.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--vectors")
    known, rest = parser.parse_known_args(argv)
    if known.vectors:
        rest += ["--set", f"vectors={known.vectors}"]
    return run(load_stage_config(__doc__.splitlines()[0], BenchIndexConfig, "configs/bench_index.yaml", rest))


if __name__ == "__main__":
    run_main(main)
