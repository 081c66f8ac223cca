"""The user-tower loop's pure parts: its E3 datasets and early stopping (the loop runs on Ray Train
in tests/ray_jobs/test_evaluate_seq.py)."""
import numpy as np
import pytest

from recsys.eval.sequential import leave_last_out
from recsys.models.user_tower import UserTowerConfig
from recsys.train_loops.user_tower import should_stop, tower_datasets


def test_datasets_train_on_what_the_validation_stage_sees():
    # u1: a b c d (evaluated), u2: b c (too short: trained on whole)
    split = leave_last_out(["u1"] * 4 + ["u2"] * 2, list("abcd") + list("bc"), [1, 2, 3, 4, 1, 2])
    a, b, c, d = range(4)
    data = tower_datasets(split, max_len=3, user_columns={"profile_numeric": np.array([[30.0], [40.0]])},
                          item_vectors=np.eye(4))
    # u1 trains on a b (c = validation, d = test), u2 on b c; tokens = item + 1
    assert data["train"]["items"].tolist() == [[a + 1, 0, 0], [b + 1, 0, 0]]
    assert data["train"]["targets"].tolist() == [[b + 1, 0, 0], [c + 1, 0, 0]]
    assert data["train"]["profile_numeric"].tolist() == [[30.0], [40.0]]
    assert data["val"]["items"].tolist() == [[a + 1, b + 1, 0]] and data["val"]["target"].tolist() == [c]
    assert data["val"]["profile_numeric"].tolist() == [[30.0]]
    assert data["val_seen"]["row"].tolist() == [0, 0] and data["val_seen"]["item"].tolist() == [a, b]
    assert data["items"]["count"].tolist() == [1, 2, 1, 0] and data["items"]["vector"].shape == (4, 4)


def test_validation_users_are_a_seeded_sample():
    users = [f"u{i}" for i in range(20) for _ in range(3)]
    split = leave_last_out(users, [str(i % 7) for i in range(60)], np.arange(60))
    first = tower_datasets(split, 4, val_max_users=5, seed=1)["val"]["target"]
    again = tower_datasets(split, 4, val_max_users=5, seed=1)["val"]["target"]
    assert len(first) == 5 and first.tolist() == again.tolist()
    assert len(tower_datasets(split, 4)["val"]["target"]) == 20


def test_should_stop_after_patience_epochs_without_improvement():
    history = [{"val_hr@10": v} for v in (0.1, 0.3, 0.2, 0.25)]
    assert not should_stop(history, 3)          # best at epoch 1, 2 epochs since
    assert should_stop(history + [{"val_hr@10": 0.29}], 3)
    assert not should_stop(history + [{"val_hr@10": 0.29}], 0)
    # equal HR@10: a better MRR still counts as progress
    flat = [{"val_hr@10": 0.1, "val_mrr": m} for m in (0.01, 0.02, 0.03, 0.04)]
    assert not should_stop(flat, 2) and should_stop(flat + [{"val_hr@10": 0.1, "val_mrr": 0.01}] * 2, 2)
    assert UserTowerConfig().max_len == 50


def test_length_batches_cover_every_row_once_with_similar_lengths():
    from recsys.train_loops.user_tower import length_batches

    lengths = np.array([1, 50, 2, 49, 3, 48, 1, 50])
    batches = length_batches(lengths, 2, np.random.default_rng(0), pool=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    assert all(lengths[b].max() - lengths[b].min() <= 2 for b in batches)


def test_validation_orders_equal_scores_by_popularity_not_in_the_targets_favour():
    # A tower whose item vectors are all zero scores every item 0. Counted in the target's favour
    # that is HR@10 = 1; ordered by popularity it is MostPop: the target item 2 is 3rd most bought.
    import torch

    from recsys.models.user_tower import UserTower
    from recsys.train_loops.user_tower import validate

    config = UserTowerConfig(dim=8, max_len=4, layers=1, heads=2, ffn_dim=16, dropout=0.0)
    model = UserTower(config, 30)
    with torch.no_grad():
        model.items.ids.weight.zero_()
    counts = np.zeros(30, dtype=np.int64)
    counts[[5, 9, 2, 11]] = [10, 8, 6, 4]
    val = {"items": np.array([[1, 0, 0, 0], [1, 0, 0, 0]]), "target": np.array([2, 20])}
    metrics = validate(model, val, [np.array([0]), np.array([0])], counts)
    # user 0: rank 2 (items 5 and 9 first); user 1: item 20 never bought, after the 4 bought items and
    # the unbought ones before it in index order (1, 3, 4, 6, 7, 8, 10, 12, ..., 19; item 0 is history)
    assert metrics["val_hr@10"] == 0.5
    assert np.isclose(metrics["val_mrr"], (1 / 3 + 1 / (4 + 15 + 1)) / 2)


@pytest.mark.slow
def test_on_hm_the_history_skip_over_content_vectors_beats_mostpop_before_any_training(shared_data):
    # H&M E3 (real data): ~1.7 purchases per article, 76% of the log's articles without a catalog row.
    # The tower E3 configures (content vectors from the articles' TF-IDF, ID embeddings only from 10
    # purchases, history skip) ranks the validation targets well above popularity at initialisation, the
    # start training improves on; without the skip the same untrained tower is at chance level.
    from dataclasses import asdict

    import torch

    from recsys.data.item_catalog import CatalogConfig
    from recsys.models.user_tower import UserTower
    from recsys.retrieval.content import catalog_attribute_vectors, dense_vectors
    from recsys.retrieval.e3 import SequentialEvalConfig, load_log
    from recsys.train_loops.user_tower import _seen_lists, validate

    hm = shared_data / "hm_pse_subset"
    frame, _ = load_log(str(hm / "transactions.parquet"), "customer_id", "article_id", "t_dat", True)
    split = leave_last_out(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), frame["position"].to_numpy(),
                           baskets=frame["timestamp"].to_numpy())
    cfg = SequentialEvalConfig()
    matrix, info = catalog_attribute_vectors(CatalogConfig(catalog=str(hm / "articles.parquet")), split.item_ids)
    assert 0.2 < info["coverage"] < 0.3
    vectors = dense_vectors(matrix, cfg.attributes_dim)
    data = tower_datasets(split, 20, item_vectors=vectors)
    seen = _seen_lists(data["val_seen"], len(data["val"]["target"]))
    counts = data["items"]["count"]

    def untrained(skip: float) -> dict:
        torch.manual_seed(0)
        model = UserTower(UserTowerConfig(**{**asdict(cfg.user_tower), "max_len": 20, "layers": 1,
                                             "item_vector_dim": vectors.shape[1], "min_id_count": 10,
                                             "history_skip": skip}),
                          split.n_items)
        model.set_item_vectors(vectors)
        model.set_trained_items(counts)
        return validate(model, data["val"], seen, counts)

    mostpop = validate(_constant_tower(split.n_items), data["val"], seen, counts)["val_hr@10"]
    assert 0.004 < mostpop < 0.015                                  # 9 of 1,094 users (EVAL.md: 0.0082)
    skip = untrained(3.0)["val_hr@10"]
    print(f"validation HR@10: MostPop {mostpop:.4f}, untrained tower with the history skip {skip:.4f}")
    assert skip > 2.5 * mostpop
    assert untrained(0.0)["val_hr@10"] < mostpop


def _constant_tower(n_items: int):
    """A tower whose item vectors are all zero: every score ties, so validation ranks by popularity."""
    import torch

    from recsys.models.user_tower import UserTower

    model = UserTower(UserTowerConfig(dim=8, max_len=20, layers=1, heads=2, ffn_dim=16, dropout=0.0), n_items)
    with torch.no_grad():
        model.items.ids.weight.zero_()
    return model
