"""Ray Data preprocessing: K-Fashion label corpus -> canonical item parquet + quarantine.

    python -m ray_jobs.preprocess --config configs/preprocess.yaml [--set labels=/data/labels]
    ray job submit --working-dir . -- python -m ray_jobs.preprocess --config configs/preprocess.yaml

Reads every label file in parallel, parses it, converts polygons to boxes, crops garments and
writes ``items/*.parquet`` shards. Corrupt JSON, schema errors, missing/unreadable/oversized images
and garments without a box go to ``quarantine.parquet`` with a reason; ``reconciliation.json``
proves read = written + quarantined; ``distribution.png`` shows items per style/slot/category.
"""
from __future__ import annotations

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
from recsys.data.preprocessing import (distribution, items_of, list_label_files, process_label_batch,
                                       quarantine_of, reconcile)
from recsys.data.schema import QUARANTINE_SCHEMA
from recsys.plots import bar_panels
from ray_jobs.common.cli import init_ray, load_stage_config, run_main


@dataclass
class PreprocessConfig:
    labels: str                       # {labels}/{style}/{id}.json
    images: str | None = None         # parallel image tree {images}/{style}/{id}.jpg; None: beside labels
    output_root: str = "artifacts/preprocess"
    run_name: str | None = None       # default <UTC timestamp>-<config hash>
    write_crops: bool = True
    files_per_batch: int = 64         # label files per map_batches call
    files_per_block: int = 256        # label files per Ray Data block (unit of parallel work)
    rows_per_shard: int = 10_000
    max_image_bytes: int = 20_000_000
    max_image_pixels: int = 40_000_000


SUMMARY_COLUMNS = sorted(set(QUARANTINE_SCHEMA.names) | {"outcome", "n_garments", "styles", "category_path"})


def _process(batch: pa.Table, options: KFashionOptions) -> pa.Table:
    paths = batch["path"].to_pylist()
    return process_label_batch(paths, [Path(p).read_bytes() for p in paths], options)


def kfashion_options(cfg: PreprocessConfig, crop_dir: str | None) -> KFashionOptions:
    return KFashionOptions(label_root=str(Path(cfg.labels).resolve()),
                           image_root=str(Path(cfg.images).resolve()) if cfg.images else None,
                           crop_dir=str(crop_dir) if crop_dir else None,
                           limits=ImageLimits(cfg.max_image_bytes, cfg.max_image_pixels))


def run(cfg: PreprocessConfig) -> dict:
    import ray

    for key in ("labels", "images"):
        if getattr(cfg, key) and not storage.is_local(getattr(cfg, key)):
            raise ValueError(f"{key}: {getattr(cfg, key)} is an object-store URI; preprocessing reads labels and "
                             "images from a folder every node mounts (cluster.yaml's shared mount). Outputs may "
                             "go to object storage (output_root).")
    files = list_label_files(cfg.labels)  # clear error when the path holds no labels
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    # Workers write crops and item shards where every node reaches them: the run's URI on object storage.
    location = location_of(run_dir)
    options = kfashion_options(cfg, storage.join(location, "crops") if cfg.write_crops else None)
    worker_env = {"runtime_env": {"env_vars": env}} if (env := storage.runtime_env_vars()) else {}
    init_ray()
    print(f"preprocess: {len(files)} label files under {cfg.labels} -> {location}")

    started = time.perf_counter()
    # Paths in, bytes read inside the map task: one fused stage. Measured on 2 CPUs, this ran 1.4x
    # faster than read_binary_files feeding a separate map stage (the images are opened by path
    # anyway, so labels and images must sit on storage every node mounts).
    n_blocks = min(len(files), max(8, len(files) // cfg.files_per_block))
    outcomes = (ray.data.from_items([{"path": p} for p in files], override_num_blocks=n_blocks)
                .map_batches(_process, fn_kwargs={"options": options}, batch_size=cfg.files_per_batch,
                             batch_format="pyarrow", **worker_env))
    outcomes.set_name("preprocess")  # the console's progress bar: "Dataset preprocess_0 ..."
    outcomes = outcomes.materialize()
    processed_at = time.perf_counter()
    # Writing and collecting the parsed rows take a second: no progress bars of their own (the
    # datasets derived from ``outcomes`` run with its context).
    outcomes.context.enable_progress_bars = False
    items = outcomes.filter(expr="outcome == 'item'").map_batches(items_of, batch_format="pyarrow")
    items.write_parquet(**storage.arrow_args(storage.join(location, "items")), min_rows_per_file=cfg.rows_per_shard)
    # One pass for everything small: bookkeeping columns of every row (quarantine rows in full).
    summary = _collect(outcomes.select_columns(SUMMARY_COLUMNS))
    pq.write_table(quarantine_of(summary), run_dir / "quarantine.parquet")
    elapsed = time.perf_counter() - started

    counts = reconcile(len(files), summary)
    item_summary = summary.filter(pc.equal(summary["outcome"], "item"))
    report = {**counts, "distribution": distribution(item_summary),
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
    write_manifest(run_dir, "preprocess", {"labels": str(Path(cfg.labels).resolve()),
                                           "images": str(Path(cfg.images).resolve()) if cfg.images else None},
                   report["outputs"] | {"reconciliation": str(run_dir / "reconciliation.json")})
    _print_summary(report, location)
    if not (counts["files"]["reconciles"] and counts["garments"]["reconciles"]):
        raise RuntimeError(f"counts do not reconcile, see {storage.join(location, 'reconciliation.json')}")
    return report | {"run_dir": location}


def _collect(dataset) -> pa.Table:
    import ray

    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


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
