"""Image-embedding throughput: the Ray Data embed job vs the model pass alone, with a time breakdown.

    python -m bench.embed --config configs/bench_embed.yaml     (make bench-embed)

On the crops of a generated corpus (the demo's size by default), each round runs, one after the
other: the embed job's image stage (``ray_jobs.embed``: actor start-up, decode, transforms, model,
write), the model pass alone over the same crops already decoded and transformed (same model,
batch size and torch threads), and a stage-by-stage timing of the same library calls in one
process (decode, transforms, model, write). Rounds interleave the sides (alternating which goes
first) so that load from other processes hits both; the report gives medians and the per-round
ratios. The job's rate comes two ways: over the whole stage, and over the actors' window (first to
last batch, from Ray Data's stats: without each actor's fixed start-up). Ray start-up is apart.
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifacts import write_json
from recsys.data.preprocessing import items_of, list_label_files, preprocess_serial
from recsys.data.synthetic import SyntheticCorpusConfig, existing_corpus, generate_corpus
from recsys.encoders.crops import decode_crops
from recsys.data.vectors import vector_column
from recsys.encoders.image import ImageEncoder, ImageEncoderConfig, pretrained_label
from recsys.plots import bar_panels
from ray_jobs import embed, preprocess
from ray_jobs.common.cli import init_ray, load_stage_config, run_main


@dataclass
class BenchEmbedConfig:
    corpus: SyntheticCorpusConfig = field(default_factory=lambda: SyntheticCorpusConfig(
        out_dir="data/generated/bench_embed", n_images=1000))
    output_root: str = "artifacts/bench/embed"
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    actors: int = 1
    cpus_per_actor: int = 2           # the job's actor CPUs = torch threads on both sides
    image_batch_rows: int = 256
    rounds: int = 3
    breakdown_crops: int = 256        # crops timed stage by stage in each round


def _crops(cfg: BenchEmbedConfig, work: Path) -> Path:
    """Items parquet with crop paths: the corpus preprocessed once, in this process."""
    if existing_corpus(cfg.corpus) is None:
        print(f"generating {cfg.corpus.n_images} labels into {cfg.corpus.out_dir} (cached for later runs)")
        generate_corpus(cfg.corpus)
    corpus = Path(cfg.corpus.out_dir)
    job = preprocess.PreprocessConfig(labels=str(corpus / "labels"), images=str(corpus / "images"))
    outcomes = preprocess_serial(list_label_files(job.labels), preprocess.kfashion_options(job, work / "crops"))
    (work / "items").mkdir(parents=True)
    pq.write_table(items_of(outcomes), work / "items" / "part-0.parquet")
    return work / "items"


def _timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def _breakdown(encoder: ImageEncoder, ids: list[str], paths: list[str], out: Path) -> dict:
    """Milliseconds per crop of each stage the job runs, the same library calls in one process."""
    (batch, images), decode_s = _timed(decode_crops, ids, paths)
    pixels, transform_s = _timed(encoder.pixels, images)
    vectors, model_s = _timed(encoder.encode_pixels, pixels)
    _, write_s = _timed(lambda: pq.write_table(pa.table({"item_id": batch.ids, "vector": vector_column(vectors)}),
                                               out / "vectors.parquet"))
    per_crop = {"decode": decode_s, "transforms": transform_s, "model": model_s, "write": write_s}
    return {stage: round(1000 * seconds / len(images), 3) for stage, seconds in per_crop.items()}


def _job_round(cfg: BenchEmbedConfig, items: Path, out: Path) -> tuple[dict, dict[str, np.ndarray]]:
    job = embed.EmbedConfig(items=str(items), output_root=str(out), image=cfg.image, embed_texts=False,
                            actors=cfg.actors, cpus_per_actor=cfg.cpus_per_actor,
                            image_batch_rows=cfg.image_batch_rows)
    report = embed.run(job)
    table = pq.read_table(Path(report["run_dir"]) / "image_embeddings", columns=["item_id", "vector"])
    vectors = dict(zip(table.column("item_id").to_pylist(), table.column("vector").to_numpy(zero_copy_only=False)))
    image = report["image"]
    return {"seconds": image["seconds"], "crops": image["vectors"],
            "crops_per_s": round(image["vectors"] / image["seconds"], 2),
            "actor_window_seconds": image["actor_window_seconds"],
            "crops_per_s_in_window": image["vectors_per_s_in_window"]}, vectors


def run(cfg: BenchEmbedConfig) -> dict:
    import torch

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    work = Path(cfg.output_root).resolve() / f"work-{stamp}"
    items = _crops(cfg, work)
    table = pq.read_table(items, columns=["item_id", "crop_path"])
    ids, paths = table.column("item_id").to_pylist(), table.column("crop_path").to_pylist()
    torch.set_num_threads(cfg.cpus_per_actor)  # the actor's thread count, for the in-process sides
    encoder = ImageEncoder(cfg.image)
    batch, images = decode_crops(ids, paths)
    pixels = encoder.pixels(images)  # pre-decoded, pre-transformed: the model pass's input
    del images
    started = time.perf_counter()
    init_ray()
    ray_init_s = time.perf_counter() - started
    print(f"[bench embed] {len(batch.ids)} crops, {cfg.rounds} rounds: Ray Data job | model pass alone | breakdown")

    rounds = []
    for index in range(cfg.rounds):
        # Alternate which side goes first, so that a drift in the machine's load hits both alike.
        if index % 2:
            model_vectors, model_s = _timed(encoder.encode_pixels, pixels)
        job, job_vectors = _job_round(cfg, items, work / f"job-{index}")
        if not index % 2:
            model_vectors, model_s = _timed(encoder.encode_pixels, pixels)
        model = {"seconds": round(model_s, 2), "crops_per_s": round(len(pixels) / model_s, 2)}
        breakdown = _breakdown(encoder, ids[:cfg.breakdown_crops], paths[:cfg.breakdown_crops], work)
        cosine = min(float(np.dot(job_vectors[i], v)) for i, v in zip(batch.ids, model_vectors))
        rounds.append({"job": job, "model_pass": model, "breakdown_ms_per_crop": breakdown,
                       "ratio_job_over_model": round(job["crops_per_s"] / model["crops_per_s"], 3),
                       "ratio_window_over_model": round(job["crops_per_s_in_window"] / model["crops_per_s"], 3),
                       "min_cosine_job_vs_model_pass": round(cosine, 6)})
        print(f"  round {index + 1}: job {job['crops_per_s']} crops/s ({job['crops_per_s_in_window']} in the actors' "
              f"window), model pass {model['crops_per_s']} crops/s, ratios {rounds[-1]['ratio_job_over_model']} / "
              f"{rounds[-1]['ratio_window_over_model']}, breakdown ms/crop {breakdown}")

    def median(path: tuple[str, ...]) -> float:
        values = []
        for entry in rounds:
            for key in path:
                entry = entry[key]
            values.append(entry)
        return round(statistics.median(values), 3)

    import ray

    breakdown = {stage: median(("breakdown_ms_per_crop", stage)) for stage in rounds[0]["breakdown_ms_per_crop"]}
    job_s = median(("job", "seconds"))
    result = {
        "benchmark": "embed", "created_utc": stamp, "crops": len(batch.ids),
        "image_model": cfg.image.model, "pretrained": pretrained_label(cfg.image),
        "batch_size": cfg.image.batch_size, "threads": cfg.cpus_per_actor, "actors": cfg.actors,
        "job_crops_per_s": median(("job", "crops_per_s")), "model_pass_crops_per_s": median(("model_pass", "crops_per_s")),
        "ratio_job_over_model_pass": median(("ratio_job_over_model",)),
        # the same without the stage's fixed costs (actor start-up, final write): the actors' window
        "job_crops_per_s_in_actor_window": median(("job", "crops_per_s_in_window")),
        "ratio_actor_window_over_model_pass": median(("ratio_window_over_model",)),
        "breakdown_ms_per_crop": breakdown,
        # job time the in-process stages do not explain: actor start-up, Ray Data scheduling, parquet read
        "job_seconds": job_s, "job_other_seconds": round(job_s - len(batch.ids) * sum(breakdown.values()) / 1000, 2),
        "job_outside_actor_window_seconds": round(job_s - median(("job", "actor_window_seconds")), 2),
        "same_vectors": min(r["min_cosine_job_vs_model_pass"] for r in rounds) > 0.999,
        "ray_init_seconds": round(ray_init_s, 2), "rounds": rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                    "torch": torch.__version__},
        "corpus": str(Path(cfg.corpus.out_dir).resolve()),
    }
    out = Path(cfg.output_root)
    write_json(out / f"embed-{stamp}.json", result)
    bar_panels({"crops/s (median of rounds)": {"Ray Data job": result["job_crops_per_s"],
                                               "job, actors' window": result["job_crops_per_s_in_actor_window"],
                                               "model pass alone": result["model_pass_crops_per_s"]},
                "ms per crop (one process)": breakdown,
                "job seconds": {"job (median)": job_s, "outside the actors' window": result["job_outside_actor_window_seconds"],
                                "Ray start-up": result["ray_init_seconds"]}},
               out / f"embed-{stamp}.png",
               f"Image embedding, {len(batch.ids)} crops, {cfg.image.model} ({result['pretrained']}), "
               f"{cfg.cpus_per_actor} threads: job / model pass = {result['ratio_job_over_model_pass']} "
               f"(actors' window {result['ratio_actor_window_over_model_pass']})")
    shutil.rmtree(work)  # crops and vectors: only the timings are the product here
    print(f"job {result['job_crops_per_s']} crops/s ({result['job_crops_per_s_in_actor_window']} in the actors' window), "
          f"model pass {result['model_pass_crops_per_s']} crops/s: ratio {result['ratio_job_over_model_pass']} "
          f"({result['ratio_actor_window_over_model_pass']} in the window; median of {cfg.rounds} rounds), "
          f"pretrained: {result['pretrained']} -> {out / f'embed-{stamp}.json'}")
    return result


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BenchEmbedConfig, "configs/bench_embed.yaml", argv))


if __name__ == "__main__":
    run_main(main)
