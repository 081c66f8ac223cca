import numpy as np
import pytest

from recsys.metrics.ranking import target_ranks
from recsys.retrieval.popularity import Popularity


def test_counts_and_a_strict_order_with_ties_by_item_index():
    popularity = Popularity.fit([np.array([1, 0, 1]), np.array([2, 1, 0, 1, 2, 1])], 4)
    assert popularity.counts.tolist() == [2, 5, 2, 0]
    # ranking: 1 (5), 0 (2), 2 (2: after 0, higher index), 3 (0) -> order (4 - rank) / 4
    assert popularity.order.tolist() == [0.75, 1.0, 0.5, 0.25]
    assert popularity.feature(np.array([1, 3])) == pytest.approx(np.log1p([5, 0]))


def test_mostpop_ranks_exclude_the_history():
    popularity = Popularity(np.array([2, 5, 2, 0]))
    scores = popularity.scores([np.array([1]), np.array([0, 2])])
    assert scores.shape == (2, 4) and (scores[0] == scores[1]).all()
    # user 0 bought item 1 (the most popular): target 2 is behind item 0 only
    # user 1 bought 0 and 2: target 3 is behind item 1 only
    assert target_ranks(scores, np.array([2, 3]), [[1], [0, 2]]).tolist() == [1, 1]
    # without the tie-break the target would tie with item 0 and be counted at rank 0
    assert target_ranks(np.array([[2, 5, 2, 0]]), np.array([2]), [[1]]).tolist() == [0]
