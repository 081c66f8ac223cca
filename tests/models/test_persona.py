import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys.models.persona import (FieldTower, PersonaModelConfig, PersonaRecommender, Personas, PersonaTwoTower,
                                   ProductFeaturizer, ProfileFeaturizer, band_label, encode, model_state_extra,
                                   price_bucket, price_bucket_edges, sample_negatives)
from recsys.losses.persona import triplet_loss
from recsys.train_loops.persona import PersonaTrainConfig, train_epoch
from recsys.vocab import UNKNOWN_ID

PROFILES = [{"age": 20.0, "club_member_status": "ACTIVE", "fashion_news_frequency": "Regularly"},
            {"age": 40.0, "club_member_status": "ACTIVE", "fashion_news_frequency": "NONE"},
            {"club_member_status": "PRE-CREATE"}]  # no age: left out of the statistics


def _profiles(**kwargs) -> ProfileFeaturizer:
    return ProfileFeaturizer.fit(PROFILES, ["club_member_status", "fashion_news_frequency"], ["age"],
                                 {"age": [25, 35, 45]}, **kwargs)


def test_band_labels():
    edges = [25, 35, 45]
    assert [band_label(v, edges) for v in (18, 25, 31, 34.5, 35, 80)] == ["<25", "25-34", "25-34", "25-34", "35-44",
                                                                          "45+"]
    assert band_label(2.0, [1.5, 2.5]) == "1.5-<2.5"


def test_zscore_statistics_are_fitted_stored_and_reused():
    featurizer = _profiles()
    assert featurizer.stats == {"age": [30.0, 10.0]}  # mean and population std of 20 and 40
    restored = ProfileFeaturizer.from_dict(json.loads(json.dumps(featurizer.to_dict())))
    ids, numeric = restored.transform([{"age": 50}, {"age": 30.0}, {}])
    assert numeric[:, 0].tolist() == [2.0, 0.0, 0.0]  # (50 - 30) / 10; missing age = the mean = 0
    assert np.array_equal(ids, featurizer.transform([{"age": 50}, {"age": 30.0}, {}])[0])
    # a constant field must not divide by zero
    assert ProfileFeaturizer.fit([{"age": 30}, {"age": 30}], [], ["age"]).stats == {"age": [30.0, 1.0]}


def test_unknown_and_missing_profile_values_map_to_unknown_ids():
    featurizer = _profiles()
    ids, numeric = featurizer.transform([{"club_member_status": "LEFT CLUB", "fashion_news_frequency": None,
                                          "age": float("nan")}, {"age": np.float32("nan")}, {}])
    assert (ids == UNKNOWN_ID).all() and (numeric == 0).all()
    known, _ = featurizer.transform([PROFILES[0]])
    assert (known > UNKNOWN_ID).all()
    assert featurizer.sizes() == [2 + 2, 2 + 2]  # pad + unknown + {ACTIVE, PRE-CREATE}; + {NONE, Regularly}


def test_bucket_encoding_turns_age_into_band_tokens():
    featurizer = _profiles(numeric_encoding="bucket")
    assert featurizer.token_fields == ["club_member_status", "fashion_news_frequency", "age_band"]
    assert featurizer.n_numeric == 0
    ids, numeric = featurizer.transform([{"age": 22}, {"age": 41}, {"age": 70}, {}])
    assert numeric.shape == (4, 0)
    band = featurizer.vocab.tokens["age_band"]
    assert ids[:, 2].tolist() == [band["<25"], band["35-44"], UNKNOWN_ID, UNKNOWN_ID]  # 45+ never seen in training


@pytest.mark.parametrize("profile,field", [({"age": "31"}, "age"), ({"age": True}, "age"),
                                           ({"age": float("inf")}, "age"),
                                           ({"club_member_status": 3}, "club_member_status"),
                                           ({"fashion_news_frequency": ["NONE"]}, "fashion_news_frequency")])
def test_wrong_value_types_raise_a_value_error_naming_the_field(profile, field):
    with pytest.raises(ValueError, match=f"profile field '{field}'"):
        _profiles().transform([profile])


def test_unknown_profile_keys_and_non_dicts_raise():
    with pytest.raises(ValueError, match=r"\['agee'\] are not model inputs"):
        _profiles().transform([{"agee": 31}])
    with pytest.raises(ValueError, match="expected a dict"):
        _profiles().transform(["age=31"])


def test_price_buckets_are_quantiles_of_mean_prices_and_stored():
    edges = price_bucket_edges([1.0, 2.0, 3.0, 4.0, None, float("nan")], 2)
    assert edges == [2.5]  # the median of 1..4
    assert [price_bucket(p, edges) for p in (1.0, 2.5, 4.0, None)] == ["q1", "q2", "q2", None]
    assert price_bucket_edges([5.0] * 4, 5) == [5.0]  # equal quantiles merge
    records = [{"category": "Dress", "price": 1.0}, {"category": "Top", "price": 4.0}]
    featurizer = ProductFeaturizer.fit(records, ["category", "price_bucket"], n_price_buckets=2)
    restored = ProductFeaturizer.from_dict(json.loads(json.dumps(featurizer.to_dict())))
    assert restored.price_edges == [2.5]
    ids = restored.transform([{"category": "Dress", "price": 3.9}, {"category": "Coat"}])
    q2 = featurizer.vocab.tokens["price_bucket"]["q2"]
    assert ids.tolist() == [[featurizer.vocab.tokens["category"]["Dress"], q2], [UNKNOWN_ID, UNKNOWN_ID]]


def test_towers_output_32d_unit_vectors_and_gradients_reach_both():
    torch.manual_seed(0)
    model = PersonaTwoTower([4, 5], 1, [6, 3, 7], PersonaModelConfig())
    c_ids = torch.tensor([[1, 2], [3, 4], [0, 0]])
    c_num = torch.tensor([[0.5], [-1.0], [0.0]])
    p_ids = torch.tensor([[1, 2, 3], [5, 1, 6]])
    customers, products = model(c_ids, c_num, p_ids)
    assert customers.shape == (3, 32) and products.shape == (2, 32)
    assert torch.allclose(customers.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(products.norm(dim=-1), torch.ones(2), atol=1e-5)
    (customers.sum() + products.sum() * 0.5 + (customers @ products.T).sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.customer.embeddings[0].embedding_dim == 16 and model.customer.mlp[0].out_features == 64


def test_triplet_loss_by_hand():
    loss = triplet_loss(1.0)
    a, e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert float(loss(a, e1, e2)) == pytest.approx(0.0, abs=1e-5)  # max(0, 0 - sqrt(2) + 1)
    assert float(loss(a, e2, e1)) == pytest.approx(math.sqrt(2) + 1, abs=1e-4)  # max(0, sqrt(2) - 0 + 1)


def test_sampled_negatives_avoid_the_customers_purchases():
    rng = np.random.default_rng(0)
    users = np.array([0, 0, 1, 1] * 50)
    bought = np.sort(np.array([0 * 5 + 0, 0 * 5 + 1, 0 * 5 + 2, 1 * 5 + 3]))  # user 0 bought 0-2, user 1 bought 3
    negatives = sample_negatives(users, np.arange(5), bought, 5, 3, rng)
    assert negatives.shape == (200, 3)
    assert set(negatives[users == 0].ravel()) <= {3, 4} and 3 not in set(negatives[users == 1].ravel())


# A tiny world: young customers buy Divided tops, older customers buy Ladieswear dresses.
PRODUCTS = [{"article_id": "a0", "category": "Top", "index_group_name": "Divided", "price": 0.01},
            {"article_id": "a1", "category": "Top", "index_group_name": "Divided", "price": 0.02},
            {"article_id": "b0", "category": "Dress", "index_group_name": "Ladieswear", "price": 0.05},
            {"article_id": "b1", "category": "Dress", "index_group_name": "Ladieswear", "price": 0.06},
            {"article_id": "c0", "category": "Socks", "index_group_name": "Menswear", "price": 0.01}]


def _tiny_recommender() -> tuple[PersonaRecommender, dict]:
    rng = np.random.default_rng(0)
    ages = np.concatenate([rng.uniform(18, 26, 40), rng.uniform(55, 70, 40)])
    profiles = [{"age": float(a), "club_member_status": "ACTIVE", "fashion_news_frequency": "NONE"} for a in ages]
    profile_featurizer = ProfileFeaturizer.fit(profiles, ["club_member_status", "fashion_news_frequency"], ["age"])
    product_featurizer = ProductFeaturizer.fit(PRODUCTS, ["category", "index_group_name", "price_bucket"], 2)
    c_ids, c_num = profile_featurizer.transform(profiles)
    users = np.repeat(np.arange(80), 2)
    items = np.where(users < 40, rng.integers(0, 2, 160), rng.integers(2, 4, 160))
    train = {"user": users, "item": items, "c_ids": c_ids[users], "c_num": c_num[users]}
    torch.manual_seed(0)
    config = PersonaModelConfig()
    model = PersonaTwoTower(profile_featurizer.sizes(), profile_featurizer.n_numeric, product_featurizer.sizes(), config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    cfg = PersonaTrainConfig(batch_size=32, negatives=2)
    products = product_featurizer.transform(PRODUCTS)
    losses = [train_epoch(model, optimizer, triplet_loss(1.0), train, products, cfg, rng)[0] for _ in range(15)]
    assert losses[-1] < losses[0]
    centroids = encode(model.customer, *profile_featurizer.transform([{"age": 20.0}, {"age": 62.0}]))
    recommender = PersonaRecommender(model, profile_featurizer, product_featurizer, PRODUCTS,
                                     personas=Personas(centroids, ["young", "older"]))
    parts = {"model": model, "config": config, "profiles": profile_featurizer, "products": product_featurizer,
             "centroids": centroids}
    return recommender, parts


@pytest.fixture(scope="module")
def tiny():
    return _tiny_recommender()


def test_recommend_ranks_the_obviously_matching_products_first(tiny):
    recommender, _ = tiny
    young = recommender.recommend({"age": 21, "club_member_status": "ACTIVE", "fashion_news_frequency": "NONE"}, 2)
    older = recommender.recommend({"age": 63}, top_n=2)
    assert {a for a, _ in young} == {"a0", "a1"} and {a for a, _ in older} == {"b0", "b1"}
    assert young[0][1] >= young[1][1] and -1 <= young[1][1] <= 1
    assert recommender.persona({"age": 19}) == "young" and recommender.persona({"age": 66.5}) == "older"


def test_recommend_works_for_unknown_and_missing_values(tiny):
    recommender, _ = tiny
    for profile in ({}, {"age": None, "club_member_status": "never seen"}, {"fashion_news_frequency": ""}):
        ranked = recommender.recommend(profile, top_n=5)
        assert len(ranked) == 5 and sorted(a for a, _ in ranked) == ["a0", "a1", "b0", "b1", "c0"]


def test_recommend_rejects_bad_profiles_and_top_n(tiny):
    recommender, _ = tiny
    with pytest.raises(ValueError, match="profile field 'age'"):
        recommender.recommend({"age": "thirty"})
    with pytest.raises(ValueError, match="top_n"):
        recommender.recommend({"age": 30}, top_n=0)


def test_equal_scores_rank_by_training_purchases_then_id(tiny):
    _, parts = tiny
    twins = [{"article_id": f"t{i}", "category": "Top", "index_group_name": "Divided", "price": 0.01,
              "purchases": n} for i, n in enumerate([1, 5, 5, 0])]
    recommender = PersonaRecommender(parts["model"], parts["profiles"], parts["products"], twins)
    ranked = recommender.recommend({"age": 22}, top_n=4)
    assert [a for a, _ in ranked] == ["t1", "t2", "t0", "t3"] and len({s for _, s in ranked}) == 1


def test_recommender_loads_from_a_run_directory(tiny, tmp_path):
    recommender, parts = tiny
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": parts["model"].state_dict(),
                **model_state_extra(parts["config"], parts["profiles"].sizes(), parts["profiles"].n_numeric,
                                    parts["products"].sizes())}, tmp_path / PersonaRecommender.MODEL_FILE)
    (tmp_path / PersonaRecommender.FEATURIZER_FILE).write_text(json.dumps(
        {"profile": parts["profiles"].to_dict(), "product": parts["products"].to_dict()}))
    pq.write_table(pa.Table.from_pylist(PRODUCTS[::-1]), tmp_path / PersonaRecommender.PRODUCTS_FILE)
    (tmp_path / PersonaRecommender.PERSONAS_FILE).write_text(json.dumps(
        Personas(parts["centroids"], ["young", "older"]).to_dict()))
    loaded = PersonaRecommender.load(tmp_path)
    assert loaded.article_ids == ["a0", "a1", "b0", "b1", "c0"]  # id order whatever the file order
    profile = {"age": 24, "fashion_news_frequency": "NONE"}
    assert [a for a, _ in loaded.recommend(profile, 5)] == [a for a, _ in recommender.recommend(profile, 5)]
    assert np.allclose([s for _, s in loaded.recommend(profile, 5)], [s for _, s in recommender.recommend(profile, 5)],
                       atol=1e-6)
    assert loaded.persona({"age": 60}) == "older"


def test_field_tower_without_numeric_inputs():
    tower = FieldTower([3, 3], 0, PersonaModelConfig(output_dim=8))
    out = encode(tower, np.array([[1, 2], [2, 1]]))
    assert out.shape == (2, 8) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_recommender_save_and_load_round_trip(tiny, tmp_path):
    recommender, parts = tiny
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": parts["model"].state_dict(),
                **model_state_extra(parts["config"], parts["profiles"].sizes(), parts["profiles"].n_numeric,
                                    parts["products"].sizes())}, tmp_path / PersonaRecommender.MODEL_FILE)
    saved = PersonaRecommender.save(tmp_path, parts["profiles"], parts["products"], PRODUCTS,
                                    Personas(parts["centroids"], ["young", "older"]))
    assert set(saved) == {"featurizer", "products", "personas"}
    loaded = PersonaRecommender.load(tmp_path)
    profile = {"age": 58, "club_member_status": "ACTIVE"}
    ours, theirs = loaded.recommend(profile, 5), recommender.recommend(profile, 5)
    assert [a for a, _ in ours] == [a for a, _ in theirs]
    assert np.allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-6)
    assert loaded.persona({"age": 20}) == "young"


def test_persona_popularity_serving_ranks_by_the_personas_purchases(tiny, tmp_path):
    """serving.json with ranker persona_popular (the training job's validation choice): the towers pick
    the persona, the persona's purchase counts (given in their own article order) rank the products."""
    _, parts = tiny
    (tmp_path / "checkpoints").mkdir()
    torch.save({"model": parts["model"].state_dict(),
                **model_state_extra(parts["config"], parts["profiles"].sizes(), parts["profiles"].n_numeric,
                                    parts["products"].sizes())}, tmp_path / PersonaRecommender.MODEL_FILE)
    counts = {"young": {"c0": 9, "a1": 4, "b0": 1}, "older": {"a0": 7, "b1": 3}}   # deliberately not the towers'
    article_ids = ["c0", "b1", "b0", "a1", "a0"]
    serving = {"ranker": "persona_popular", "k": 3, "validation_hit@3": {"model": 0.1, "persona_popular": 0.2},
               "article_ids": article_ids,
               "persona_popularity": [[counts[p].get(a, 0) for a in article_ids] for p in ("young", "older")]}
    saved = PersonaRecommender.save(tmp_path, parts["profiles"], parts["products"], PRODUCTS,
                                    Personas(parts["centroids"], ["young", "older"]), serving)
    assert set(saved) == {"featurizer", "products", "personas", "serving"}
    loaded = PersonaRecommender.load(tmp_path)
    assert loaded.ranker == "persona_popular"
    assert loaded.recommend({"age": 20}, 3) == [("c0", 9.0), ("a1", 4.0), ("b0", 1.0)]
    assert [a for a, _ in loaded.recommend({"age": 64}, 2)] == ["a0", "b1"]
    with pytest.raises(ValueError, match="serving ranker"):
        PersonaRecommender(parts["model"], parts["profiles"], parts["products"], PRODUCTS,
                           personas=Personas(parts["centroids"], ["young", "older"]), serving={"ranker": "best"})
