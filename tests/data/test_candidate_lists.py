import numpy as np
import pandas as pd
import pytest

from recsys.data.candidate_lists import (DenseScaler, ItemIndex, absent_dense, build_lists, item_categories,
                                         item_tokens, read_contract, token_bag_vectors, user_item_cosine)
from recsys.data.result import AdapterError
from recsys.data.synthetic_candidates import write_synthetic_candidates


def _contract():
    candidates = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u2", "u2"],
        "item_id": ["a", "b", "c", "b", "d"],
        "split": ["val"] * 5,
        "label": np.array([0, 1, 0, 0, 0], dtype=np.int8),     # u2's target "a" was not retrieved
        "score_knn": [0.1, 0.0, 0.7, 0.2, 0.0],
        "ranker_score": [0.2, 0.9, 0.5, 0.3, 0.8],
    })
    sequences = pd.DataFrame({"user_id": ["u1", "u2"], "history_val": [["c", "d", "c"], ["b"]],
                              "history_test": [["c", "d", "c", "b"], ["b", "a"]],
                              "target_val": ["b", "a"], "target_test": ["a", "d"]})
    return candidates, sequences


def test_lists_are_in_input_order_padded_with_features_by_hand():
    candidates, sequences = _contract()
    index = ItemIndex(["a", "b", "c", "d"])                    # a=1 b=2 c=3 d=4
    lists = build_lists(candidates, sequences, "val", index, ["score_knn"], max_history=2)
    assert lists.users.tolist() == ["u1", "u2"]
    assert lists.items.tolist() == [[2, 3, 1], [4, 2, 0]]      # ranker_score descending, 0 = padding
    assert lists.mask.tolist() == [[True, True, True], [True, True, False]]
    assert lists.label.tolist() == [[1, 0, 0], [0, 0, 0]]
    assert lists.target_listed.tolist() == [True, False]
    assert lists.target.tolist() == [2, 1]
    assert lists.history.tolist() == [[4, 3], [2, 0]]         # the last 2 items, oldest first
    names = lists.feature_names
    assert names == ["score_knn", "ranker_score", "ranker_rank", "popularity", "user_item_cosine", "in_history",
                     "retrieved"]
    u1 = lists.dense[0]
    assert u1[:, 0].tolist() == pytest.approx([0.0, 0.7, 0.1])
    assert u1[:, 2].tolist() == pytest.approx([0.0, 0.5, 1.0])       # rank as a share of the list
    # popularity: val histories hold c twice, d once, b once
    assert u1[:, 3].tolist() == pytest.approx(np.log1p([1, 2, 0]).tolist())
    assert u1[:, 5].tolist() == [0, 1, 0]                       # c is in u1's (last 2) history
    assert lists.dense[1, 1, 5] == 1 and lists.dense[1, 2].sum() == 0  # padding stays 0
    assert lists.dense[:, :, 6].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert lists.ranker_score[0].tolist() == pytest.approx([0.9, 0.5, 0.2])
    without = build_lists(candidates, sequences, "val", index, ["score_knn"], max_history=2, ranker_features=False)
    assert without.feature_names == ["score_knn", "popularity", "user_item_cosine", "in_history", "retrieved"]
    assert np.array_equal(without.dense, lists.dense[:, :, [0, 3, 4, 5, 6]])


def test_user_item_cosine_uses_the_mean_history_vector():
    vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)  # row 0 = padding
    cosine = user_item_cosine(np.array([[1, 2, 3]]), np.array([[1, 2, 0]]), vectors)
    # user = normalize((1,0) + (0,1)) = (1,1)/sqrt2
    assert cosine[0].tolist() == pytest.approx([1 / np.sqrt(2), 1 / np.sqrt(2), 1.0], abs=1e-6)


def test_scaler_and_absent_row():
    dense = np.array([[[1.0, 5.0], [3.0, 5.0], [100.0, 0.0]]])
    scaler = DenseScaler.fit(dense, np.array([[True, True, False]]))
    assert scaler.mean.tolist() == [2.0, 5.0] and scaler.std.tolist() == [1.0, 1.0]  # constant -> scale 1
    row = absent_dense(["score_knn", "ranker_score", "ranker_rank", "popularity"])
    assert row.tolist() == [0, 0, 1, 0]


def test_item_lookups():
    index = ItemIndex(["a", "b", "c"])
    features = {"std_ids": np.array([[5, 6], [7, 0]]), "std_mask": np.array([[True, True], [True, False]]),
                "re_ids": np.array([[20], [21]]), "re_mask": np.array([[False], [True]])}
    tokens = item_tokens(features, ["c", "a"], index)
    assert tokens.tolist() == [[0, 0, 0], [7, 0, 21], [0, 0, 0], [5, 6, 0]]
    category, names = item_categories(["a", "b", "c"], ["Jeans", None, "Boots"], index)
    assert names == ["Boots", "Jeans"] and category.tolist() == [0, 2, 0, 1]
    bags = token_bag_vectors(np.array([[0, 0], [1, 2], [1, 2], [3, 0]]), dim=64)
    assert np.allclose(bags[0], 0) and np.allclose(bags[1], bags[2])


def test_synthetic_contract_round_trip(tmp_path):
    paths = write_synthetic_candidates(tmp_path, n_users=20, n_items=60, list_size=15, seed=3)
    candidates, sequences, scores = read_contract(tmp_path)
    assert scores == ["score_knn", "score_pop"]
    assert set(candidates["split"]) == {"val", "test"} and candidates["label"].dtype == np.int8
    assert len(candidates) == 20 * 2 * 15 and len(sequences) == 20
    per_list = candidates.groupby(["user_id", "split"])["label"].sum()
    assert per_list.max() == 1 and per_list.mean() > 0.5        # target listed for most, never twice
    assert paths["items"].is_file()
    # history_test = history_val + the val target
    row = sequences.iloc[0]
    assert list(row["history_test"]) == list(row["history_val"]) + [row["target_val"]]


def test_contract_errors_name_the_problem(tmp_path):
    candidates, sequences = _contract()
    candidates.drop(columns="ranker_score").to_parquet(tmp_path / "candidates.parquet")
    sequences.to_parquet(tmp_path / "sequences.parquet")
    with pytest.raises(AdapterError, match="ranker_score"):
        read_contract(tmp_path)
    candidates.to_parquet(tmp_path / "candidates.parquet")
    with pytest.raises(AdapterError, match="no 'test' candidate lists"):
        read_contract(tmp_path)
