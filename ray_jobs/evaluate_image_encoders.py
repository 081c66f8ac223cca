"""Compare image encoders on labelled real photos: do nearest neighbours share colour, type, pattern?

    python -m ray_jobs.evaluate_image_encoders                      # H&M's 400 photos (configs/evaluate_image_encoders.yaml)
    python -m ray_jobs.evaluate_image_encoders --set images=DIR --set labels=FILE.parquet --set id_column=id
    python -m ray_jobs.evaluate_image_encoders --set images=null --set labels=artifacts/preprocess/<run>/items \
        --set 'attributes=[category, color]'                    # the demo garments' crops

Every encoder in ``encoders`` (default: the hand-crafted stand-in and the random-weight ViT-M-32)
embeds the same photos in one run; for each photo, its k nearest other photos are checked against
the label table (``recsys.eval.image_encoders``), beside chance and each space's cosine spread.
Output run directory under ``output_root``: metrics.json, agreement.png (bars per attribute and k,
chance included) and neighbours/<encoder>/query_*.png (a few photos with their nearest neighbours).
The photos are few (400 here, ~2,200 demo crops): the encoders run in this process, no Ray.
"""
from __future__ import annotations

import numpy as np

from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.config import ConfigError
from recsys.eval.image_encoders import (ImageEncoderEvalConfig, chance, evaluate_encoders, item_crops,
                                       labelled_photos)
from recsys.eval.similarity_search import search_grids
from recsys.plots import grouped_bars
from ray_jobs.common.cli import load_stage_config, run_main


def run(cfg: ImageEncoderEvalConfig) -> dict:
    photos = (labelled_photos(cfg.images, cfg.labels, cfg.id_column, cfg.attributes) if cfg.images
              else item_crops(cfg.labels, cfg.attributes))
    if len(photos.ids) <= max(cfg.k):
        raise ConfigError(f"images {cfg.images or cfg.labels}: {len(photos.ids)} labelled photos, need more than "
                          f"k={max(cfg.k)}")
    print(f"evaluate_image_encoders: {len(photos.ids)} labelled photos ({len(photos.unlabelled)} without a label "
          f"row, left out), encoders: {', '.join(cfg.encoders)}")
    run_dir = new_run_dir(cfg.output_root, cfg)
    results, vectors = evaluate_encoders(photos, cfg.encoders, cfg.k)
    report = {"photos": len(photos.ids), "unlabelled": photos.unlabelled, "chance": chance(photos.labels),
              "encoders": results}
    write_json(run_dir / "metrics.json", report)
    groups = {f"{name} ({r['pretrained']})": {f"{a}@{k}": r["agreement"][a][f"@{k}"] for a in cfg.attributes
                                               for k in cfg.k} for name, r in results.items()}
    groups["chance"] = {f"{a}@{k}": report["chance"][a] for a in cfg.attributes for k in cfg.k}
    grouped_bars(groups, run_dir / "agreement.png", f"Nearest-neighbour label agreement, {len(photos.ids)} photos",
                 "share of the k nearest photos with the same label")
    queries = np.random.default_rng(cfg.seed).choice(len(photos.ids), size=min(cfg.grid_queries, len(photos.ids)),
                                                     replace=False)
    for name, space in vectors.items():
        texts = [f"photo {photos.ids[q]}: " + " / ".join(str(photos.labels[a][q]) for a in cfg.attributes)
                 for q in queries]
        search_grids(texts, space[queries], space, photos.paths, photos.ids, run_dir / "neighbours" / _slug(name),
                     k=cfg.grid_k, relevant=[photos.ids[q] for q in queries],
                     note=f"{name}, pretrained: {results[name]['pretrained']}")
    write_manifest(run_dir, "evaluate_image_encoders", {"images": cfg.images, "labels": cfg.labels},
                   {"metrics": str(run_dir / "metrics.json"), "plot": str(run_dir / "agreement.png")})
    _print_table(report, cfg)
    print(f"report: {run_dir}")
    return report | {"run_dir": location_of(run_dir)}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _print_table(report: dict, cfg: ImageEncoderEvalConfig) -> None:
    columns = [f"{a.removesuffix('_name')}@{k}" for a in cfg.attributes for k in cfg.k]
    print(f"{'encoder (pretrained)':<50}" + "".join(f"{c:>24}" for c in columns) + f"{'cosine mean/std':>18}")
    for name, r in report["encoders"].items():
        cells = [r["agreement"][a][f"@{k}"] for a in cfg.attributes for k in cfg.k]
        print(f"{name + ' (' + r['pretrained'] + ')':<50}" + "".join(f"{v:>24.3f}" for v in cells)
              + f"{r['cosine_mean']:>12.3f}/{r['cosine_std']:.3f}")
    print(f"{'chance':<50}" + "".join(f"{report['chance'][a]:>24.3f}" for a in cfg.attributes for _ in cfg.k))


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], ImageEncoderEvalConfig,
                                 "configs/evaluate_image_encoders.yaml", argv))


if __name__ == "__main__":
    run_main(main)
