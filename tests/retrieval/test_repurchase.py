"""The repurchase source against lists and features worked out by hand."""
import numpy as np
import pytest

from recsys.retrieval.repurchase import NEVER, Repurchase

# customer 0 buys item 3 (day 1), items 5, 2 (day 4, that row order), item 3 again (day 6);
# customer 1 buys item 2 twice on day 2 (two units) and item 0 on day 2 as well; customer 2 nothing.
CUSTOMERS = [0, 0, 0, 1, 0, 1, 1]
ITEMS = [3, 5, 2, 2, 3, 0, 2]
DAYS = [1, 4, 4, 2, 6, 2, 2]


@pytest.fixture
def source():
    return Repurchase.fit(CUSTOMERS, ITEMS, DAYS, n_customers=3, n_items=6)


def test_lists_are_most_recent_first_with_log_order_within_a_day(source):
    lists = source.lists([0, 1, 2])
    assert lists[0].tolist() == [3, 5, 2]     # 3 (day 6), then day 4 in row order: 5 before 2
    assert lists[1].tolist() == [2, 0]        # same day: the first row (item 2) first, counted once
    assert lists[2].tolist() == []


def test_scores_rank_the_list_and_propose_only_bought_items(source):
    scores = source.scores([None, None], rows=np.array([0, 1]))
    assert scores.shape == (2, 6)
    assert scores[0].tolist() == [0, 0, 1, 3, 0, 2]
    assert scores[1].tolist() == [1, 0, 2, 0, 0, 0]
    assert source.valid(scores)[0].tolist() == [False, False, True, True, False, True]


def test_features_recency_frequency_and_rank(source):
    feats = source.features(np.array([0, 0, 0, 1]), np.array([3, 2, 4, 2]), np.array([10, 10, 10, 5]))
    assert feats["repurchase_days_since"].tolist() == [4, 6, NEVER, 3]
    assert feats["repurchase_days_since_first"].tolist() == [9, 6, NEVER, 3]
    assert feats["repurchase_count"].tolist() == [2, 1, 0, 1]     # item 3 on days 1 and 6; two units on one day = 1
    assert feats["repurchase_rank"].tolist() == [0, 2, NEVER, 0]
