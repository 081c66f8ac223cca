"""Index benchmark: exact vs HNSW vs IVF-PQ on the same vectors, in one process.

    python -m bench.index --config configs/bench_index.yaml [--vectors item_vectors.parquet] [--set synthetic.n=50000]

By default the vectors are SYNTHETIC: 200,000 indexed + 1,000 held-out query vectors, 128-d, drawn
around 1,000 seeded cluster centres of uneven size and spread, then L2-normalised (real item
vectors cluster by product type in the same way, but these numbers are not a measurement on them).
``--vectors`` reads exported vectors instead (``item_id`` + ``vector`` parquet) and holds 1,000 of
them out as queries. For each index: build seconds, recall@100 against exact search, queries/s at
batch 1 and batch 64 (through ``VectorIndex.search``, id mapping included), serialised size, and a
sweep of ef_search (HNSW) / nprobe (IVF-PQ) for the recall-vs-QPS plot. Each queries/s
measurement stops after ``qps_max_seconds`` (the report says how many queries it timed). Writes
``artifacts/bench/index/index-<timestamp>.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import os
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
from recsys.index import IndexConfig, VectorIndex, check_unit_vectors, recall_at_k
from recsys.plots import plt, save_figure
from ray_jobs.common.cli import load_stage_config, run_main


@dataclass
class SyntheticVectorsConfig:
    n: int = 200_000             # indexed vectors (queries are drawn on top of these)
    dim: int = 128
    clusters: int = 1000
    spread: float = 1.0          # noise norm relative to the unit centre, scaled per cluster by 0.5-1.5
    seed: int = 0


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


def search_all(index: VectorIndex, queries: np.ndarray, k: int, batch: int, **params) -> tuple[np.ndarray, float]:
    """(rows of every query, queries per second) searching ``batch`` queries per call."""
    started = time.perf_counter()
    rows = [index.search(queries[s:s + batch], k, **params).rows for s in range(0, len(queries), batch)]
    return np.concatenate(rows), len(queries) / (time.perf_counter() - started)


def queries_per_second(index: VectorIndex, queries: np.ndarray, k: int, batch: int, max_seconds: float,
                       progress: bool) -> tuple[float, int]:
    """(queries/s, queries timed): ``batch`` queries per call, stopping once ``max_seconds`` have passed,
    so a slow configuration (exact search one query at a time) cannot blow the time budget."""
    starts = range(0, len(queries), batch)
    timed = 0
    started = time.perf_counter()
    for start in tqdm(starts, desc=f"{index.kind} batch {batch}", unit="call", leave=False,
                      disable=not progress or len(starts) < 50):
        timed += len(index.search(queries[start:start + batch], k).rows)
        if time.perf_counter() - started > max_seconds:
            break
    return timed / (time.perf_counter() - started), timed


def bench_one(config: IndexConfig, base: np.ndarray, ids: np.ndarray, queries: np.ndarray, truth: np.ndarray | None,
              cfg: BenchIndexConfig) -> tuple[dict, np.ndarray]:
    print(f"[{config.kind}] building over {len(base)} vectors")
    started = time.perf_counter()
    index = VectorIndex.build(base, ids, config, progress=cfg.progress)
    build_s = time.perf_counter() - started
    memory = index.memory_bytes()
    rows, _ = search_all(index, queries, cfg.k, cfg.sweep_batch)
    truth = rows if truth is None else truth  # the exact index is its own ground truth
    result = {"config": to_dict(index.config), "build_seconds": round(build_s, 2), "memory_bytes": memory,
              "memory_mib": round(memory / 2 ** 20, 1), "bytes_per_vector": round(memory / len(base), 1),
              f"recall@{cfg.k}": round(recall_at_k(rows, truth), 4), "qps": {}, "queries_timed": {}}
    for batch in cfg.batch_sizes:
        qps, timed = queries_per_second(index, queries, cfg.k, batch, cfg.qps_max_seconds, cfg.progress)
        result["qps"][f"batch_{batch}"], result["queries_timed"][f"batch_{batch}"] = round(qps, 1), timed
    param = {"hnsw": "ef_search", "ivfpq": "nprobe"}.get(config.kind)
    result["sweep"] = []
    for value in {"hnsw": cfg.ef_search_sweep, "ivfpq": cfg.nprobe_sweep}.get(config.kind, []):
        rows, qps = search_all(index, queries, cfg.k, cfg.sweep_batch, **{param: value})
        result["sweep"].append({param: value, f"recall@{cfg.k}": round(recall_at_k(rows, truth), 4),
                                f"qps_batch_{cfg.sweep_batch}": round(qps, 1)})
    qps_text = ", ".join(f"{k} {v:,.0f} q/s" for k, v in result["qps"].items())
    print(f"[{config.kind}] build {build_s:.1f} s, {result['memory_mib']} MiB, recall@{cfg.k} "
          f"{result[f'recall@{cfg.k}']}, {qps_text}")
    return result, truth


def plot(result: dict, path: Path) -> Path:
    k, batch = result["k"], result["sweep_batch"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    for kind, colour in (("exact", "black"), ("hnsw", "#4c72b0"), ("ivfpq", "#dd8452")):
        entry = result["indexes"][kind]
        sweep = entry["sweep"]
        if sweep:
            param = next(p for p in sweep[0] if p in ("ef_search", "nprobe"))
            xs = [s[f"qps_batch_{batch}"] for s in sweep]
            ys = [s[f"recall@{k}"] for s in sweep]
            left.plot(xs, ys, marker="o", color=colour, label=f"{kind} ({param} sweep)")
            for s, x, y in zip(sweep, xs, ys):
                left.annotate(str(s[param]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        if f"batch_{batch}" in entry["qps"]:
            left.scatter([entry["qps"][f"batch_{batch}"]], [entry[f"recall@{k}"]], marker="*", s=160,
                         color=colour, zorder=3, label=f"{kind} as configured")
    left.set_xscale("log")
    left.set_xlabel(f"queries/s (batch {batch}, {result['machine']['faiss_omp_threads']} faiss thread(s))")
    left.set_ylabel(f"recall@{k} vs exact")
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8, loc="lower left")
    kinds = list(result["indexes"])
    memory = [result["indexes"][kind]["memory_mib"] for kind in kinds]
    bars = right.bar(kinds, memory, color=["black", "#4c72b0", "#dd8452"][:len(kinds)])
    right.bar_label(bars, labels=[f"{m} MiB\nbuild {result['indexes'][kind]['build_seconds']} s"
                                  for m, kind in zip(memory, kinds)], fontsize=8)
    right.set_ylabel("index size (MiB)")
    right.set_ylim(0, max(memory) * 1.25)
    data = result["data"]
    fig.suptitle(f"{data['n_indexed']:,} x {data['dim']}-d "
                 f"{'SYNTHETIC clustered vectors' if data['synthetic'] else Path(data['source']).name}, "
                 f"{data['n_queries']} held-out queries")
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
    result = {"benchmark": "index", "created_utc": stamp, "data": about, "k": cfg.k, "sweep_batch": cfg.sweep_batch,
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
        result["indexes"][name], truth = bench_one(config, base, ids, queries, truth, cfg)
    out = Path(cfg.output_root)
    write_json(out / f"index-{stamp}.json", result)
    plot(result, out / f"index-{stamp}.png")
    print(f"-> {out / f'index-{stamp}.json'} (+ .png)")
    return result | {"json": str(out / f"index-{stamp}.json"), "png": str(out / f"index-{stamp}.png")}


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
