"""ItemKNN on transitions by hand on a 3-user toy log (items a=0, b=1, c=2, d=3).

    u1: a b c     u2: b c d     u3: a c
adjacent pairs: a-b, b-c, b-c, c-d, a-c  ->  symmetric counts
    M[a] = {b: 1, c: 1}   M[b] = {a: 1, c: 2}   M[c] = {a: 1, b: 2, d: 1}   M[d] = {c: 1}
"""
import numpy as np
import pytest

from recsys.metrics.ranking import target_ranks
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.transitions import TransitionConfig, TransitionKNN

A, B, C, D = range(4)
LOG = [np.array([A, B, C]), np.array([B, C, D]), np.array([A, C])]


def test_symmetric_counts_by_hand():
    knn = TransitionKNN.fit(LOG, 4)
    assert knn.matrix.toarray().tolist() == [[0, 1, 1, 0], [1, 0, 2, 0], [1, 2, 0, 1], [0, 0, 1, 0]]


def test_scores_from_the_last_three_items_with_weights_1_half_quarter():
    knn = TransitionKNN.fit(LOG, 4)
    # history a, b, c: 1 * M[c] + 0.5 * M[b] + 0.25 * M[a]
    #   a: 1*1 + 0.5*1 = 1.5   b: 1*2 + 0.25*1 = 2.25   c: 0.5*2 + 0.25*1 = 1.25   d: 1*1 = 1
    assert knn.scores([np.array([A, B, C])])[0].tolist() == [1.5, 2.25, 1.25, 1.0]
    # only the last three count: a leading d changes nothing
    assert knn.scores([np.array([D, A, B, C])])[0].tolist() == [1.5, 2.25, 1.25, 1.0]
    # an item twice among the last three adds up: c (1 + 0.25), a (0.5)
    #   a: 1.25*1 = 1.25   b: 1.25*2 + 0.5*1 = 3   c: 0.5*1 = 0.5   d: 1.25*1 = 1.25
    assert knn.scores([np.array([C, A, C])])[0].tolist() == [1.25, 3.0, 0.5, 1.25]
    # a one-item history uses weight 1 only
    assert knn.scores([np.array([D])])[0].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_directed_transitions_and_dropped_self_transitions():
    knn = TransitionKNN.fit(LOG + [np.array([A, A])], 4, TransitionConfig(symmetric=False))
    # a->b, b->c (x2), c->d, a->c; a->a dropped. history a, b, c:
    #   d: 1 * (c->d) = 1   c: 0.5 * (b->c: 2) + 0.25 * (a->c) = 1.25   b: 0.25 * (a->b) = 0.25
    assert knn.scores([np.array([A, B, C])])[0].tolist() == [0.0, 0.25, 1.25, 1.0]
    assert knn.matrix[A, A] == 0


def test_ties_are_ordered_by_popularity_so_they_never_favour_the_target():
    knn = TransitionKNN.fit(LOG, 4)
    popularity = Popularity.fit(LOG, 4)          # counts a 2, b 2, c 3, d 1
    scores = knn.scores([np.array([D])])          # only c has a transition; a, b, d tie at 0
    ranked = knn.tie_break(scores, popularity.order)
    # raw scores: target b ties with a at 0 and target_ranks counts ties in its favour -> rank 1
    assert target_ranks(scores, np.array([B]), [[D]]).tolist() == [1]
    # tie-broken: c (transition), then a before b (equal counts: lower index first) -> b at rank 2
    assert target_ranks(ranked, np.array([B]), [[D]]).tolist() == [2]
    assert target_ranks(ranked, np.array([A]), [[D]]).tolist() == [1]
    assert knn.valid(scores)[0].tolist() == [False, False, True, False]


def test_tie_break_never_overturns_a_transition_score():
    knn = TransitionKNN.fit(LOG, 4)
    scores = np.array([[0.25, 0.0, 0.5, 0.0]], dtype=np.float32)
    order = np.array([0.25, 1.0, 0.5, 0.75])     # b most popular, but has no transition
    ranked = knn.tie_break(scores, order)
    assert np.argsort(-ranked[0]).tolist() == [2, 0, 1, 3]


@pytest.mark.parametrize("weights", [[1.0], [1.0, 0.5, 0.25]])
def test_empty_history_scores_zero(weights):
    knn = TransitionKNN.fit(LOG, 4, TransitionConfig(weights=weights))
    assert knn.scores([np.array([], dtype=np.int64)])[0].tolist() == [0.0] * 4
