"""Batch embedding on Ray Data actor pools: garment crops -> image vectors, item texts -> text vectors.

    python -m ray_jobs.embed --config configs/embed.yaml [--set items=PATH --set actors=4 --set gpus_per_actor=1]
    ray job submit -- python -m ray_jobs.embed --config configs/embed.yaml   # on a cluster (README, "On a cluster")

Reads the canonical items of the latest preprocessing run (or ``items``), keeps one encoder per
actor (loaded once, on GPU when ``gpus_per_actor`` > 0), and writes ``image_embeddings/`` and
``text_embeddings/`` parquet (item_id, view, vector: L2-normalised float32) plus
``embed_report.json`` with throughput. Optional augmentation embeds K extra views per crop.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from recsys import storage
from recsys.artifacts import latest_location, location_of, new_run_dir, write_json, write_manifest
from recsys.encoders.crops import embed_crops
from recsys.data.vectors import vector_column
from recsys.encoders.image import AugmentConfig, ImageEncoder, ImageEncoderConfig, pretrained_label
from recsys.encoders.text import TEXT_SOURCES, TextEncoder, TextEncoderConfig, item_texts
from ray_jobs.common.cli import init_ray, load_stage_config, run_main
from ray_jobs.common.data_stats import operator_window_seconds

EMBED_INPUT_COLUMNS = ["item_id", "crop_path", "image_path", "title", "description", "re_attributes"]


@dataclass
class EmbedConfig:
    items: str | None = None                      # items parquet dir; None: latest run under preprocess_root
    preprocess_root: str = "artifacts/preprocess"
    output_root: str = "artifacts/embed"
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    text_sources: list[str] = field(default_factory=lambda: ["title", "re_text"])
    embed_images: bool = True
    embed_texts: bool = True
    actors: int = 1               # actor-pool size per encoder
    cpus_per_actor: int = 2       # also the actor's torch thread count
    gpus_per_actor: float = 0.0   # e.g. 1 on a GPU worker group
    batch_size: int = 64          # texts per call: 4x this
    image_batch_rows: int = 256   # crops per actor call: decoding the next model batch overlaps the
                                  # model pass within a call, so long calls hide more of it


def _use_threads(threads: int) -> None:
    """Ray sets OMP_NUM_THREADS=1 in workers; an actor granted N CPUs should use N threads."""
    import torch

    torch.set_num_threads(max(1, threads))


class ImageEmbedder:
    """Actor: one image encoder, reused for every batch it is given."""

    def __init__(self, config: ImageEncoderConfig, augment: AugmentConfig, threads: int = 1):
        _use_threads(threads)
        self.encoder, self.augment = ImageEncoder(config), augment

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = [crop or full for crop, full in zip(batch["crop_path"].to_pylist(), batch["image_path"].to_pylist())]
        return embed_crops(self.encoder, batch["item_id"].to_pylist(), paths, self.augment)


class TextEmbedder:
    def __init__(self, config: TextEncoderConfig, sources: list[str], threads: int = 1):
        _use_threads(threads)
        self.encoder, self.sources = TextEncoder(config), sources

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = []
        for source in self.sources:
            texts = item_texts(batch, source)
            tables.append(pa.table({"item_id": batch["item_id"], "source": pa.array([source] * len(texts)),
                                    "text": pa.array(texts, pa.string()),
                                    "vector": vector_column(self.encoder.encode(texts))}))
        return pa.concat_tables(tables)


def run(cfg: EmbedConfig) -> dict:
    import ray

    unknown = sorted(set(cfg.text_sources) - set(TEXT_SOURCES))
    if unknown:
        raise ValueError(f"text_sources: unknown {unknown}; expected some of {TEXT_SOURCES}")
    # Where every node reads the items (an object-store run is read there, not from this node's copy).
    items_dir = location_of(cfg.items) if cfg.items else storage.join(latest_location(cfg.preprocess_root), "items")
    run_dir = new_run_dir(cfg.output_root, cfg)
    location = location_of(run_dir)  # workers write the embeddings here (the run's URI on object storage)
    init_ray()
    # Read first (item rows are small), so the actor pool may take every CPU without starving the read.
    # Only the needed columns, read up front: no read or projection task then competes with the actors.
    items = ray.data.read_parquet(**storage.arrow_args(items_dir, "paths")).select_columns(EMBED_INPUT_COLUMNS).materialize()
    n_items = items.count()
    label = pretrained_label(cfg.image)
    print(f"embed: {n_items} items from {items_dir}; image encoder {cfg.image.model} (pretrained: {label}); "
          f"text encoder {cfg.text.model}")
    resources = _actor_options(cfg)
    light = {"num_cpus": 0.1}  # writes are I/O; they must not wait for CPUs the actors hold
    report = {"items": n_items, "items_dir": items_dir, "image_model": cfg.image.model,
              "pretrained": label, "text_model": cfg.text.model}

    if cfg.embed_images:
        started = time.perf_counter()
        images = items.map_batches(
            ImageEmbedder, fn_constructor_kwargs={"config": cfg.image, "augment": cfg.augment, "threads": cfg.cpus_per_actor},
            batch_size=cfg.image_batch_rows, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.actors), **resources)
        images.write_parquet(**storage.arrow_args(storage.join(location, "image_embeddings")), ray_remote_args=light)
        seconds = time.perf_counter() - started
        error_column = pq.read_table(**storage.arrow_args(storage.join(location, "image_embeddings"), "source"),
                                     columns=["error"]).column("error")
        vectors, errors = error_column.null_count, error_column.length() - error_column.null_count
        # The pool's own window (first to last batch) apart from the stage's fixed costs: the actors'
        # start-up (torch + open_clip imports, model build), scheduling and the final write.
        window = operator_window_seconds(images, "MapBatches(ImageEmbedder)")
        report["image"] = {"seconds": round(seconds, 1), "items_per_s": round(n_items / seconds, 1),
                           "vectors": vectors, "views_per_item": 1 + cfg.augment.views, "unreadable": errors,
                           "actor_window_seconds": None if window is None else round(window, 2),
                           "vectors_per_s_in_window": None if not window else round(vectors / window, 2)}
        print(f"image embeddings: {vectors} vectors in {seconds:.1f}s ({n_items / seconds:.1f} items/s), "
              f"pretrained: {label}" + (f"; {window:.1f}s of it in the actors' batches" if window else ""))
    if cfg.embed_texts:
        started = time.perf_counter()
        texts = items.map_batches(
            TextEmbedder, fn_constructor_kwargs={"config": cfg.text, "sources": cfg.text_sources, "threads": cfg.cpus_per_actor},
            batch_size=cfg.batch_size * 4, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=cfg.actors), **resources)
        texts.write_parquet(**storage.arrow_args(storage.join(location, "text_embeddings")), ray_remote_args=light)
        seconds = time.perf_counter() - started
        n_texts = n_items * len(cfg.text_sources)
        report["text"] = {"seconds": round(seconds, 1), "texts_per_s": round(n_texts / seconds, 1),
                          "items_per_s": round(n_items / seconds, 1), "sources": cfg.text_sources}
        print(f"text embeddings: {n_texts} texts in {seconds:.1f}s ({n_texts / seconds:.1f} texts/s)")
    write_json(run_dir / "embed_report.json", report)
    write_manifest(run_dir, "embed", {"items": items_dir},
                   {"image_embeddings": storage.join(location, "image_embeddings"),
                    "text_embeddings": storage.join(location, "text_embeddings"),
                    "report": storage.join(location, "embed_report.json")})
    print(f"results in {location}")
    return report | {"run_dir": location}



def _actor_options(cfg: EmbedConfig) -> dict:
    """CPUs/GPUs per actor; actors read crops on object storage with this process's settings."""
    env = {"runtime_env": {"env_vars": variables}} if (variables := storage.runtime_env_vars()) else {}
    return {"num_cpus": cfg.cpus_per_actor} | ({"num_gpus": cfg.gpus_per_actor} if cfg.gpus_per_actor else {}) | env


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], EmbedConfig, "configs/embed.yaml", argv))


if __name__ == "__main__":
    run_main(main)
