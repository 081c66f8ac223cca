"""Basket co-occurrence by hand on a toy log (items a=0, b=1, c=2, d=3).

    u1: [a b c] [d]        baskets of sizes 3 and 1
    u2: [b c] [a d]        two baskets of size 2
pairs inside baskets (both directions), weight 1 / (size - 1):
    u1 [a b c]: a-b, a-c, b-c at 1/2 each     u2 [b c]: b-c at 1    u2 [a d]: a-d at 1
    M[a] = {b: .5, c: .5, d: 1}   M[b] = {a: .5, c: 1.5}   M[c] = {a: .5, b: 1.5}   M[d] = {a: 1}
"""
import numpy as np

from recsys.metrics.ranking import target_ranks
from recsys.retrieval.baskets import BasketConfig, BasketKNN, basket_pairs
from recsys.retrieval.popularity import Popularity

A, B, C, D = range(4)
LOG = [np.array([A, B, C, D]), np.array([B, C, A, D])]
BASKETS = [np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])]


def fitted(history_baskets, **config):
    return BasketKNN.fit_baskets(LOG, BASKETS, 4, history_baskets, BasketConfig(**config))


def test_normalised_pair_counts_by_hand():
    knn = fitted([])
    assert knn.matrix.toarray().tolist() == [[0, .5, .5, 1], [.5, 0, 1.5, 0], [.5, 1.5, 0, 0], [1, 0, 0, 0]]
    # normalise: false counts 1 per pair: M[b, c] = 1 (u1) + 1 (u2)
    assert fitted([], normalise=False).matrix[B, C] == 2


def test_same_item_twice_in_a_basket_makes_no_pair_and_singletons_none():
    a, b, _ = basket_pairs([np.array([A, A, B])], [np.array([0, 0, 1])])
    assert len(a) == len(b) == 0


def test_scores_from_the_last_baskets_with_decay():
    # history d | a b  (baskets 0 | 1 1): recent basket {a, b} weight 1, older {d} weight 0.5
    history, baskets = np.array([D, A, B]), np.array([0, 1, 1])
    knn = fitted([baskets], recent_baskets=2, decay=0.5)
    # a: M[b,a] .5 + .5 * M[d,a] 1 = 1   b: M[a,b] .5   c: M[a,c] .5 + M[b,c] 1.5 = 2   d: M[a,d] 1
    assert knn.scores([history], np.array([0]))[0].tolist() == [1.0, 0.5, 2.0, 1.0]
    # only the last basket: d no longer counts towards a
    knn = fitted([baskets], recent_baskets=1)
    assert knn.scores([history], np.array([0]))[0].tolist() == [0.5, 0.5, 2.0, 1.0]


def test_rows_pick_the_users_baskets_and_ties_go_by_popularity():
    knn = fitted([np.array([0]), np.array([0, 1])], recent_baskets=1)
    scores = knn.scores([np.array([B, D])], np.array([1]))        # second user: last basket {d}
    assert scores[0].tolist() == [1.0, 0.0, 0.0, 0.0]
    popularity = Popularity.fit(LOG + [np.array([C])], 4)          # c most popular among the zeros
    ranked = knn.tie_break(scores, popularity.order)
    assert target_ranks(ranked, np.array([C]), [[B, D]]).tolist() == [1]    # after a, before nothing else
    assert target_ranks(ranked, np.array([A]), [[B, D]]).tolist() == [0]
    assert knn.valid(scores)[0].tolist() == [True, False, False, False]
