"""Align the attribute-JSON encoder to frozen image embeddings of garment crops (Ray Train).

    python -m ray_jobs.train_json_encoder --config configs/train_json_encoder.yaml

Inputs: canonical items (latest preprocess run) and their image embeddings (latest embed run;
augmented views, when embedded, are extra positives of their item). Output run directory:
checkpoints/best_model.pt + vocab.json, results/training_results.json, training_summary.json,
training_charts.png. Metrics are JSON->image and image->JSON, full gallery and in-batch-64, and say
which image encoder produced the targets (``pretrained: none (stand-in)`` for the offline default).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys.augment import JsonAugmentConfig, augment_records
from recsys.artifacts import latest_run, new_run_dir, write_json, write_manifest
from recsys.data.schema import attributes_to_dict
from recsys.eval.centrality import centrality_report
from recsys.eval.similarity_search import search_grids, similarity_distribution
from recsys.models.json_encoder import JsonEncoderConfig, featurize
from recsys.plots import training_charts
from recsys.train_loops.alignment import AlignmentTrainConfig, encode_features, evaluate_pairs, load_encoder
from recsys.vocab import AttributeVocabulary
from ray_jobs.alignment_trainer import ScalingSettings, fit_alignment
from ray_jobs.cli import init_ray, load_stage_config, run_main


@dataclass
class TrainJsonEncoderConfig:
    items: str | None = None                  # items parquet; None: latest preprocess run
    embeddings: str | None = None             # image_embeddings parquet; None: latest embed run
    preprocess_root: str = "artifacts/preprocess"
    embed_root: str = "artifacts/embed"
    output_root: str = "artifacts/train_json_encoder"
    std_fields: list[str] = field(default_factory=lambda: ["category", "style", "silhouette"])
    re_fields: list[str] = field(default_factory=lambda: ["material", "detail"])
    num_buckets: int = 4096
    encoder: JsonEncoderConfig = field(default_factory=JsonEncoderConfig)
    train: AlignmentTrainConfig = field(default_factory=AlignmentTrainConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    augment: JsonAugmentConfig = field(default_factory=JsonAugmentConfig)
    search_k: int = 20            # images per similarity-search grid (max 100)
    search_samples: int = 4       # number of JSON queries drawn as grids
    val_fraction: float = 0.2
    split_seed: int = 42


def item_records(items) -> dict[str, dict]:
    """item_id -> {field: value(s)}: STD and RE attributes plus the style labels as ``style``."""
    out = {}
    for row in items.to_pylist():
        record = {**attributes_to_dict(row["std_attributes"]), **attributes_to_dict(row["re_attributes"])}
        record["style"] = row["styles"]
        out[row["item_id"]] = record
    return out


def load_inputs(cfg: TrainJsonEncoderConfig):
    items_dir = Path(cfg.items) if cfg.items else latest_run(cfg.preprocess_root) / "items"
    emb_dir = Path(cfg.embeddings) if cfg.embeddings else latest_run(cfg.embed_root) / "image_embeddings"
    items = pq.read_table(items_dir, columns=["item_id", "category_path", "std_attributes", "re_attributes", "styles",
                                            "crop_path", "image_path"])
    embeddings = pq.read_table(emb_dir)
    embeddings = embeddings.filter(embeddings["vector"].is_valid())
    report_path = emb_dir.parent / "embed_report.json"
    pretrained = json.loads(report_path.read_text())["pretrained"] if report_path.is_file() else "unknown"
    return items_dir, emb_dir, items, embeddings, pretrained


@dataclass
class AlignmentData:
    """Featurized train/validation pairs and everything needed to build and report the encoder."""
    train: dict
    val: dict
    vocab: AttributeVocabulary
    vocab_sizes: dict
    encoder: JsonEncoderConfig
    val_categories: list
    val_item_ids: list
    val_images: list
    val_records: list
    items_dir: Path
    embeddings_dir: Path
    pretrained: str
    n_train_items: int


def prepare(cfg: TrainJsonEncoderConfig) -> AlignmentData:
    """Items + image embeddings -> featurized pairs, split by item (all views of an item together)."""
    items_dir, emb_dir, items, embeddings, pretrained = load_inputs(cfg)
    records = item_records(items)
    categories = {r["item_id"]: r["category_path"][-1] for r in items.select(["item_id", "category_path"]).to_pylist()}
    images = {r["item_id"]: r["crop_path"] or r["image_path"]
              for r in items.select(["item_id", "crop_path", "image_path"]).to_pylist()}
    ids = np.array(embeddings["item_id"].to_pylist())
    views = np.array(embeddings["view"].to_pylist())
    vectors = np.stack(embeddings["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    known = np.array([i in records for i in ids])
    ids, views, vectors = ids[known], views[known], vectors[known]

    item_ids = sorted(set(ids))
    order = np.random.default_rng(cfg.split_seed).permutation(len(item_ids))
    n_val = int(len(item_ids) * cfg.val_fraction)
    val_items = {item_ids[i] for i in order[:n_val]}
    is_val = np.array([i in val_items for i in ids])
    train_rows = np.flatnonzero(~is_val)                         # every view: extra positives
    val_rows = np.flatnonzero(is_val & (views == 0))             # evaluation on the original crops

    fields = cfg.std_fields + cfg.re_fields
    encoder = JsonEncoderConfig(**{**asdict(cfg.encoder), "fields": fields})
    vocab = AttributeVocabulary.build([records[ids[r]] for r in train_rows], cfg.std_fields, cfg.re_fields,
                                      num_buckets=cfg.num_buckets)
    sizes = {f: vocab.std.size(f) for f in cfg.std_fields} | {f: vocab.hashed.size for f in cfg.re_fields}
    _, item_label = np.unique(ids, return_inverse=True)          # views of one item share a label

    def columns(rows, row_records=None):
        row_records = row_records or [records[ids[r]] for r in rows]
        return {**featurize(vocab, row_records, encoder), "target": vectors[rows],
                "label": item_label[rows].astype(np.int64)}

    train = columns(train_rows)
    if cfg.augment.copies:  # augmented JSON copies, paired with their original's image target
        extra, sources = augment_records([records[ids[r]] for r in train_rows],
                                         [categories[ids[r]] for r in train_rows], fields, cfg.augment)
        augmented = columns(train_rows[sources], extra)
        train = {k: np.concatenate([train[k], augmented[k]]) for k in train}
    return AlignmentData(train, columns(val_rows), vocab, sizes, encoder,
                         [categories[ids[r]] for r in val_rows], [str(ids[r]) for r in val_rows],
                         [images[ids[r]] for r in val_rows], [records[ids[r]] for r in val_rows],
                         items_dir, emb_dir, pretrained,
                         len(item_ids) - n_val)


def run(cfg: TrainJsonEncoderConfig) -> dict:
    data = prepare(cfg)
    items_dir, emb_dir, pretrained, encoder, vocab = (data.items_dir, data.embeddings_dir, data.pretrained,
                                                      data.encoder, data.vocab)
    n_train, n_val = len(data.train["target"]), len(data.val["target"])
    run_dir = new_run_dir(cfg.output_root, cfg)
    print(f"train_json_encoder: {n_train} training pairs ({data.n_train_items} items), {n_val} "
          f"validation items; image targets from {emb_dir} (pretrained: {pretrained})")
    init_ray()
    started = time.perf_counter()
    fitted = fit_alignment(data.train, data.val, data.vocab_sizes, encoder, cfg.train, cfg.scaling,
                           run_dir, "json_encoder")
    vocab.save(run_dir / "checkpoints" / "vocab.json")

    val = data.val
    queries = encode_features(load_encoder(fitted["best_model"]), val)
    json_to_image = evaluate_pairs(queries, val["target"], 64)
    image_to_json = evaluate_pairs(val["target"], queries, 64)
    per_category = per_category_top1(queries, val["target"], data.val_categories)
    note = f"image encoder pretrained: {pretrained}"
    distribution = similarity_distribution(queries, val["target"], run_dir / "results" / "similarity_distribution.png",
                                           f"JSON -> image, validation ({note})")
    picks = np.random.default_rng(cfg.split_seed).choice(n_val, size=min(cfg.search_samples, n_val), replace=False)
    search_grids([json.dumps(data.val_records[i], ensure_ascii=False) for i in picks], queries[picks], val["target"],
                 data.val_images, data.val_item_ids, run_dir / "results" / "similarity_search", k=cfg.search_k,
                 relevant=[data.val_item_ids[i] for i in picks], note=note)
    central = centrality_report(val["target"], queries, data.val_categories,
                                run_dir / "results" / "centrality_per_category.png", note=f"({note})")
    write_json(run_dir / "results" / "centrality.json", central)
    summary = {"pretrained": pretrained, "image_embeddings": str(emb_dir), "items": str(items_dir),
               "n_train_pairs": int(n_train), "n_val": int(n_val),
               "train_seconds": round(time.perf_counter() - started, 1), "best_epoch": fitted["best_metrics"]["epoch"],
               "json_to_image": json_to_image, "image_to_json": image_to_json,
               "per_category_top1": per_category, "similarity_distribution": distribution,
               "centrality_queries": central["queries"]}
    write_json(run_dir / "results" / "training_results.json", {"history": fitted["history"], **summary})
    write_json(run_dir / "training_summary.json", summary)
    training_charts(fitted["history"], run_dir / "training_charts.png",
                    f"JSON encoder -> image alignment (image encoder pretrained: {pretrained})")
    write_manifest(run_dir, "train_json_encoder", {"items": str(items_dir), "image_embeddings": str(emb_dir)},
                   {"checkpoint": fitted["best_model"], "summary": str(run_dir / "training_summary.json")})
    full = json_to_image["full"]
    print(f"JSON->image (pretrained: {pretrained}): full gallery top1 {full['top1']:.3f} top5 {full['top5']:.3f} "
          f"mrr {full['mrr']:.3f}; in-batch-64 top5 {json_to_image['inbatch64']['top5']:.3f}; results in {run_dir}")
    return summary | {"run_dir": str(run_dir)}


def per_category_top1(queries: np.ndarray, targets: np.ndarray, categories: list[str]) -> dict[str, float]:
    """Full-gallery Top-1 of JSON->image queries, grouped by the item's category."""
    from recsys.metrics.retrieval import positive_ranks

    ranks = positive_ranks(queries, targets)
    out: dict[str, list[int]] = {}
    for category, rank in zip(categories, ranks):
        out.setdefault(category, []).append(int(rank == 0))
    return {c: round(float(np.mean(v)), 4) for c, v in sorted(out.items())}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], TrainJsonEncoderConfig,
                                 "configs/train_json_encoder.yaml", argv))


if __name__ == "__main__":
    run_main(main)
