"""Serving building blocks without Ray: MMR against a hand computation, the durable item log,
attribute validation, upload checks, the exact index with tombstones, error unwrapping."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recsys.models.json_encoder import JsonEncoderConfig
from recsys.vocab import AttributeVocabulary
from serve_app.attributes import validate_attributes
from serve_app.config import ConfigError, ServeAppConfig, UploadLimits, config_from_args, load_serve_yaml
from recsys.models.rerankers import mmr_with_gains
from serve_app.errors import InputError, NotFound, app_error_of
from recsys.stores.item_log import FileItemLog
from serve_app.uploads import decode_image

SERVE_YAML = Path(__file__).resolve().parents[2] / "configs" / "serve.yaml"


def test_mmr_matches_a_hand_computation():
    vectors = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = np.array([0.9, 0.85, 0.5])
    order, gains = mmr_with_gains(relevance, vectors, 0.5, k=3)
    # step 1: max 0.5*rel -> item 0 (0.45). step 2: item 1: 0.425 - 0.5*0.99 = -0.07; item 2: 0.25 - 0 = 0.25
    assert order.tolist() == [0, 2, 1]
    assert gains[0] == pytest.approx(0.45) and gains[1] == pytest.approx(0.25)
    plain, _ = mmr_with_gains(relevance, vectors, 1.0, k=3)
    assert plain.tolist() == [0, 1, 2]
    assert mmr_with_gains(relevance, vectors, 0.5, k=0)[0].tolist() == []
    # what Serve runs (search and users alike): relevance min-max scaled to [0, 1] first:
    # (0.9, 0.85, 0.5) -> (1, 0.875, 0); step 2: item 1: 0.4375 - 0.495 = -0.0575, item 2: 0 - 0 = 0
    order, gains = mmr_with_gains(relevance, vectors, 0.5, k=3, normalize=True)
    assert order.tolist() == [0, 2, 1] and gains[:2].tolist() == pytest.approx([0.5, 0.0])
    equal, _ = mmr_with_gains(np.array([5.0, 5.0, 5.0]), vectors, 0.5, k=3, normalize=True)
    assert equal.tolist() == [0, 2, 1]  # all equal: scaled to 1, then novelty alone decides


def test_item_store_replays_in_order_and_skips_a_torn_line(tmp_path):
    store = FileItemLog(tmp_path)
    vector = np.arange(4, dtype=np.float32)
    store.add({"item_id": "a"}, vector, None)
    store.delete("a")
    store.add({"item_id": "b"}, vector * 2, vector)
    with open(store.log_path, "ab") as handle:      # a crash mid-append
        handle.write(b'{"op": "add", "item": {"item_i')
    operations, offset = store.read_since(0)
    assert [o["op"] for o in operations] == ["add", "delete", "add"]
    assert np.array_equal(operations[2]["vector"], vector * 2) and np.array_equal(operations[2]["text_vector"], vector)
    store.delete("b")                                # isolates the torn line, then appends
    later, _ = store.read_since(offset)
    assert [o.get("item_id") for o in later] == ["b"]
    relative = store.save_image("x/../../etc", b"bytes", "JPG")
    assert relative.startswith("images/") and ".." not in relative and store.image_path(relative).read_bytes() == b"bytes"


def _version(tmp_path, n=6, dim=8):
    """Minimal served artifacts: items parquet + image embeddings (unit vectors, one per item)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.data.schema import ITEM_SCHEMA, attributes, table_from_rows

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"item_id": f"i{k}", "source": "test", "category": "블라우스" if k % 2 else "드레스",
             "category_path": ["상의"], "std_attributes": attributes({"color": ["레드" if k < 3 else "블루"]}),
             "styles": ["로맨틱"], "crop_path": f"/nowhere/i{k}.jpg"} for k in range(n)]
    (tmp_path / "items").mkdir()
    pq.write_table(table_from_rows(rows, ITEM_SCHEMA), tmp_path / "items" / "part-0.parquet")
    (tmp_path / "embed" / "image_embeddings").mkdir(parents=True)
    pq.write_table(pa.table({"item_id": [r["item_id"] for r in rows], "view": pa.array([0] * n, pa.int16()),
                             "vector": pa.array(list(vectors), pa.list_(pa.float32(), dim))}),
                   tmp_path / "embed" / "image_embeddings" / "part-0.parquet")
    return {"items": str(tmp_path / "items"), "embed_run": str(tmp_path / "embed"),
            "json_encoder_run": str(tmp_path / "json")}, vectors


def test_catalog_search_exclusion_and_changes_shared_through_the_store(tmp_path):
    from serve_app.catalog import Catalog, trends

    version, vectors = _version(tmp_path)
    store = FileItemLog(tmp_path / "state")
    first, second = Catalog(version, store, None), Catalog(version, store, None)  # two replicas
    ids, scores, found = first.search(vectors[0], None, 3, 0.0)
    assert ids[0] == "i0" and scores[0] == pytest.approx(1.0) and np.allclose(found[0], vectors[0])
    ids, _, _ = first.search(vectors[0], None, 3, 0.0, exclude_ids=["i0"])
    assert "i0" not in ids and len(ids) == 3
    new_vector = -vectors[1]
    store.add({"item_id": "n1", "category": "드레스", "attributes": {"color": ["블루"]}, "styles": [], "new": True,
               "source": "api", "image": "images/x.jpg"}, new_vector, None)
    store.delete("i1")
    assert second.sync() == 2 and first.sync() == 2
    for catalog in (first, second):
        ids, _, _ = catalog.search(new_vector, None, 10, 0.0)
        assert ids[0] == "n1" and "i1" not in ids and len(ids) == 6
        assert catalog.live_ids(new=True) == ["n1"] and catalog.get("i1") is None
    only_new, _, _ = first.search(vectors[0], None, 5, 0.0, only_ids=["n1", "i1"])
    assert only_new == ["n1"]
    best = first.best_sellers(0.4)
    assert len(best) == 2 and "n1" not in best  # new products are never best sellers
    set_ids, set_scores, _ = first.search_set(vectors[[2, 3]], 2, exclude_ids=["i2", "i3"])
    assert "i2" not in set_ids and set_scores[0] >= set_scores[1]
    rows = trends([first.get("i0"), first.get("i2")], [first.get("n1")])
    assert rows["color"] == [{"value": "레드", "best_sellers": 2, "share": 1.0, "new_products_matching": 0}]
    # a restart replays the log into a fresh catalog: same state
    again = Catalog(version, FileItemLog(tmp_path / "state"), None)
    assert again.get("n1") is not None and again.get("i1") is None and again.counts()["items"] == 6


def _vocab():
    records = [{"category": "블라우스", "style": ["로맨틱"], "material": ["시폰"]}]
    return AttributeVocabulary.build(records, ["category", "style"], ["material"], num_buckets=16)


ENCODER = JsonEncoderConfig(fields=["category", "style", "material"], multi_fields=["style", "material"], max_values=3)


def test_attribute_validation_names_fields_and_reports_unknown_values():
    record, unknown = validate_attributes({"category": "드레스", "style": ["로맨틱", "펑크"], "material": "니트"},
                                          ENCODER, _vocab())
    assert record == {"category": ["드레스"], "style": ["로맨틱", "펑크"], "material": ["니트"]}
    assert unknown == {"category": ["드레스"], "style": ["펑크"]}  # material is hashed: never unknown
    for bad, field in [({"colour": "red"}, "attributes.colour"), ({"category": 1}, "attributes.category"),
                       ({"category": ["a", "b"]}, "attributes.category"), ({"style": [None]}, "attributes.style"),
                       ({"style": ["a"] * 4}, "attributes.style"), ({"category": " "}, "attributes.category"),
                       (["category"], "attributes")]:
        with pytest.raises(InputError) as caught:
            validate_attributes(bad, ENCODER, _vocab())
        assert caught.value.field == field and field.split(".")[-1] in str(caught.value)


def _png(size, mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format="PNG")
    return out.getvalue()


def test_upload_checks():
    limits = UploadLimits(max_bytes=50_000, max_pixels=10_000)
    image, fmt = decode_image(_png((50, 40)), limits)
    assert image.size == (50, 40) and image.mode == "RGB" and fmt == "PNG"
    for data, status, code in [(b"", 400, "empty_upload"), (b"x" * 60_000, 413, "upload_too_large"),
                               (b"hello", 415, "not_an_image"), (_png((200, 200), "1"), 413, "too_many_pixels"),
                               (_png((50, 40))[:60], 415, "corrupt_image")]:
        with pytest.raises(InputError) as caught:
            decode_image(data, limits)
        assert (caught.value.status, caught.value.code) == (status, code)
    tiff = io.BytesIO()
    Image.new("RGB", (4, 4)).save(tiff, format="TIFF")
    with pytest.raises(InputError) as caught:
        decode_image(tiff.getvalue(), limits)
    assert caught.value.status == 415


def test_errors_survive_pickling_and_unwrap():
    error = pickle.loads(pickle.dumps(NotFound("item 'x' does not exist", field="item_id")))
    assert (error.status, error.code, error.field, str(error)) == (404, "not_found", "item_id", "item 'x' does not exist")

    class Wrapper(Exception):
        def __init__(self, cause):
            self.cause = cause

    assert app_error_of(Wrapper(error)) is error and app_error_of(ValueError("x")) is None


def test_serve_yaml_is_a_valid_serve_config_and_app_config():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(SERVE_YAML.read_text()))
    config, deployments = load_serve_yaml(SERVE_YAML)
    assert isinstance(config, ServeAppConfig)
    assert set(deployments) == {"FashionRecIngress", "ImageEmbedder", "Recommender"}
    for options in deployments.values():
        assert {"min_replicas", "max_replicas", "target_ongoing_requests"} <= set(options["autoscaling_config"])
        assert options["max_ongoing_requests"] >= 1
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_args({"serch": {}})
    with pytest.raises(ConfigError, match="mmr_lambda"):
        config_from_args({"reranker": {"mmr_lambda": 3}})
    with pytest.raises(ConfigError, match="reranker.name"):
        config_from_args({"reranker": {"name": "deepfm"}})
    with pytest.raises(ConfigError, match="users.mmr_lambda"):
        config_from_args({"users": {"mmr_lambda": -0.1}})
    assert config.reranker.name == "auto" and config.artifacts.users_root == "artifacts/train_users"


def test_reciprocal_rank_fusion_by_hand():
    from recsys.retrieval.recommender import reciprocal_rank_fusion

    ranks = {"a": np.array([0, 1, 5]), "b": np.array([3, 0, 0])}
    proposed = {"a": np.array([True, True, False]), "b": np.array([False, True, True])}
    fused = reciprocal_rank_fusion(ranks, proposed, k=60)
    assert fused.tolist() == pytest.approx([1 / 60, 1 / 61 + 1 / 60, 1 / 60])


def test_a_reranker_that_lost_to_rank_fusion_is_not_served(built, config, tmp_path):
    """train_users records which order won on its selection lists; Serve follows it."""
    import json
    import shutil

    from serve_app.components.reranker import Reranker

    assert Reranker(config, {"users_run": str(built["users"])}).learned is not None   # written without a choice
    lost = tmp_path / "users-lost"
    shutil.copytree(built["users"], lost)
    saved = json.loads((lost / "reranker" / "reranker.json").read_text())
    saved["served_order"] = {"order": "rank_fusion", "reason": "selection lists HR@10+NDCG@10 of the learned "
                                                               "ranker 0.1000 < rank_fusion 0.2000"}
    (lost / "reranker" / "reranker.json").write_text(json.dumps(saved))
    reranker = Reranker(config, {"users_run": str(lost)})
    assert reranker.learned is None
    candidates = {"items": [{"item_id": "a"}, {"item_id": "b"}], "scores": np.array([0.2, 0.9], np.float32),
                  "vectors": np.eye(2, dtype=np.float32)}
    out = reranker.rerank_user(candidates, [], k=2, mmr_lambda=1.0)
    assert out["order"].tolist() == [1, 0] and out["reranker"]["learned"] is False
    assert "lost to rank fusion" in out["reranker"]["description"] and "0.1000 < rank_fusion" in out["reranker"]["description"]
