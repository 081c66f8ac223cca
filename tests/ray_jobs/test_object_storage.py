"""Storage as URIs, end to end, against a real S3-compatible server (moto's standalone server on loopback,
started by tests/s3.py with authentication on): preprocess (reading labels and images from the bucket) -> embed -> train_json_encoder -> build_index
write their runs to ``s3://``, each stage finding the previous one through the LATEST pointer there,
and the Serve application loads every artifact from the bucket through its node-local cache.

The working directory is a fresh folder, so a stage that wrote to the default local ``artifacts/``
would create it there; it must not exist at the end."""
from __future__ import annotations

import os
import time
import uuid

import pyarrow.parquet as pq
import pytest
import requests

from ray_jobs.build_index import BuildIndexConfig, run as build_index
from ray_jobs.embed import EmbedConfig, run as embed
from ray_jobs.preprocess import PreprocessConfig, run as preprocess
from ray_jobs.train_json_encoder import TrainJsonEncoderConfig, run as train_json_encoder
from recsys import storage
from recsys.artifacts import CACHE_ENV, STAGING_ENV
from recsys.data.synthetic import SyntheticCorpusConfig, generate_corpus
from recsys.encoders.image import ImageEncoderConfig
from recsys.eval.json_alignment import JsonEvalConfig
from recsys.index import IndexConfig
from recsys.train_loops.alignment import AlignmentTrainConfig
from tests.s3 import BUCKET, s3_env, s3_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.ray


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A fresh working directory (where a default ``artifacts/`` would appear) and this test's own
    staging and cache folders."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "staging"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path


def test_the_chain_writes_object_storage_and_serve_loads_from_it(ray_session, s3_env, local):
    base = f"s3://{BUCKET}/chain-{uuid.uuid4().hex[:8]}"
    prefix = base.split("/", 3)[3]
    corpus = local / "corpus"
    generate_corpus(SyntheticCorpusConfig(out_dir=str(corpus), n_images=40, workers=1), progress=False)

    # The labels and images live in the bucket too (AI Hub's parallel trees), read by the tasks from there.
    storage.copy_tree(corpus / "labels", f"{base}/corpus/labels")
    storage.copy_tree(corpus / "images", f"{base}/corpus/images")
    s3_env.mark()
    pre = preprocess(PreprocessConfig(labels=f"{base}/corpus/labels", images=f"{base}/corpus/images",
                                      output_root=f"{base}/preprocess"))
    corpus_reads = {r.path for r in s3_env.object_gets(f"{prefix}/corpus/")}
    assert pre["files"]["read"] == 40 and pre["files"]["reconciles"] and pre["garments"]["reconciles"]
    assert len({p for p in corpus_reads if p.startswith(f"/{BUCKET}/{prefix}/corpus/labels/")}) == 40
    assert pre["run_dir"].startswith(f"{base}/preprocess/") and storage.latest_run(f"{base}/preprocess") == pre["run_dir"]
    items = pq.read_table(**storage.arrow_args(pre["outputs"]["items"], "source"))
    n_items = pre["garments"]["written"]
    assert items.num_rows == n_items > 0
    # crops were written by the Ray Data workers straight into the bucket
    crops = items["crop_path"].to_pylist()
    assert all(c.startswith(f"{pre['run_dir']}/crops/") for c in crops) and storage.is_file(crops[0])
    # every item's image was read from the bucket by the tasks
    images = set(items["image_path"].to_pylist())
    assert all(i.startswith(f"{base}/corpus/images/") for i in images)
    assert {i.replace("s3://", "/", 1) for i in images} <= corpus_reads

    s3_env.mark()
    emb = embed(EmbedConfig(preprocess_root=f"{base}/preprocess", output_root=f"{base}/embed",
                            image=ImageEncoderConfig(batch_size=16), batch_size=16, text_sources=["title"]))
    assert emb["items_dir"] == pre["outputs"]["items"] and emb["image"]["vectors"] == n_items
    assert emb["image"]["unreadable"] == 0
    # the actors read every crop from the server (each object at least once)
    read = {r.path for r in s3_env.object_gets(f"{prefix}/preprocess/")}
    assert {c.replace("s3://", "/", 1) for c in crops} <= read

    stage2 = train_json_encoder(TrainJsonEncoderConfig(
        preprocess_root=f"{base}/preprocess", embed_root=f"{base}/embed", output_root=f"{base}/train_json_encoder",
        train=AlignmentTrainConfig(epochs=2, batch_size=16), evaluation=JsonEvalConfig(search_k=5, search_samples=2)))
    json_run = stage2["run_dir"]
    assert json_run.startswith(f"{base}/train_json_encoder/") and stage2["items"] == pre["outputs"]["items"]
    manifest = storage.read_json(storage.join(json_run, "manifest.json"))
    assert manifest["inputs"]["image_embeddings"] == f"{emb['run_dir']}/image_embeddings"
    assert manifest["outputs"]["checkpoint"] == f"{json_run}/checkpoints/best_model.pt"
    for name in ("checkpoints/best_model.pt", "checkpoints/vocab.json", "training_summary.json",
                 "results/similarity_search/results.json", "_content.json"):
        assert storage.is_file(storage.join(json_run, name)), name
    # Ray Train kept its checkpoints in the bucket too (storage_filesystem), not on this node
    assert storage.is_dir(storage.join(json_run, "ray_results"))

    index = build_index(BuildIndexConfig(vectors_root=f"{base}/embed", vectors_file="image_embeddings",
                                         view_column="view", output_root=f"{base}/index",
                                         index=IndexConfig(kind="exact"), recall_queries=20))
    assert index["vectors"]["reconciles"] and index["index"]["n_items"] == n_items
    assert storage.read_json(storage.join(index["run_dir"], "manifest.json"))["inputs"]["vectors"] == \
        f"{emb['run_dir']}/image_embeddings"

    s3_env.mark()
    answers = _serve_from(base, local, s3_env.env())
    assert answers["health"]["json_encoder_run"] == storage.name(json_run)
    assert answers["health"]["index_run"] == storage.name(index["run_dir"])
    assert answers["search"]["model"]["json_encoder_run"] == storage.name(json_run)
    assert len(answers["search"]["results"]) == 3 and answers["image_bytes"] > 0
    served = {r.path for r in s3_env.object_gets(prefix)}
    for wanted in (f"{json_run}/checkpoints/best_model.pt", f"{emb['run_dir']}/image_embeddings",
                   f"{index['run_dir']}/index.faiss", f"{pre['run_dir']}/crops/"):
        assert any(path.startswith(wanted.replace("s3://", "/", 1)) for path in served), wanted
    # replicas copied the runs into the node-local cache (no crops, no Ray Train folders)
    assert list((local / "serve_cache").rglob("best_model.pt"))
    assert not list((local / "serve_cache").rglob("ray_results")) and not list((local / "serve_cache").rglob("crops"))

    # nothing on this node's disk but caches: no artifacts/ folder, staging folders removed after upload
    assert not (local / "artifacts").exists()
    assert not list((local / "staging").iterdir())


def _serve_from(base: str, local, aws_env: dict) -> dict:
    """Deploy the app with every artifact root in the bucket; its replicas get the same S3 settings."""
    from ray import serve

    from bench.ports import free_port
    from serve_app.config import ArtifactSettings, SearchSettings, ServeAppConfig, ServeIndexSettings
    from tests.serve_app import running

    config = ServeAppConfig(
        artifacts=ArtifactSettings(preprocess_root=f"{base}/preprocess", embed_root=f"{base}/embed",
                                   json_encoder_root=f"{base}/train_json_encoder", index_root=f"{base}/index",
                                   users_root=f"{base}/train_users", item_tower_root=f"{base}/item_tower",
                                   persona_root=f"{base}/persona"),
        state_dir=str(local / "state"), search=SearchSettings(default_k=3, max_k=10, candidates=20),
        index=ServeIndexSettings(cache_dir=str(local / "serve_cache")))
    app = running.serve_config(config)
    app["applications"][0]["runtime_env"]["env_vars"].update(aws_env)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        running.deploy(app)
        url = f"http://127.0.0.1:{port}"
        running.wait_healthy(url)
        health = requests.get(f"{url}/healthz", timeout=10).json()
        response = requests.post(f"{url}/api/search", json={"attributes": {"category": "블라우스"}, "k": 3}, timeout=30)
        assert response.status_code == 200, response.text
        search = response.json()
        image = requests.get(url + search["results"][0]["item"]["image_url"], timeout=10)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        return {"health": health["deployments"]["recommender"]["version"], "search": search,
                "image_bytes": len(image.content)}
    finally:
        serve.delete(running.APP)
        serve.shutdown()


def test_a_wrong_bucket_or_key_fails_before_any_work(ray_session, s3_env, local, monkeypatch):
    corpus = local / "corpus"
    generate_corpus(SyntheticCorpusConfig(out_dir=str(corpus), n_images=2, workers=1), progress=False)
    config = PreprocessConfig(labels=str(corpus / "labels"), images=str(corpus / "images"),
                              output_root="s3://no-such-bucket/preprocess")
    started = time.perf_counter()
    with pytest.raises(storage.StorageError, match="s3://no-such-bucket/preprocess: bucket 'no-such-bucket' does not exist"):
        preprocess(config)
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(storage.StorageError, match=f"s3://{BUCKET}/preprocess: not reachable or not authorised"):
        preprocess(PreprocessConfig(labels=config.labels, images=config.images, output_root=f"s3://{BUCKET}/preprocess"))
    # labels on object storage: the wrong secret fails at once, naming the labels' URI; so does a missing prefix
    with pytest.raises(storage.StorageError, match=f"s3://{BUCKET}/labels: not reachable or not authorised"):
        preprocess(PreprocessConfig(labels=f"s3://{BUCKET}/labels", output_root=str(local / "out")))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises((storage.StorageError, FileNotFoundError), match=f"s3://{BUCKET}/no-labels-here"):
        preprocess(PreprocessConfig(labels=f"s3://{BUCKET}/no-labels-here", output_root=str(local / "out")))
    with pytest.raises((storage.StorageError, FileNotFoundError), match=f"s3://{BUCKET}/no-images-here"):
        preprocess(PreprocessConfig(labels=config.labels, images=f"s3://{BUCKET}/no-images-here",
                                    output_root=str(local / "out")))
    assert time.perf_counter() - started < 30
    assert not (local / "out").exists()
    assert not (local / "staging").exists() or not list((local / "staging").iterdir())
