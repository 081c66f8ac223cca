import math

import numpy as np
import pytest

from recsys.eval.rerankers import MISS, list_target_ranks, order_scores, rerank_report, top_k_positions


def test_target_ranks_count_a_missing_target_as_a_miss():
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.0], [0.9, 0.8, 0.7]])
    label = np.array([[0, 0, 1], [1, 0, 0], [0, 0, 0]])
    mask = np.array([[True, True, True], [True, True, False], [True, True, True]])
    assert list_target_ranks(scores, label, mask).tolist() == [1, 0, MISS]


def test_order_scores_put_the_order_first_then_the_base_order():
    base = np.array([[0.9, 0.1, 0.5, 0.7]])
    scores = order_scores(np.array([[1, 3]]), base, np.ones((1, 4), bool))
    assert top_k_positions(scores, np.ones((1, 4), bool), 4).tolist() == [[1, 3, 0, 2]]


def test_rerank_report_by_hand():
    # 3 users, lists of 3; items 1..4; k = 2
    items = np.array([[1, 2, 3], [2, 3, 4], [4, 1, 2]])
    scores = np.array([[0.9, 0.5, 0.1], [0.2, 0.8, 0.5], [0.3, 0.2, 0.1]])
    label = np.array([[0, 1, 0], [0, 0, 0], [0, 0, 1]])    # user 1's target was not retrieved
    mask = np.ones((3, 3), bool)
    vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    report = rerank_report(scores, items, label, mask, vectors, n_catalog=4, k=2)
    # ranks: user 0 -> 1, user 1 -> miss, user 2 -> 2 (outside the top 2)
    assert report["hr@2"] == pytest.approx(1 / 3)
    assert report["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 3)
    assert report["map@2"] == pytest.approx((1 / 2) / 3)
    assert report["mrr"] == pytest.approx((1 / 2 + 1 / (MISS + 1) + 1 / 3) / 3)
    assert report["candidate_recall"] == pytest.approx(2 / 3)
    assert report["hr@2_listed"] == pytest.approx(1 / 2)
    # top 2: [1, 2] (orthogonal: 1), [3, 4] (cos 1/sqrt2), [4, 1] (cos 1/sqrt2)
    assert report["ild@2"] == pytest.approx((1 + 2 * (1 - 1 / math.sqrt(2))) / 3)
    assert report["coverage@2"] == pytest.approx(4 / 4)


def test_fusion_target_ranks_order_by_fusion_then_input_order_by_hand():
    """u1: fusion a 0.03, b 0.02, c 0.02 (tie: c has the higher input score, so c before b): target b
    is third -> rank 2. u2: target d has the best fusion -> rank 0. u3's target was not listed -> MISS."""
    import pandas as pd

    from recsys.data.candidate_lists import ItemIndex
    from recsys.eval.rerankers import fusion_target_ranks

    candidates = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u2", "u2", "u3"], "item_id": ["a", "b", "c", "b", "d", "a"],
        "split": ["test"] * 6, "label": np.array([0, 1, 0, 0, 1, 0], dtype=np.int8),
        "score_knn": [0.0] * 6, "rank_fusion": [0.03, 0.02, 0.02, 0.01, 0.05, 0.02],
        "ranker_score": [0.1, 0.2, 0.9, 0.5, 0.4, 0.3]})
    sequences = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "history_val": [[], [], []],
                              "history_test": [["c"], ["a"], ["b"]], "target_val": ["a", "a", "a"],
                              "target_test": ["b", "d", "c"]})
    ranks = fusion_target_ranks(candidates, sequences, ItemIndex(["a", "b", "c", "d"]), None, ["score_knn"], 2)
    assert ranks.tolist() == [2, 0, MISS]
