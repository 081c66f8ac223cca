"""Ray Data preprocessing: K-Fashion label corpus -> canonical item parquet + quarantine.

    python -m ray_jobs.preprocess --config configs/preprocess.yaml [--set labels=/data/labels]
    ray job submit --working-dir . -- python -m ray_jobs.preprocess --config configs/preprocess.yaml

Reads every label file in parallel, parses it, converts polygons to boxes, crops garments and
writes ``items/*.parquet`` shards. Corrupt JSON, schema errors, missing/unreadable/oversized images
and garments without a box go to ``quarantine.parquet`` with a reason; ``reconciliation.json``
proves read = written + quarantined; ``distribution.png`` shows items per style/slot/category.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys import storage
from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.data.images import ImageLimits
from recsys.data.kfashion import KFashionOptions
from recsys.data.preprocessing import distribution, list_label_files, merge_tallies, preprocess_block, reconcile
from recsys.data.schema import QUARANTINE_SCHEMA
from recsys.plots import bar_panels
from ray_jobs.common.cli import init_ray, load_stage_config, run_main


@dataclass
class PreprocessConfig:
    labels: str                       # {labels}/{style}/{id}.json: a folder or an object-store URI
    images: str | None = None         # parallel image tree {images}/{style}/{id}.jpg; None: beside labels
    output_root: str = "artifacts/preprocess"
    run_name: str | None = None       # default <UTC timestamp>-<config hash>
    write_crops: bool = True
    files_per_batch: int = 64         # label files per process_label_batch call (within a task)
    files_per_block: int = 1024       # at most this many label files per task and items shard; the
                                      # blocks come in whole rounds of the cluster's CPUs
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 40_000_000


def _process(block: pa.Table, options: KFashionOptions, items_dir: str, files_per_batch: int) -> pa.Table:
    counts, quarantine = preprocess_block(block["path"].to_pylist(), options, items_dir, files_per_batch)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, QUARANTINE_SCHEMA) as writer:
        writer.write_table(quarantine)
    # One row per label file (the progress bar counts files); the block's tally and quarantine ride on the first.
    padding = [None] * (block.num_rows - 1)
    return pa.table({"tally": pa.array([json.dumps(counts)] + padding, pa.string()),
                     "quarantine": pa.array([sink.getvalue().to_pybytes()] + padding, pa.binary())})


def _absolute(path: str) -> str:
    return path if storage.is_uri(path) else str(Path(path).resolve())


def kfashion_options(cfg: PreprocessConfig, crop_dir: str | None) -> KFashionOptions:
    return KFashionOptions(label_root=_absolute(cfg.labels), image_root=_absolute(cfg.images) if cfg.images else None,
                           crop_dir=str(crop_dir) if crop_dir else None,
                           limits=ImageLimits(cfg.max_image_bytes, cfg.max_image_pixels))


def run(cfg: PreprocessConfig) -> dict:
    files = list_label_files(cfg.labels)  # clear error when the path holds no labels
    if cfg.images and storage.is_uri(cfg.images):
        storage.check_reachable(cfg.images)  # else a wrong prefix quarantines every file as missing_image
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    location = location_of(run_dir)  # workers write crops and shards where every node reaches them
    options = kfashion_options(cfg, storage.join(location, "crops") if cfg.write_crops else None)
    # AWS_* settings only for tasks on URIs: a runtime_env makes Ray start fresh workers (~3 s here).
    env = storage.runtime_env_vars() if any(map(storage.is_uri, (location, cfg.labels, cfg.images or ""))) else {}
    worker_env = {"runtime_env": {"env_vars": env}} if env else {}
    init_ray()
    print(f"preprocess: {len(files)} label files under {cfg.labels} -> {location}")
    started = time.perf_counter()
    counts, quarantined = _map_blocks(files, options, storage.join(location, "items"), cfg.files_per_block,
                                      cfg.files_per_batch, worker_env)
    processed_at = time.perf_counter()
    pq.write_table(quarantined, run_dir / "quarantine.parquet")
    elapsed = time.perf_counter() - started

    counts = reconcile(len(files), counts) | {"distribution": distribution(counts)}
    report = {**counts,
              "throughput": {"seconds": round(elapsed, 2), "files_per_s": round(len(files) / elapsed, 1),
                             "parse_crop_seconds": round(processed_at - started, 2),
                             "write_seconds": round(elapsed - (processed_at - started), 2)},
              "outputs": {"items": storage.join(location, "items"),
                          "quarantine": storage.join(location, "quarantine.parquet"),
                          "crops": storage.join(location, "crops") if cfg.write_crops else None}}
    write_json(run_dir / "reconciliation.json", report)
    bar_panels({"items per style": report["distribution"]["style"],
                "items per slot": report["distribution"]["slot"],
                "items per category": report["distribution"]["category"],
                "quarantine reasons": counts["quarantine_reasons"]},
               run_dir / "distribution.png", f"K-Fashion preprocessing: {counts['garments']['written']} items")
    write_manifest(run_dir, "preprocess", {"labels": _absolute(cfg.labels),
                                           "images": _absolute(cfg.images) if cfg.images else None},
                   report["outputs"] | {"reconciliation": str(run_dir / "reconciliation.json")})
    _print_summary(report, location)
    if not (counts["files"]["reconciles"] and counts["garments"]["reconciles"]):
        raise RuntimeError(f"counts do not reconcile, see {storage.join(location, 'reconciliation.json')}")
    return report | {"run_dir": location}


def _map_blocks(files: list[str], options: KFashionOptions, items_dir: str, files_per_block: int,
                files_per_batch: int, worker_env: dict) -> tuple[dict, pa.Table]:
    """Each task runs the serial loop over its block and writes the block's items shard itself: one pass,
    no outcome rows kept in the object store, nothing but a tally and the quarantined rows sent back."""
    import ray

    # Whole rounds of the cluster's CPUs: 19 blocks on 2 CPUs left the last running alone for 2 s.
    if files_per_block < 1:
        raise ValueError(f"files_per_block: expected a positive number of label files, got {files_per_block}")
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    n_blocks = min(len(files), math.ceil(math.ceil(len(files) / files_per_block) / cpus) * cpus)
    bounds = [round(i * len(files) / n_blocks) for i in range(n_blocks + 1)]  # equal blocks, +-1 file
    storage.makedirs(items_dir)
    outcomes = (ray.data.from_arrow([pa.table({"path": files[start:end]})  # arrow, not a dict per file
                                     for start, end in zip(bounds, bounds[1:])])
                .map_batches(_process, fn_kwargs={"options": options, "items_dir": items_dir,
                                                  "files_per_batch": files_per_batch},
                             batch_size=None, batch_format="pyarrow", **worker_env))
    outcomes.set_name("preprocess")  # the console's progress bar: "Dataset preprocess_0 ..."
    # One map operator, nothing downstream to reserve CPUs for: with Ray Data's per-operator reservation each
    # task started ~0.15 s after the last ended, the second CPU's first 1 s late (9.5 s for 8 2-s tasks, not 8.1).
    outcomes.context.op_resource_reservation_enabled = False
    # The driver keeps one tally per block and the quarantined rows, never a row per garment: its
    # memory stays flat with the corpus (tests/scripts/test_driver_memory.py).
    tallies, quarantined = [], [QUARANTINE_SCHEMA.empty_table()]
    for batch in outcomes.iter_batches(batch_format="pyarrow", batch_size=None):
        books = batch.filter(pc.is_valid(batch["tally"]))
        tallies += [json.loads(text) for text in books["tally"].to_pylist()]
        quarantined += [pa.ipc.open_stream(raw).read_all() for raw in books["quarantine"].to_pylist()]
    return merge_tallies(tallies), pa.concat_tables(quarantined)


def _print_summary(report: dict, run_dir: str) -> None:
    files, garments = report["files"], report["garments"]
    print(f"files:    read {files['read']} = processed {files['processed']} + quarantined "
          f"{files['quarantined']}  [{'ok' if files['reconciles'] else 'MISMATCH'}]")
    print(f"garments: labelled {garments['labelled_in_processed_files']} = written {garments['written']} + "
          f"quarantined {garments['quarantined']}  [{'ok' if garments['reconciles'] else 'MISMATCH'}]")
    for reason, count in report["quarantine_reasons"].items():
        print(f"  quarantine {reason}: {count}")
    print("items per style: " + ", ".join(f"{k} {v}" for k, v in report["distribution"]["style"].items()))
    print(f"{report['throughput']['files_per_s']} files/s; results in {run_dir}")


def main(argv: list[str] | None = None) -> dict:
    cfg = load_stage_config(__doc__.splitlines()[0], PreprocessConfig, "configs/preprocess.yaml", argv)
    return run(cfg)


if __name__ == "__main__":
    run_main(main)
