"""The JSON encoder's training data: K-Fashion items + their image embeddings -> featurized
(JSON, image vector) pairs split by item, and the stage config that names them.

Used by ``ray_jobs.train_json_encoder`` (stage 1 and 2), ``ray_jobs.tune`` (the sweep's data) and
``ray_jobs.evaluate_json_encoder`` (the run's validation split, rebuilt with its saved vocabulary).
Stage 1 (``train.objective: json_views``) sees each item's JSON once and labels rows by distinct
JSON; stage 2 (``align``) pairs every image view of a training item with its JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from recsys import storage
from recsys.artifacts import latest_run, local_copy, location_of
from recsys.augment import JsonAugmentConfig, augment_records, vocabulary_records
from recsys.config import ConfigError
from recsys.data.schema import attributes_to_dict
from recsys.data.vectors import column_matrix
from recsys.eval.json_alignment import JsonEvalConfig, evaluate_json_encoder
from recsys.models.json_encoder import (CHECKPOINT_FILE, VOCAB_FILE, JsonEncoder, JsonEncoderConfig, encode_features,
                                        encoder_config, featurize, has_json_encoder, json_encoder_files)
from recsys.models.registry import named_config
from recsys.train_loops.alignment import AlignmentTrainConfig
from recsys.train_loops.scaling import ScalingSettings
from recsys.vocab import AttributeVocabulary


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
    encoder: JsonEncoderConfig | str = field(default_factory=JsonEncoderConfig)  # or a configs/models.yaml name
    train: AlignmentTrainConfig = field(default_factory=AlignmentTrainConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    augment: JsonAugmentConfig = field(default_factory=JsonAugmentConfig)
    evaluation: JsonEvalConfig = field(default_factory=JsonEvalConfig)
    val_fraction: float = 0.2      # items held out and reported (evaluated once, after training)
    selection_fraction: float = 0.1  # items carved from training to pick the best epoch (and sweep trials)
    split_seed: int = 42
    init_from: str | None = None  # stage-1 run directory, or "latest" (newest run under pretrain_root)
    pretrain_root: str = "artifacts/pretrain_json_encoder"

    def __post_init__(self):
        self.encoder = named_config(self.encoder, JsonEncoderConfig, "json_encoder")  # a configs/models.yaml name, or the block
        if not (0 < self.val_fraction and 0 < self.selection_fraction and self.val_fraction + self.selection_fraction < 1):
            raise ConfigError(f"val_fraction {self.val_fraction} and selection_fraction {self.selection_fraction}: "
                              f"expected both > 0 with a sum below 1 (the rest trains)")


def resolve_init(cfg: TrainJsonEncoderConfig) -> tuple[str | None, AttributeVocabulary | None, JsonEncoderConfig | None]:
    """Stage-1 weights, vocabulary and encoder architecture named by ``init_from`` (or Nones)."""
    if not cfg.init_from:
        return None, None, None
    run_dir = latest_run(cfg.pretrain_root) if cfg.init_from == "latest" else local_copy(cfg.init_from)
    state_path, vocab_path = json_encoder_files(run_dir)
    if not has_json_encoder(run_dir):
        raise ConfigError(f"init_from: {run_dir} has no {CHECKPOINT_FILE} and {VOCAB_FILE} "
                          f"(expected a stage-1 train_json_encoder run)")
    encoder = encoder_config(state_path)
    fields = cfg.std_fields + cfg.re_fields
    if encoder.fields != fields:
        raise ConfigError(f"init_from: stage-1 encoder in {run_dir} uses fields {encoder.fields}, "
                          f"this config {fields}")
    # Workers run elsewhere: they load the weights from where the run lives (a URI, or the shared mount).
    return location_of(state_path.resolve()), AttributeVocabulary.load(vocab_path), encoder


def item_records(items) -> dict[str, dict]:
    """item_id -> {field: value(s)}: STD and RE attributes plus the style labels as ``style``."""
    out = {}
    for row in items.to_pylist():
        record = {**attributes_to_dict(row["std_attributes"]), **attributes_to_dict(row["re_attributes"])}
        record["style"] = row["styles"]
        out[row["item_id"]] = record
    return out


def load_inputs(cfg: TrainJsonEncoderConfig):
    """(items dir, embeddings dir, items table, valid embedding rows, the image encoder's weights label)."""
    items_dir = local_copy(cfg.items) if cfg.items else latest_run(cfg.preprocess_root) / "items"
    emb_dir = local_copy(cfg.embeddings) if cfg.embeddings else latest_run(cfg.embed_root) / "image_embeddings"
    items = pq.read_table(items_dir, columns=["item_id", "category_path", "std_attributes", "re_attributes", "styles",
                                            "crop_path", "image_path"])
    embeddings = pq.read_table(emb_dir)
    embeddings = embeddings.filter(embeddings["vector"].is_valid())
    report_path = storage.join(storage.parent(location_of(emb_dir)), "embed_report.json")  # beside the original
    pretrained = storage.read_json(report_path)["pretrained"] if storage.is_file(report_path) else "unknown"
    return items_dir, emb_dir, items, embeddings, pretrained


@dataclass
class AlignmentData:
    """Featurized pairs and everything needed to build and report the encoder: ``train``; ``select``
    (items carved from training: the best epoch and sweep trials are chosen on them); ``val`` (the
    held-out items every report is about, never used for a choice)."""
    train: dict
    select: dict
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

    @property
    def note(self) -> str:
        """What every plot and report says about the image targets."""
        return f"image encoder pretrained: {self.pretrained}"

    def evaluate(self, encoder: JsonEncoder, out_dir: Path, evaluation: JsonEvalConfig) -> dict:
        """The report of ``recsys.eval.json_alignment`` for ``encoder`` on the validation items."""
        return evaluate_json_encoder(encode_features(encoder, self.val), self.val["target"], self.val_categories,
                                     self.val_item_ids, self.val_images, self.val_records, out_dir, evaluation,
                                     self.note)


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
    vectors = column_matrix(embeddings)
    known = np.array([i in records for i in ids])
    ids, views, vectors = ids[known], views[known], vectors[known]

    item_ids = sorted(set(ids))
    order = np.random.default_rng(cfg.split_seed).permutation(len(item_ids))
    n_val, n_select = int(len(item_ids) * cfg.val_fraction), max(1, int(len(item_ids) * cfg.selection_fraction))
    val_items = {item_ids[i] for i in order[:n_val]}             # the same held-out items whatever selection_fraction
    select_items = {item_ids[i] for i in order[n_val:n_val + n_select]}
    is_val = np.array([i in val_items for i in ids])
    is_select = np.array([i in select_items for i in ids])
    train_rows = np.flatnonzero(~is_val & ~is_select)            # every view: extra positives
    val_rows = np.flatnonzero(is_val & (views == 0))             # evaluation on the original crops
    select_rows = np.flatnonzero(is_select & (views == 0))
    json_only = cfg.train.objective == "json_views"
    if json_only:  # stage 1 sees each item's JSON once; image views would only repeat it
        train_rows = train_rows[views[train_rows] == 0]

    fields = cfg.std_fields + cfg.re_fields
    encoder = encoder or JsonEncoderConfig(**{**asdict(cfg.encoder), "fields": fields})
    # Built over the synonyms augmentation may write too: else a swapped STD value would be UNKNOWN.
    vocab = vocab or AttributeVocabulary.build(vocabulary_records([records[ids[r]] for r in train_rows], cfg.std_fields,
                                                                  cfg.augment), cfg.std_fields,
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
    return AlignmentData(train, columns(select_rows), columns(val_rows), vocab, sizes, encoder,
                         [categories[ids[r]] for r in val_rows], [str(ids[r]) for r in val_rows],
                         [images[ids[r]] for r in val_rows], [records[ids[r]] for r in val_rows],
                         items_dir, emb_dir, pretrained,
                         len(item_ids) - n_val - n_select)
