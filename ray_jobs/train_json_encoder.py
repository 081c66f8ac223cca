"""Train the attribute-JSON encoder on K-Fashion items (Ray Train), in two stages with two configs.

    python -m ray_jobs.train_json_encoder --config configs/pretrain_json_encoder.yaml   # stage 1
    python -m ray_jobs.train_json_encoder --config configs/train_json_encoder.yaml      # stage 2

Stage 1 (``train.objective: json_views``) pretrains the encoder on JSON alone: two field-dropout
views of one item are positives. Stage 2 (``align``) aligns it to frozen image embeddings of the
garment crops, starting from stage 1's weights and vocabulary when ``init_from`` names that run
(``latest``: the newest run under ``pretrain_root``). Augmented image views, when embedded, are
extra positives of their item.

Inputs: canonical items (latest preprocess run) and their image embeddings (latest embed run).
Output run directory: checkpoints/best_model.pt + vocab.json, results/training_results.json,
training_summary.json, training_charts.png and, for stage 2, the evaluation of
``recsys.eval.json_alignment`` under results/ (JSON->image and image->JSON, full gallery and
in-batch-64, per category, similarity search grids, centrality), every plot and report naming the
image encoder's weights (``pretrained: none (stand-in)`` for the offline default).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from recsys.augment import JsonAugmentConfig, augment_records
from recsys.artifacts import latest_run, new_run_dir, write_json, write_manifest
from recsys.config import ConfigError
from recsys.data.schema import attributes_to_dict
from recsys.eval.json_alignment import JsonEvalConfig, evaluate_json_encoder
from recsys.models.json_encoder import JsonEncoderConfig, featurize
from recsys.plots import training_charts
from recsys.train_loops.alignment import AlignmentTrainConfig, encode_features, load_encoder
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
    run_name: str | None = None   # fixed run directory name: re-running it resumes from its checkpoints
    std_fields: list[str] = field(default_factory=lambda: ["category", "style", "silhouette"])
    re_fields: list[str] = field(default_factory=lambda: ["material", "detail"])
    num_buckets: int = 4096
    encoder: JsonEncoderConfig = field(default_factory=JsonEncoderConfig)
    train: AlignmentTrainConfig = field(default_factory=AlignmentTrainConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    augment: JsonAugmentConfig = field(default_factory=JsonAugmentConfig)
    evaluation: JsonEvalConfig = field(default_factory=JsonEvalConfig)
    val_fraction: float = 0.2
    split_seed: int = 42
    init_from: str | None = None  # stage-1 run directory, or "latest" (newest run under pretrain_root)
    pretrain_root: str = "artifacts/pretrain_json_encoder"


def resolve_init(cfg: TrainJsonEncoderConfig) -> tuple[str | None, AttributeVocabulary | None, JsonEncoderConfig | None]:
    """Stage-1 weights, vocabulary and encoder architecture named by ``init_from`` (or Nones)."""
    if not cfg.init_from:
        return None, None, None
    run_dir = latest_run(cfg.pretrain_root) if cfg.init_from == "latest" else Path(cfg.init_from)
    state_path, vocab_path = run_dir / "checkpoints" / "best_model.pt", run_dir / "checkpoints" / "vocab.json"
    if not (state_path.is_file() and vocab_path.is_file()):
        raise ConfigError(f"init_from: {run_dir} has no checkpoints/best_model.pt and vocab.json "
                          f"(expected a stage-1 train_json_encoder run)")
    encoder = JsonEncoderConfig(**torch.load(state_path, map_location="cpu", weights_only=True)["encoder"])
    fields = cfg.std_fields + cfg.re_fields
    if encoder.fields != fields:
        raise ConfigError(f"init_from: stage-1 encoder in {run_dir} uses fields {encoder.fields}, "
                          f"this config {fields}")
    return str(state_path.resolve()), AttributeVocabulary.load(vocab_path), encoder  # workers run elsewhere


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


def json_labels(features: dict[str, np.ndarray]) -> np.ndarray:
    """One label per distinct featurized JSON, so identical records are never each other's negatives."""
    rows = np.concatenate([v.reshape(len(v), -1).astype(np.int64) for k, v in sorted(features.items())
                           if k.startswith("ids/")], axis=1)
    return np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def prepare(cfg: TrainJsonEncoderConfig, vocab: AttributeVocabulary | None = None,
            encoder: JsonEncoderConfig | None = None) -> AlignmentData:
    """Items + image embeddings -> featurized pairs, split by item (all views of an item together).
    ``vocab``/``encoder`` (from a stage-1 or trained run) replace building them from this data."""
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
    json_only = cfg.train.objective == "json_views"
    if json_only:  # stage 1 sees each item's JSON once; image views would only repeat it
        train_rows = train_rows[views[train_rows] == 0]

    fields = cfg.std_fields + cfg.re_fields
    encoder = encoder or JsonEncoderConfig(**{**asdict(cfg.encoder), "fields": fields})
    vocab = vocab or AttributeVocabulary.build([records[ids[r]] for r in train_rows], cfg.std_fields,
                                               cfg.re_fields, num_buckets=cfg.num_buckets)
    sizes = {f: vocab.std.size(f) for f in cfg.std_fields} | {f: vocab.hashed.size for f in cfg.re_fields}
    _, item_label = np.unique(ids, return_inverse=True)          # views of one item share a label

    def columns(rows, row_records=None):
        row_records = row_records or [records[ids[r]] for r in rows]
        features = featurize(vocab, row_records, encoder)
        labels = json_labels(features) if json_only else item_label[rows].astype(np.int64)
        return {**features, "target": vectors[rows], "label": labels}

    train = columns(train_rows)
    if cfg.augment.copies:  # augmented JSON copies, paired with their original's image target
        extra, sources = augment_records([records[ids[r]] for r in train_rows],
                                         [categories[ids[r]] for r in train_rows], fields, cfg.augment)
        augmented = columns(train_rows[sources], extra)
        train = {k: np.concatenate([train[k], augmented[k]]) for k in train}
        if json_only:  # labels were per block; recompute over the union
            train["label"] = json_labels(train)
    return AlignmentData(train, columns(val_rows), vocab, sizes, encoder,
                         [categories[ids[r]] for r in val_rows], [str(ids[r]) for r in val_rows],
                         [images[ids[r]] for r in val_rows], [records[ids[r]] for r in val_rows],
                         items_dir, emb_dir, pretrained,
                         len(item_ids) - n_val)


def run(cfg: TrainJsonEncoderConfig) -> dict:
    init_model, vocab, encoder = resolve_init(cfg)
    data = prepare(cfg, vocab, encoder)
    stage = "stage 1: JSON-view pretraining" if cfg.train.objective == "json_views" else "stage 2: alignment to images"
    n_train, n_val = len(data.train["target"]), len(data.val["target"])
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    print(f"train_json_encoder ({stage}): {n_train} training rows ({data.n_train_items} items), {n_val} "
          f"validation items; image embeddings from {data.embeddings_dir} (pretrained: {data.pretrained})"
          + (f"; initialised from {init_model}" if init_model else ""))
    init_ray()
    started = time.perf_counter()
    fitted = fit_alignment(data.train, data.val, data.vocab_sizes, data.encoder, cfg.train, cfg.scaling,
                           run_dir, "json_encoder", init_model=init_model)
    data.vocab.save(run_dir / "checkpoints" / "vocab.json")
    summary = {"stage": stage, "objective": cfg.train.objective, "init_from": init_model,
               "pretrained": data.pretrained, "image_embeddings": str(data.embeddings_dir),
               "items": str(data.items_dir), "n_train_rows": int(n_train), "n_val": int(n_val),
               "train_seconds": round(time.perf_counter() - started, 1), "best_epoch": fitted["best_metrics"]["epoch"]}
    if cfg.train.objective == "json_views":
        best = fitted["best_metrics"]
        summary["json_view_retrieval"] = {k: best[f"val_{k}"] for k in ("top1", "top5", "top10", "mrr")}
        chart_title = "JSON encoder stage 1: a field-dropped view finds its full JSON (validation)"
    else:
        note = f"image encoder pretrained: {data.pretrained}"
        queries = encode_features(load_encoder(fitted["best_model"]), data.val)
        summary |= evaluate_json_encoder(queries, data.val["target"], data.val_categories, data.val_item_ids,
                                         data.val_images, data.val_records, run_dir / "results",
                                         cfg.evaluation, note)
        chart_title = f"JSON encoder -> image alignment ({note})"
    write_json(run_dir / "results" / "training_results.json", {"history": fitted["history"], **summary})
    write_json(run_dir / "training_summary.json", summary)
    training_charts(fitted["history"], run_dir / "training_charts.png", chart_title)
    write_manifest(run_dir, "train_json_encoder",
                   {"items": str(data.items_dir), "image_embeddings": str(data.embeddings_dir),
                    **({"init_model": init_model} if init_model else {})},
                   {"checkpoint": fitted["best_model"], "summary": str(run_dir / "training_summary.json")})
    if "json_to_image" in summary:
        full = summary["json_to_image"]["full"]
        print(f"JSON->image (pretrained: {data.pretrained}): full gallery top1 {full['top1']:.3f} top5 "
              f"{full['top5']:.3f} mrr {full['mrr']:.3f}; in-batch-64 top5 "
              f"{summary['json_to_image']['inbatch64']['top5']:.3f}; results in {run_dir}")
    else:
        view = summary["json_view_retrieval"]
        print(f"stage 1 done: dropped view -> full JSON top1 {view['top1']:.3f} top5 {view['top5']:.3f} "
              f"(validation); weights in {fitted['best_model']}")
    return summary | {"run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], TrainJsonEncoderConfig,
                                 "configs/train_json_encoder.yaml", argv))


if __name__ == "__main__":
    run_main(main)
