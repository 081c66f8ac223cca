"""Preprocessing throughput: Ray Data vs a single-process loop over the same functions.

    python -m bench.preprocess --config configs/bench_preprocess.yaml     (make bench-preprocess)

Both sides run `recsys.data.preprocessing.process_label_batch` over the same generated corpus
(20,000 labels by default), write crops, item parquet and quarantine, and are timed in the same
run, one after the other, so the ratio is measured side by side. Ray start-up is reported apart.
"""
from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from recsys.artifacts import write_json
from recsys.data.preprocessing import items_of, list_label_files, preprocess_serial, quarantine_of, reconcile
from recsys.data.synthetic import SyntheticCorpusConfig, existing_corpus, generate_corpus
from recsys.plots import bar_panels
from ray_jobs import preprocess
from ray_jobs.common.cli import init_ray, load_stage_config, run_main


@dataclass
class BenchPreprocessConfig:
    corpus: SyntheticCorpusConfig = field(default_factory=lambda: SyntheticCorpusConfig(
        out_dir="data/generated/bench_20k", n_images=20_000))
    output_root: str = "artifacts/bench/preprocess"
    files_per_batch: int = 64
    write_crops: bool = True


def _serial(files: list[str], cfg: preprocess.PreprocessConfig, out: Path) -> dict:
    started = time.perf_counter()
    options = preprocess.kfashion_options(cfg, out / "crops" if cfg.write_crops else None)
    outcomes = preprocess_serial(files, options, batch_size=cfg.files_per_batch)
    (out / "items").mkdir(parents=True, exist_ok=True)
    pq.write_table(items_of(outcomes), out / "items" / "part-0.parquet")
    pq.write_table(quarantine_of(outcomes), out / "quarantine.parquet")
    seconds = time.perf_counter() - started
    counts = reconcile(len(files), outcomes)
    return {"seconds": round(seconds, 2), "items": counts["garments"]["written"], "counts": counts}


def run(cfg: BenchPreprocessConfig) -> dict:
    if existing_corpus(cfg.corpus) is None:
        print(f"generating {cfg.corpus.n_images} labels into {cfg.corpus.out_dir} (cached for later runs)")
        generate_corpus(cfg.corpus)
    corpus = Path(cfg.corpus.out_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    work = Path(cfg.output_root).resolve() / f"work-{stamp}"
    job_cfg = preprocess.PreprocessConfig(labels=str(corpus / "labels"), images=str(corpus / "images"),
                                          output_root=str(work / "ray"), write_crops=cfg.write_crops,
                                          files_per_batch=cfg.files_per_batch)
    files = list_label_files(job_cfg.labels)

    print(f"[serial] {len(files)} label files in one process")
    serial = _serial(files, job_cfg, work / "serial")

    print("[ray data] same files, same functions")
    started = time.perf_counter()
    init_ray()
    ray_init_s = time.perf_counter() - started
    import ray

    report_ray = preprocess.run(job_cfg)
    ray_side = {"seconds": report_ray["throughput"]["seconds"], "items": report_ray["garments"]["written"],
                "ray_init_seconds": round(ray_init_s, 2), "cluster_cpus": ray.cluster_resources().get("CPU")}
    for side in (serial, ray_side):
        side["items_per_s"] = round(side["items"] / side["seconds"], 1)
        side["files_per_s"] = round(len(files) / side["seconds"], 1)
    result = {
        "benchmark": "preprocess", "created_utc": stamp, "n_label_files": len(files),
        "same_output": serial["items"] == ray_side["items"],
        "serial": {k: v for k, v in serial.items() if k != "counts"}, "ray_data": ray_side,
        "ratio_ray_over_serial_items_per_s": round(ray_side["items_per_s"] / serial["items_per_s"], 2),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__},
        "corpus": str(corpus.resolve()),
    }
    out = Path(cfg.output_root)
    write_json(out / f"preprocess-{stamp}.json", result)
    bar_panels({"items/s (higher is better)": {"serial loop": serial["items_per_s"],
                                               "Ray Data": ray_side["items_per_s"]},
                "seconds": {"serial loop": serial["seconds"], "Ray Data": ray_side["seconds"],
                            "Ray start-up": ray_side["ray_init_seconds"]}},
               out / f"preprocess-{stamp}.png",
               f"Preprocessing {len(files)} labels on {os.cpu_count()} CPUs: Ray Data / serial = "
               f"{result['ratio_ray_over_serial_items_per_s']}x")
    shutil.rmtree(work)  # crops and parquet of both sides: only the timings are the product here
    print(f"serial {serial['items_per_s']} items/s, Ray Data {ray_side['items_per_s']} items/s, "
          f"ratio {result['ratio_ray_over_serial_items_per_s']}x -> {out / f'preprocess-{stamp}.json'}")
    return result


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BenchPreprocessConfig,
                                 "configs/bench_preprocess.yaml", argv))


if __name__ == "__main__":
    run_main(main)
