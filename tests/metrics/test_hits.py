import math

import numpy as np
import pytest

from recsys.metrics.hits import (category_hit_at_k, category_hit_flags, chance_hit_at_k, hit_at_k, hit_flags,
                                 top_k)


def test_top_k_is_best_first_and_breaks_ties_by_column_order():
    scores = np.array([[0.1, 0.9, 0.5, 0.9],
                       [1.0, 1.0, 1.0, 1.0]])
    assert top_k(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]
    assert top_k(scores, 10).shape == (2, 4)  # k larger than the candidate set


def test_hit_at_3_by_hand():
    top = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    relevant = [{2, 9}, {10}, set()]  # hit; miss; nothing rankable (a held-out article outside the candidates)
    assert hit_flags(top, relevant).tolist() == [True, False, False]
    assert hit_at_k(top, relevant) == pytest.approx(1 / 3)


def test_category_hit_at_3_by_hand():
    category = np.array(["dress", "dress", "top", "jeans", "top", "shoe"])
    top = np.array([[0, 1, 3], [2, 4, 5], [0, 3, 5]])
    # customer 0 bought a top: no top in [dress, dress, jeans]; customer 1 bought a shoe (rank 3);
    # customer 2 bought a dress and a bag (the bag is not a candidate but its category still counts)
    relevant = [{"top"}, {"shoe"}, {"bag", "dress"}]
    assert category_hit_flags(top, relevant, category).tolist() == [False, True, True]
    assert category_hit_at_k(top, relevant, category) == pytest.approx(2 / 3)


def test_chance_hit_at_k_by_hand():
    # 1 relevant of 10, k=3: 3/10. 2 relevant of 10: 1 - C(8,3)/C(10,3) = 1 - 56/120.
    assert chance_hit_at_k([1], 10, 3) == pytest.approx(0.3)
    assert chance_hit_at_k([1, 2], 10, 3) == pytest.approx((0.3 + 1 - 56 / 120) / 2)
    assert chance_hit_at_k([0], 10, 3) == 0.0
    assert math.isnan(chance_hit_at_k([], 10, 3))


def test_top_k_distinct_takes_each_best_groups_best_candidate():
    from recsys.metrics.hits import top_k_distinct

    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    groups = np.array(["dress", "dress", "jeans", "dress", "shoes"])
    assert top_k_distinct(scores, groups, 3).tolist() == [[0, 2, 4], [4, 3, 2]]
    # two groups only for k = 3: the list goes on in score order
    assert top_k_distinct(scores[:1], np.array(["a", "a", "b", "a", "a"]), 3).tolist() == [[0, 2, 1]]
