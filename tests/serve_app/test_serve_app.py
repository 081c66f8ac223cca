"""The FashionRec Serve application for real: Ray Serve on the session's Ray, HTTP on loopback.

One application (ingress, Recommender, ImageEmbedder; fixtures in conftest.py) serves a tiny artifact
set built in a temp dir; the tests run in file order against it: every endpoint, every kind of bad
input, item changes surviving an application restart, and a move to another version through Serve's
user_config under 16 concurrent clients.
"""
from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from tests.serve_app import artifacts as test_artifacts
from tests.serve_app.running import ADMIN, APP, start as _start, wait_healthy as _wait_healthy
from recsys.encoders.handcrafted import HAND_CRAFTED_LABEL

pytestmark = pytest.mark.ray


def _jpeg(color=(200, 30, 30), size=(64, 96)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="JPEG")
    return out.getvalue()


def _search(url, body, expect=200):
    response = requests.post(f"{url}/api/search", json=body, timeout=30)
    assert response.status_code == expect, response.text
    return response.json()


def test_health_and_openapi(url):
    health = requests.get(f"{url}/healthz", timeout=10).json()
    assert health["status"] == "ok"
    assert set(health["deployments"]) == {"image_embedder", "recommender"}
    assert health["deployments"]["image_embedder"]["pretrained"] == HAND_CRAFTED_LABEL
    recommender = health["deployments"]["recommender"]
    assert recommender["version"]["json_encoder_run"] == "json-v1" and recommender["catalog"]["ok"]
    spec = requests.get(f"{url}/openapi.json", timeout=10).json()
    for path in ("/api/search", "/api/similar/{item_id}", "/api/recommend/customer_input",
                 "/api/recommend/top10_to_new", "/api/items", "/api/items/{item_id}", "/api/kpi", "/healthz",
                 "/images/{item_id}", "/api/recommend/user/{user_id}", "/api/recommend/user"):
        assert path in spec["paths"], path
    search = spec["paths"]["/api/search"]["post"]
    assert "examples" in json.dumps(spec["components"]["schemas"]["SearchRequest"])
    assert "examples" in json.dumps(spec["components"]["schemas"]["UserRecommendRequest"])
    assert "404" in spec["paths"]["/api/recommend/user/{user_id}"]["get"]["responses"]
    assert "422" in search["responses"] and "400" in search["responses"]


def test_serves_the_build_index_artifact_with_its_content_hash(url, built):
    """The Retriever loads build_index's artifact (VectorIndex.load recomputes the content hash and
    refuses a mismatch); the served index names the same version as the artifact's meta."""
    meta = json.loads((built["index"] / "index_meta.json").read_text())
    served = requests.get(f"{url}/healthz", timeout=10).json()["deployments"]["recommender"]
    index = served["catalog"]["index"]
    assert index["source"] == "build_index artifact" and index["run"] == built["index"].name
    assert index["version"] == meta["version"] and index["items_at_load"] == meta["n_items"]
    assert served["version"]["index_run"] == built["index"].name


def test_search_returns_top_k_with_image_urls_and_reranker(url, built):
    body = _search(url, {"attributes": {"category": "블라우스", "style": ["로맨틱"], "material": ["시폰"]}, "k": 4})
    assert len(body["results"]) == 4 and [h["rank"] for h in body["results"]] == [1, 2, 3, 4]
    assert body["reranker"]["name"] == "mmr" and "need a user" in body["reranker"]["description"]
    assert body["model"]["json_encoder_run"] == "json-v1" and body["model"]["image_encoder_pretrained"] == HAND_CRAFTED_LABEL
    first = body["results"][0]["item"]
    assert first["item_id"] in built["item_ids"] and first["image_url"] == f"/images/{first['item_id']}"
    image = requests.get(url + first["image_url"], timeout=10)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    Image.open(io.BytesIO(image.content)).verify()
    # MMR with lambda 1 is pure relevance: scores come out sorted
    plain = _search(url, {"attributes": {"category": "블라우스"}, "k": 5, "mmr_lambda": 1.0})
    scores = [h["score"] for h in plain["results"]]
    assert scores == sorted(scores, reverse=True)


def _offline_search(built, records, k, n_candidates, mmr_lambda):
    """The offline path on the served version's files: the JSON encoder evaluation's encoding and
    exact top-k (``recsys.eval.similarity_search.top_k``) over the embed run's item vectors, then the
    offline evaluations' batch MMR (``recsys.models.rerankers.mmr_lists``, min-max scaled)."""
    import numpy as np
    import pyarrow.parquet as pq

    from recsys.eval.similarity_search import top_k
    from recsys.models.json_encoder import encode_features, featurize, load_json_encoder
    from recsys.models.rerankers import mmr_lists

    encoder, vocab = load_json_encoder(built["json_encoder"])
    queries = encode_features(encoder, featurize(vocab, records, encoder.config)).astype(np.float32)
    table = pq.read_table(built["embed"] / "image_embeddings", columns=["item_id", "view", "vector"]).to_pylist()
    items = set(pq.read_table(built["preprocess"] / "items", columns=["item_id"])["item_id"].to_pylist())
    rows = [r for r in table if r["view"] == 0 and r["item_id"] in items]
    ids = np.asarray([r["item_id"] for r in rows])
    gallery = np.asarray([r["vector"] for r in rows], dtype=np.float32)
    found, scores = top_k(queries, gallery, n_candidates)
    mask = np.ones(found.shape, dtype=bool)
    order = mmr_lists(scores, gallery[found], mask, mmr_lambda, k, normalize=True)
    return [ids[found[q, order[q]]].tolist() for q in range(len(records))], scores


def test_served_search_ranks_as_the_offline_evaluation_does(url, built):
    """No train/serve skew for search: for a sample of attribute queries, the served ranking (JSON
    encoder -> build_index's index -> exact re-score -> MMR) equals the offline path's on the same
    version, with MMR off (lambda 1) and on (lambda 0.5)."""
    records = [{"category": ["블라우스"]}, {"category": ["원피스"], "style": ["로맨틱"]},
               {"silhouette": ["루즈"]}, {"category": ["티셔츠"], "material": ["면"]}]
    for mmr_lambda in (1.0, 0.5):
        served = [_search(url, {"attributes": r, "k": 5, "mmr_lambda": mmr_lambda}) for r in records]
        n = max(5, min(60, 25))  # the app's n_candidates(5) with search.candidates = 60
        offline, _ = _offline_search(built, records, 5, min(n, built["n_items"]), mmr_lambda)
        for query, answer, expected in zip(records, served, offline):
            assert answer["model"]["index_run"] == built["index"].name
            assert [h["item"]["item_id"] for h in answer["results"]] == expected, (query, mmr_lambda)


def test_unknown_values_are_reported_not_refused(url):
    body = _search(url, {"attributes": {"category": "우주복", "style": ["로맨틱", "사이버펑크"]}, "k": 3})
    assert body["unknown_values"] == {"category": ["우주복"], "style": ["사이버펑크"]}
    assert len(body["results"]) == 3


def test_free_text_search(url):
    body = _search(url, {"text": "black skirt", "k": 3})
    assert len(body["results"]) == 3 and body["query"]["text"] == "black skirt"
    both = _search(url, {"attributes": {"category": "스커트"}, "text": "black skirt", "k": 3})
    assert len(both["results"]) == 3


@pytest.mark.parametrize("body, status, names", [
    ({"attributes": {"colour": "red"}}, 422, "colour"),
    ({"attributes": {"category": 3}}, 422, "attributes.category"),
    ({"attributes": {"category": ["a", "b"]}}, 422, "attributes.category"),
    ({"attributes": {"style": [1]}}, 422, "attributes.style"),
    ({"attributes": "블라우스"}, 422, "attributes"),
    ({"attributes": {"category": "블라우스"}, "k": 0}, 422, "k"),
    ({"attributes": {"category": "블라우스"}, "k": 41}, 422, "k"),
    ({"attributes": {"category": "블라우스"}, "extra": 1}, 422, "extra"),
    ({"attributes": {"category": "블라우스"}, "mmr_lambda": 2}, 422, "mmr_lambda"),
    ({}, 422, "attributes"),
])
def test_search_bad_input_is_a_4xx_naming_the_problem(url, body, status, names):
    response = requests.post(f"{url}/api/search", json=body, timeout=10)
    assert response.status_code == status, response.text
    assert names in response.json()["detail"]


def test_malformed_json_is_400(url):
    response = requests.post(f"{url}/api/search", data=b'{"attributes": {', timeout=10,
                             headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "malformed_json"


def test_similar_and_unknown_ids(url, built):
    item = built["item_ids"][0]
    body = requests.get(f"{url}/api/similar/{item}", params={"k": 3}, timeout=10).json()
    assert len(body["results"]) == 3 and item not in [h["item"]["item_id"] for h in body["results"]]
    for path in ("/api/similar/no-such-item", "/api/items/no-such-item", "/images/no-such-item"):
        response = requests.get(url + path, timeout=10)
        assert response.status_code == 404 and "no-such-item" in response.json()["detail"], path


def _offline_tower_neighbours(built, item_id, k, mmr_lambda):
    """The offline path in the item tower's space: the run's exported vectors, the tower's encoding of
    the items it did not export (from their canonical rows), exact cosine top-k, the library's MMR."""
    import numpy as np
    import pyarrow.parquet as pq

    from recsys.models.item_towers import ItemTowerEncoder
    from recsys.models.rerankers import mmr_lists

    encoder = ItemTowerEncoder.load(built["item_tower"])
    exported_ids, exported = encoder.run_vectors()
    vectors = dict(zip(exported_ids.tolist(), exported))
    rows = {r["item_id"]: r for r in pq.read_table(built["preprocess"] / "items").to_pylist()}
    missing = [i for i in rows if i not in vectors]
    vectors.update(zip(missing, encoder.encode([rows[i] for i in missing])))
    ids = [i for i in rows if i != item_id]
    gallery = np.stack([vectors[i] for i in ids])
    scores = gallery @ vectors[item_id]
    top = np.argsort(-scores, kind="stable")[:k * 5]
    order = mmr_lists(scores[top][None], gallery[top][None], np.ones((1, len(top)), bool), mmr_lambda, k,
                      normalize=True)[0]
    return [ids[top[o]] for o in order], missing


def test_similar_compares_item_tower_vectors_as_offline(url, built):
    """``similar`` answers in the item tower's space (similar.space auto: the version has a tower run):
    the served neighbours equal the offline top-k + MMR over the run's vectors, also for an item the
    run did not export (placed by its attributes when the replica loaded)."""
    left_out = built["item_ids"][-1]
    for item_id in (built["item_ids"][0], left_out):
        for mmr_lambda in (1.0, 0.5):
            body = requests.get(f"{url}/api/similar/{item_id}", params={"k": 3, "mmr_lambda": mmr_lambda},
                                timeout=10).json()
            assert body["space"] == "item_tower" and body["model"]["item_tower_run"] == built["item_tower"].name
            expected, missing = _offline_tower_neighbours(built, item_id, 3, mmr_lambda)
            assert left_out in missing
            assert [h["item"]["item_id"] for h in body["results"]] == expected, (item_id, mmr_lambda)
    tower = requests.get(f"{url}/healthz", timeout=10).json()["deployments"]["recommender"]["catalog"]["item_tower"]
    assert tower["encoded_from_attributes_at_load"] == len(missing)


def _users(built):
    import pyarrow.parquet as pq

    return pq.read_table(built["users"] / "users.parquet").to_pandas()


def _recommend(url, body, expect=200):
    response = requests.post(f"{url}/api/recommend/user", json=body, timeout=30)
    assert response.status_code == expect, response.text
    return response.json()


def test_stored_user_gets_learned_reranker_recommendations(url, built):
    user = _users(built).iloc[0]
    response = requests.get(f"{url}/api/recommend/user/{user.user_id}", params={"k": 4, "mmr_lambda": 1.0},
                            timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["source"] == "store" and body["user"]["history"] == list(user.history)
    assert body["user"]["profile"] == {"age": user.age, "style": user["style"]}
    assert body["reranker"]["name"] == "deepfm" and body["reranker"]["learned"] is True
    assert body["model"]["users_run"] == "users-v1" and "synthetic stand-in" in body["note"]
    assert 1 <= len(body["results"]) <= 4 and body["candidates"] >= len(body["results"])
    assert not {h["item"]["item_id"] for h in body["results"]} & set(user.history)   # seen items excluded
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)       # lambda 1: the learned order
    assert set(body["results"][0]["sources"]) == {"score_user_tower", "score_itemknn", "score_mostpop"}


def test_described_user_history_profile_context(url, built):
    users = _users(built)
    history = list(users.history[1])[:3]
    full = _recommend(url, {"history": history, "profile": {"age": 30, "style": "로맨틱"}, "context": "블랙 스커트",
                            "k": 5, "mmr_lambda": 0.3})
    assert full["user"]["source"] == "request" and full["user"]["user_id"] is None
    assert full["reranker"]["lambda"] == 0.3 and full["results"]
    assert not {h["item"]["item_id"] for h in full["results"]} & set(history)
    excluded = full["results"][0]["item"]["item_id"]
    again = _recommend(url, {"history": history, "k": 5, "exclude_ids": [excluded]})
    assert excluded not in {h["item"]["item_id"] for h in again["results"]}
    cold = _recommend(url, {"profile": {"age": 45, "style": "우주복"}, "context": "화이트 드레스", "k": 3})
    assert cold["unknown_values"] == {"style": ["우주복"]} and len(cold["results"]) == 3


def test_profile_only_request_is_answered_by_the_persona_model(url, built):
    """No id, history or context: the persona two-tower ranks the products (its run's own order, MMR at
    lambda 1 keeps it) and names the profile's persona; with a history the user tower answers."""
    from recsys.models.persona import PersonaRecommender

    profile = {"age": 31, "style": "로맨틱"}
    body = _recommend(url, {"profile": profile, "k": 4, "mmr_lambda": 1.0})
    offline = PersonaRecommender.load(built["persona"])
    assert body["answered_by"] == "persona" and body["persona"] == offline.persona(profile)
    assert body["model"]["persona_run"] == built["persona"].name and body["reranker"]["name"] == "persona"
    assert body["user"]["profile"] == profile and "stand-in" in body["note"]
    assert [h["item"]["item_id"] for h in body["results"]] == [i for i, _ in offline.recommend(profile, top_n=4)]
    assert [h["sources"]["persona"] for h in body["results"]] == pytest.approx(
        [s for _, s in offline.recommend(profile, top_n=4)], abs=1e-5)
    unseen = _recommend(url, {"profile": {"style": "우주복"}, "k": 2})
    assert unseen["answered_by"] == "persona" and unseen["unknown_values"] == {"style": ["우주복"]}
    with_history = _recommend(url, {"profile": profile, "history": list(_users(built).history[1])[:2], "k": 3})
    assert with_history["answered_by"] == "user_tower" and with_history["persona"] is None


@pytest.mark.parametrize("body, names", [
    ({}, "at least one of"),
    ({"history": ["no-such-item"]}, "no-such-item"),
    ({"history": "1000001-top"}, "history"),
    ({"history": [1, 2]}, "history"),
    ({"profile": {"colour": "red"}}, "colour"),
    ({"profile": {"age": "old"}}, "profile.age"),
    ({"profile": {"style": 3}}, "profile.style"),
    ({"profile": "로맨틱"}, "profile"),
    ({"context": ""}, "context"),
    ({"context": 5}, "context"),
    ({"context": "x", "k": 0}, "k"),
    ({"context": "x", "mmr_lambda": 2}, "mmr_lambda"),
    ({"context": "x", "user": "u1"}, "user"),
])
def test_described_user_bad_input_is_a_422_naming_the_problem(url, body, names):
    response = requests.post(f"{url}/api/recommend/user", json=body, timeout=30)
    assert response.status_code == 422, response.text
    assert names in response.json()["detail"]


def test_unknown_user_is_404_with_the_way_out(url):
    response = requests.get(f"{url}/api/recommend/user/nobody-42", timeout=10)
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "nobody-42" in detail and "POST /api/recommend/user" in detail
    assert requests.get(f"{url}/api/recommend/user/x", params={"k": 0}, timeout=10).status_code == 422


def test_customer_input_with_image_or_item(url, built):
    crop = requests.get(f"{url}/images/{built['item_ids'][1]}", timeout=10).content
    by_image = requests.post(f"{url}/api/recommend/customer_input", files={"file": ("photo.jpg", crop, "image/jpeg")},
                             data={"k": "3", "scope": "all"}, timeout=30)
    assert by_image.status_code == 200, by_image.text
    body = by_image.json()
    assert body["query"]["type"] == "image" and body["results"][0]["item"]["item_id"] == built["item_ids"][1]
    by_item = requests.post(f"{url}/api/recommend/customer_input", data={"item_id": built["item_ids"][1], "k": "3"},
                            timeout=30)
    assert by_item.status_code == 200 and by_item.json()["query"]["type"] == "item"
    assert by_item.json()["scope"] == "all" and "no new products" in by_item.json()["note"]


def _bomb_png() -> bytes:
    out = io.BytesIO()
    Image.new("1", (3000, 3000)).save(out, format="PNG")  # 9 MP in a few KB; the test limit is 1 MP
    return out.getvalue()


@pytest.mark.parametrize("name, data, status, error", [
    ("empty", b"", 400, "empty_upload"),
    ("oversized", b"\xff" * 400_000, 413, "upload_too_large"),
    ("not an image", b"this is not an image at all", 415, "not_an_image"),
    ("truncated jpeg", _jpeg()[:300], 415, "corrupt_image"),
    ("decompression bomb", _bomb_png(), 413, "too_many_pixels"),
])
def test_bad_uploads_are_refused(url, name, data, status, error):
    response = requests.post(f"{url}/api/recommend/customer_input", files={"file": ("x.jpg", data, "image/jpeg")},
                             timeout=30)
    if name == "empty":  # an empty part may arrive as no file at all: then "give exactly one of" (422)
        assert response.status_code in (400, 422), response.text
        return
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_customer_input_needs_exactly_one_input(url, built):
    neither = requests.post(f"{url}/api/recommend/customer_input", data={"k": "3"}, timeout=10)
    both = requests.post(f"{url}/api/recommend/customer_input", files={"file": ("a.jpg", _jpeg(), "image/jpeg")},
                         data={"item_id": built["item_ids"][0]}, timeout=10)
    assert neither.status_code == 422 and both.status_code == 422


def test_request_body_limit(url):
    response = requests.post(f"{url}/api/recommend/customer_input",
                             files={"file": ("big.jpg", b"\0" * 2_500_000, "image/jpeg")}, timeout=30)
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"


def test_mutations_need_the_admin_token(url, built):
    item = built["item_ids"][0]
    assert requests.delete(f"{url}/api/items/{item}", timeout=10).status_code == 401
    assert requests.delete(f"{url}/api/items/{item}", headers={"X-Admin-Token": "wrong"}, timeout=10).status_code == 403
    unauth = requests.post(f"{url}/api/items", data={"metadata": json.dumps({"item_id": "x1"})},
                           files={"file": ("a.jpg", _jpeg(), "image/jpeg")}, timeout=10)
    assert unauth.status_code == 401
    assert requests.get(f"{url}/api/items/{item}", timeout=10).status_code == 200


def _add(url, item_id, color=(20, 200, 40), **meta):
    metadata = {"item_id": item_id, "title": "그린 블라우스", "category": "블라우스",
                "attributes": {"color": ["그린"]}, "styles": ["로맨틱"], **meta}
    return requests.post(f"{url}/api/items", headers=ADMIN, data={"metadata": json.dumps(metadata)},
                         files={"file": ("new.jpg", _jpeg(color), "image/jpeg")}, timeout=30)


def test_add_item_is_recommendable_at_once(url, built):
    before = requests.get(f"{url}/api/kpi", timeout=30).json()["serving"]["catalog"]["items"]
    added = _add(url, "new-001")
    assert added.status_code == 201, added.text
    assert added.json()["new"] is True and added.json()["source"] == "api"
    assert requests.get(f"{url}/api/items/new-001", timeout=10).json()["title"] == "그린 블라우스"
    image = requests.get(f"{url}/images/new-001", timeout=10)
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    # the same picture as a customer photo finds it first among the new products
    found = requests.post(f"{url}/api/recommend/customer_input", files={"file": ("q.jpg", _jpeg((20, 200, 40)),
                                                                                 "image/jpeg")},
                          data={"k": "1"}, timeout=30).json()
    assert found["scope"] == "new" and found["results"][0]["item"]["item_id"] == "new-001"
    after = requests.get(f"{url}/api/kpi", timeout=30).json()["serving"]["catalog"]["items"]
    assert after == before + 1



def test_new_product_is_placed_by_its_attributes(url, built):
    """Cold start: a product added through the API with the attributes of a catalog item (and another
    picture) lands on that item in the item tower's space: its nearest neighbour, cosine 1."""
    import pyarrow.parquet as pq

    from serve_app.catalog import item_record

    twin = pq.read_table(built["preprocess"] / "items").to_pylist()[1]
    record = item_record(twin)
    added = _add(url, "new-twin", color=(5, 5, 5), title=record["title"], category=record["category"],
                 category_path=record["category_path"], attributes=record["attributes"], styles=record["styles"])
    assert added.status_code == 201, added.text
    body = requests.get(f"{url}/api/similar/new-twin", params={"k": 1, "mmr_lambda": 1.0}, timeout=10).json()
    assert body["space"] == "item_tower"
    assert body["results"][0]["item"]["item_id"] == twin["item_id"]
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert requests.delete(f"{url}/api/items/new-twin", headers=ADMIN, timeout=10).status_code == 200
    assert requests.get(f"{url}/api/similar/new-twin", timeout=10).status_code == 404


def test_item_store_bad_input_changes_nothing(url, built):
    def count():
        return requests.get(f"{url}/api/kpi", timeout=30).json()["serving"]["catalog"]
    before = count()
    cases = [
        (dict(data={"metadata": "{not json"}, files={"file": ("a.jpg", _jpeg(), "image/jpeg")}), 400),
        (dict(data={"metadata": json.dumps({"item_id": "x2", "colour": "red"})},
              files={"file": ("a.jpg", _jpeg(), "image/jpeg")}), 422),
        (dict(data={"metadata": json.dumps({"item_id": "x2", "price": "cheap"})},
              files={"file": ("a.jpg", _jpeg(), "image/jpeg")}), 422),
        (dict(data={"metadata": json.dumps({"item_id": "bad id/../x"})},
              files={"file": ("a.jpg", _jpeg(), "image/jpeg")}), 422),
        (dict(data={"metadata": json.dumps({"item_id": "x2"})},
              files={"file": ("a.jpg", b"GIF89a-not-really", "image/gif")}), 415),
        (dict(data={"metadata": json.dumps({"item_id": "x2"})}), 422),                     # no image
        (dict(data={"metadata": json.dumps({"item_id": "new-001"})},
              files={"file": ("a.jpg", _jpeg(), "image/jpeg")}), 409),                     # duplicate
    ]
    for kwargs, status in cases:
        response = requests.post(f"{url}/api/items", headers=ADMIN, timeout=30, **kwargs)
        assert response.status_code == status, (kwargs.get("data"), response.text)
        assert response.json()["detail"]
    missing = requests.delete(f"{url}/api/items/no-such-item", headers=ADMIN, timeout=10)
    assert missing.status_code == 404
    assert count() == before
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


def test_delete_excludes_the_item_everywhere(url, built):
    victim = built["item_ids"][2]
    deleted = requests.delete(f"{url}/api/items/{victim}", headers=ADMIN, timeout=10).json()
    assert deleted["deleted"] == victim and deleted["stored_by"]  # the Recommender replica that wrote it
    assert requests.get(f"{url}/api/items/{victim}", timeout=10).status_code == 404
    assert requests.get(f"{url}/images/{victim}", timeout=10).status_code == 404
    everything = _search(url, {"attributes": {"category": "블라우스"}, "k": 40})
    assert len(everything["results"]) == built["n_items"]  # every live item: all but the victim, plus new-001
    assert victim not in [h["item"]["item_id"] for h in everything["results"]]
    assert requests.delete(f"{url}/api/items/{victim}", headers=ADMIN, timeout=10).status_code == 404


def test_top10_to_new_default_and_given(url, built):
    _add(url, "new-002", color=(240, 160, 185), category="드레스", title="핑크 드레스")
    default = requests.post(f"{url}/api/recommend/top10_to_new", data={"k": "2"}, timeout=30)
    assert default.status_code == 200, default.text
    body = default.json()
    assert body["best_sellers"]["source"].startswith("centrality proxy")
    assert body["best_sellers"]["n"] == max(1, round(0.1 * (built["n_items"] - 1)))  # one deleted
    assert body["scope"] == "new" and {h["item"]["item_id"] for h in body["results"]} == {"new-001", "new-002"}
    assert set(body["trends"]) == {"category", "color", "style"}
    assert all(h["matched_best_sellers"] for h in body["results"])
    given = requests.post(f"{url}/api/recommend/top10_to_new",
                          data={"item_ids": f"{built['item_ids'][0]},{built['item_ids'][1]}", "k": "1"},
                          files=[("files", ("best.jpg", _jpeg((240, 160, 185)), "image/jpeg"))], timeout=30).json()
    assert given["best_sellers"]["n"] == 3 and given["results"][0]["item"]["item_id"] == "new-002"
    assert given["best_sellers"]["items"][2]["inferred_from"] in built["item_ids"]
    unknown = requests.post(f"{url}/api/recommend/top10_to_new", data={"item_ids": "nope"}, timeout=30)
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]


def test_kpi_dashboard_and_metrics(url):
    body = requests.get(f"{url}/api/kpi", timeout=30).json()
    assert set(body) >= {"kpi", "loss_curve", "top_k_images", "hyperparams", "augmented_samples", "serving"}
    assert body["kpi"]["json_to_image"]["full"]["top5"] == 0.3 and len(body["loss_curve"]) == 3
    assert body["top_k_images"][0]["hits"][0]["image_url"].startswith("/images/")
    serving = body["serving"]
    assert serving["requests"] > 20 and serving["client_errors"] > 10
    assert serving["latency_ms"]["p50"] <= serving["latency_ms"]["p95"] <= serving["latency_ms"]["p99"]
    assert "/api/search" in serving["per_route"]
    sample = body["augmented_samples"]["samples"][0]
    view = requests.get(url + sample["views"][0], timeout=30)
    assert view.status_code == 200 and view.headers["content-type"] == "image/jpeg"
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert 'fashionrec_requests_total{route="/api/search",method="POST",status="200"}' in metrics
    assert "fashionrec_request_latency_ms" in metrics


def test_item_changes_survive_an_application_restart(url, config, built):
    from ray import serve

    victim = built["item_ids"][2]
    serve.delete(APP)
    _start(config)
    _wait_healthy(url)
    assert requests.get(f"{url}/api/items/new-001", timeout=10).status_code == 200
    assert requests.get(f"{url}/images/new-002", timeout=10).status_code == 200
    assert requests.get(f"{url}/api/items/{victim}", timeout=10).status_code == 404
    found = requests.post(f"{url}/api/recommend/customer_input", files={"file": ("q.jpg", _jpeg((20, 200, 40)),
                                                                                 "image/jpeg")},
                          data={"k": "1"}, timeout=30).json()
    assert found["results"][0]["item"]["item_id"] == "new-001"


QUERIES = 8  # fixed requests whose answers identify the version that made them


def _fixed_requests(url, built) -> list[tuple[str, str, dict | None]]:
    live = [i for i in dict.fromkeys(built["item_ids"])
            if requests.get(f"{url}/api/items/{i}", timeout=10).status_code == 200]  # earlier tests deleted some
    similar = [("GET", f"/api/similar/{i}?k=3", None) for i in live[:QUERIES // 2]]
    search = [("POST", "/api/search", {"attributes": {"category": c}, "k": 3})
              for c in ("블라우스", "원피스", "티셔츠", "스커트")][:QUERIES - len(similar)]
    return similar + search


def _signature(answer: dict) -> tuple[str, tuple]:
    model = answer["model"]
    return (f"{model['json_encoder_run']}/{model['embed_run']}",
            tuple((h["item"]["item_id"], round(h["score"], 4)) for h in answer["results"]))


def _ask(session, url, request) -> dict:
    method, path, body = request
    response = session.request(method, url + path, json=body, timeout=60)
    response.raise_for_status()
    return response.json()


def test_version_move_through_user_config_under_16_clients(url, config, built):
    """Serve's lightweight update: a config whose only change is the model deployments'
    user_config moves the running replicas in place. 16 clients keep asking fixed questions
    throughout; nothing fails, every answer names one version and equals that version's answer
    (no response mixes versions), and the two versions answer differently."""
    from serve_app.versions import newest_version
    from tests.serve_app.running import deploy, serve_config

    root = built["root"]
    requests_ = _fixed_requests(url, built)
    session = requests.Session()
    v1 = {_signature(_ask(session, url, r))[0] for r in requests_}
    assert v1 == {"json-v1/embed-v1"}
    reference = {"json-v1/embed-v1": [_signature(_ask(session, url, r))[1] for r in requests_]}
    test_artifacts.json_encoder_run(root, built["preprocess"] / "items", seed=1, run_name="json-v2")
    test_artifacts.copy_embed_run(built["embed"], "embed-v2", shift_vectors=True)
    test_artifacts.users_run(built["root"], built["embed"], reranker=False, run_name="users-v2")
    v2 = newest_version(config)
    stop, failures, seen, answered_at = threading.Event(), [], [], []

    def client(n):
        own = requests.Session()
        count = 0
        while not stop.is_set():
            request = requests_[(n + count) % len(requests_)]
            count += 1
            try:
                seen.append(((n + count - 1) % len(requests_), _signature(_ask(own, url, request))))
                answered_at.append(time.perf_counter())
            except requests.RequestException as exc:
                failures.append(repr(exc)[:300])

    with ThreadPoolExecutor(16) as pool:
        for n in range(16):
            pool.submit(client, n)
        time.sleep(1.5)
        move_started = time.perf_counter()
        move_seconds = deploy(serve_config(config, v2))
        deadline = time.time() + 60
        while time.time() < deadline and not any(sig[0] == "json-v2/embed-v2" for _, sig in seen[-16:]):
            time.sleep(0.2)
        time.sleep(1.5)
        stop.set()
    last_v1 = max(t for t, (_, sig) in zip(answered_at, seen) if sig[0] == "json-v1/embed-v1")
    print(f"version move under 16 clients: deploy -> RUNNING {move_seconds:.2f} s, deploy -> last v1 answer "
          f"{last_v1 - move_started:.2f} s; {len(seen)} answers, {len(failures)} failed")
    assert not failures, failures[:5]
    reference["json-v2/embed-v2"] = [_signature(_ask(session, url, r))[1] for r in requests_]
    assert reference["json-v2/embed-v2"] != reference["json-v1/embed-v1"], "the two versions answer alike"
    versions = {sig[0] for _, sig in seen}
    assert versions == {"json-v1/embed-v1", "json-v2/embed-v2"}, versions
    mixed = [(n, sig) for n, sig in seen if sig[1] != reference[sig[0]][n]]
    assert not mixed, mixed[:3]
    assert len(seen) > 50
    health = requests.get(f"{url}/healthz", timeout=10).json()["deployments"]["recommender"]
    assert health["loads"] == 2, health  # moved in place: the replica that loaded v1 loaded v2, no restart
    # the users run moved too: one without a learned reranker, so the declared MMR fallback answers
    user = _users(built).iloc[0]
    fallback = requests.get(f"{url}/api/recommend/user/{user.user_id}", params={"k": 3}, timeout=30).json()
    assert fallback["model"]["users_run"] == "users-v2"
    assert fallback["reranker"]["name"] == "mmr" and fallback["reranker"]["fallback"] is True
    # the API's changes live on across versions
    assert requests.get(f"{url}/api/items/new-001", timeout=10).status_code == 200
