import math

import numpy as np
import pytest

from recsys.metrics.ranking import (average_precision_at_k, catalog_coverage, intra_list_diversity, rank_summary,
                                    recall_at_k, target_ranks)


def test_target_ranks_exclude_history_but_never_the_target():
    scores = np.array([[0.9, 0.8, 0.7, 0.1],
                       [0.1, 0.2, 0.3, 0.4]])
    targets = np.array([2, 0])
    # user 0: items 0 and 1 outrank the target, but item 0 is history -> rank 1
    # user 1: everything outranks item 0; history {3, 0}: 3 excluded, 0 is the target -> rank 2
    assert target_ranks(scores, targets, [[0], [3, 0]]).tolist() == [1, 2]
    assert target_ranks(scores, targets).tolist() == [2, 3]


def test_rank_summary_by_hand():
    ranks = np.array([0, 3, 12])
    summary = rank_summary(ranks, k=10)
    assert summary["hr@10"] == pytest.approx(2 / 3)
    assert summary["ndcg@10"] == pytest.approx((1 / math.log2(2) + 1 / math.log2(5)) / 3)
    assert summary["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 13) / 3)


def test_map_at_k_is_the_kaggle_definition():
    # hits at positions 1 and 3 of 12: (1/1 + 2/3) / min(4 targets, 12)
    assert average_precision_at_k(["a", "x", "b", "y"], {"a", "b", "c", "d"}) == pytest.approx((1 + 2 / 3) / 4)
    assert average_precision_at_k(["x"], set()) == 0.0
    assert recall_at_k(["a", "x", "b"], {"a", "b", "c", "d"}) == pytest.approx(0.5)


def test_diversity_and_coverage():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # list [0, 2]: identical -> distance 0; list [0, 1]: orthogonal -> 1
    assert intra_list_diversity(np.array([[0, 2], [0, 1]]), vectors) == pytest.approx(0.5)
    assert catalog_coverage(np.array([[0, 2], [0, 1]]), 4) == pytest.approx(3 / 4)
