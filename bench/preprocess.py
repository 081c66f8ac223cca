"""Preprocessing throughput: Ray Data vs a single-process loop over the same functions.

    python -m bench.preprocess --config configs/bench_preprocess.yaml     (make bench-preprocess)

Both sides run `recsys.data.preprocessing.process_label_batch` over the same generated corpus
(20,000 labels by default), write crops, item parquet and quarantine, and are timed in the same
run: ``rounds`` interleaved pairs (alternating which side goes first), medians and every round's ratio
reported, so the ratio is measured side by side on a shared, noisy machine. Ray starts once, before the
first round, and its start-up is reported apart.
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from recsys.artifacts import write_json
from recsys.data.preprocessing import (items_of, list_label_files, preprocess_serial, quarantine_of, reconcile,
                                       tally)
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
    rounds: int = 3  # interleaved serial / Ray Data pairs; the report gives medians


def _serial(files: list[str], cfg: preprocess.PreprocessConfig, out: Path) -> dict:
    started = time.perf_counter()
    options = preprocess.kfashion_options(cfg, out / "crops" if cfg.write_crops else None)
    outcomes = preprocess_serial(files, options, batch_size=cfg.files_per_batch)
    (out / "items").mkdir(parents=True, exist_ok=True)
    pq.write_table(items_of(outcomes), out / "items" / "part-0.parquet")
    pq.write_table(quarantine_of(outcomes), out / "quarantine.parquet")
    seconds = time.perf_counter() - started
    counts = reconcile(len(files), tally(outcomes))
    return {"seconds": round(seconds, 2), "items": counts["garments"]["written"], "counts": counts}


def _ray_data(job_cfg: preprocess.PreprocessConfig) -> dict:
    report = preprocess.run(job_cfg)
    throughput = report["throughput"]
    return {"seconds": throughput["seconds"], "items": report["garments"]["written"],
            "parse_crop_seconds": throughput["parse_crop_seconds"], "write_seconds": throughput["write_seconds"]}


def run(cfg: BenchPreprocessConfig) -> dict:
    if existing_corpus(cfg.corpus) is None:
        print(f"generating {cfg.corpus.n_images} labels into {cfg.corpus.out_dir} (cached for later runs)")
        generate_corpus(cfg.corpus)
    corpus = Path(cfg.corpus.out_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    work = Path(cfg.output_root).resolve() / f"work-{stamp}"
    files = list_label_files(corpus / "labels")
    started = time.perf_counter()
    init_ray()
    ray_init_s = time.perf_counter() - started
    import ray

    rounds = []
    for number in range(cfg.rounds):
        # Interleaved, alternating which side goes first: load from other processes hits both.
        order = ("serial", "ray_data") if number % 2 == 0 else ("ray_data", "serial")
        result: dict = {"order": list(order)}
        for side in order:
            job_cfg = preprocess.PreprocessConfig(labels=str(corpus / "labels"), images=str(corpus / "images"),
                                                  output_root=str(work / f"{side}-{number}"),
                                                  write_crops=cfg.write_crops, files_per_batch=cfg.files_per_batch)
            print(f"[round {number + 1}/{cfg.rounds}] {side}: {len(files)} label files")
            timed = _serial(files, job_cfg, work / f"{side}-{number}") if side == "serial" else _ray_data(job_cfg)
            timed["items_per_s"] = round(timed["items"] / timed["seconds"], 1)
            timed["files_per_s"] = round(len(files) / timed["seconds"], 1)
            result[side] = {k: v for k, v in timed.items() if k != "counts"}
            shutil.rmtree(work / f"{side}-{number}")  # crops and parquet: only the timings are the product here
        result["ratio_ray_over_serial"] = round(result["ray_data"]["items_per_s"] / result["serial"]["items_per_s"], 3)
        rounds.append(result)

    def median(side: str, key: str) -> float:
        return round(statistics.median(r[side][key] for r in rounds), 2)

    serial = {key: median("serial", key) for key in ("seconds", "items_per_s", "files_per_s")}
    ray_side = {key: median("ray_data", key) for key in ("seconds", "items_per_s", "files_per_s", "parse_crop_seconds",
                                                          "write_seconds")}
    serial["items"] = rounds[0]["serial"]["items"]
    ray_side |= {"items": rounds[0]["ray_data"]["items"], "ray_init_seconds": round(ray_init_s, 2),
                 "cluster_cpus": ray.cluster_resources().get("CPU")}
    result = {
        "benchmark": "preprocess", "created_utc": stamp, "n_label_files": len(files), "rounds": cfg.rounds,
        "same_output": all(r["serial"]["items"] == r["ray_data"]["items"] == serial["items"] for r in rounds),
        "serial": serial, "ray_data": ray_side,  # medians of the rounds
        "ratio_ray_over_serial_items_per_s": round(statistics.median(r["ratio_ray_over_serial"] for r in rounds), 2),
        "per_round": rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__},
        "corpus": str(corpus.resolve()),
    }
    out = Path(cfg.output_root)
    write_json(out / f"preprocess-{stamp}.json", result)
    bar_panels({"items/s, median (higher is better)": {"serial loop": serial["items_per_s"],
                                                       "Ray Data": ray_side["items_per_s"]},
                "seconds, median": {"serial loop": serial["seconds"], "Ray Data": ray_side["seconds"],
                                    "of it: after the pass": ray_side["write_seconds"],
                                    "Ray start-up (once)": ray_side["ray_init_seconds"]}},
               out / f"preprocess-{stamp}.png",
               f"Preprocessing {len(files)} labels on {os.cpu_count()} CPUs: Ray Data / serial = "
               f"{result['ratio_ray_over_serial_items_per_s']}x (median of {cfg.rounds} interleaved rounds)")
    shutil.rmtree(work, ignore_errors=True)
    print(f"serial {serial['items_per_s']} items/s, Ray Data {ray_side['items_per_s']} items/s (medians), ratio "
          f"{result['ratio_ray_over_serial_items_per_s']}x (median of {cfg.rounds} rounds: "
          f"{[r['ratio_ray_over_serial'] for r in rounds]}) -> {out / f'preprocess-{stamp}.json'}")
    return result


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BenchPreprocessConfig,
                                 "configs/bench_preprocess.yaml", argv))


if __name__ == "__main__":
    run_main(main)
