"""The recommender pass on a toy log: candidates, features, recall, full ranking, history exclusion."""
import numpy as np
import pytest

from recsys.metrics.ranking import target_ranks
from recsys.retrieval.candidates import CandidateSet
from recsys.retrieval.dense import DenseSource
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.recommender import CandidateConfig, ranked_scores, recommender_ranks, run_stage, top_k_lists
from recsys.retrieval.transitions import TransitionKNN

A, B, C, D, E = range(5)
TRAIN = [np.array([A, B, C]), np.array([B, C, D]), np.array([A, C]), np.array([A, B])]


def sources(user_vectors):
    popularity = Popularity.fit(TRAIN, 5)                 # counts a 3, b 3, c 3, d 1, e 0
    items = np.eye(5, dtype=np.float32)
    return {"user_tower": DenseSource(user_vectors, items), "itemknn": TransitionKNN.fit(TRAIN, 5),
            "mostpop": popularity}, popularity


def test_stage_pass_ranks_candidates_features_and_recall():
    histories = [np.array([A, B]), np.array([D])]
    targets = np.array([C, E])
    user_vectors = np.array([[0, 0, 0, 0, 1.0], [0, 0, 0, 0, 1.0]], dtype=np.float32)   # both like e
    srcs, popularity = sources(user_vectors)
    result = run_stage(srcs, popularity, histories, targets, CandidateConfig(n_per_source=2, chunk_size=1),
                       evaluate=True)
    # pairs a-b, b-c, b-c, c-d, a-c, a-b: M[a] = {b 2, c 1}, M[b] = {a 2, c 2}, M[d] = {c 1}
    # user 0 (a, b): knn = M[b] + 0.5 M[a] -> a 2, b 1, c 2.5 -> target c first
    # tower: e, then a..d tie at 0 (target c behind e; d ties with it) -> rank 1; user 1: e first
    # MostPop (a 3, b 3, c 3, d 1): user 0 without a, b -> c first; user 1 without d -> a, b, c, e
    assert result.ranks["itemknn"].tolist()[0] == 0
    assert result.ranks["user_tower"].tolist() == [1, 0]
    assert result.ranks["mostpop"].tolist() == [0, 3]
    candidates = result.candidates
    user0 = candidates.item[candidates.row == 0].tolist()
    # top-2 of each source (over all items; the history is only dropped from final lists):
    # tower {e, a (ties: lower index)}, knn {c, a}, MostPop {a, b}
    assert set(user0) == {A, B, C, E}
    assert result.labels.tolist() == (candidates.item == targets[candidates.row]).astype(int).tolist()
    # user 0's target c: knn only; user 1's target e: tower only (knn proposes c alone)
    assert result.recall == {"user_tower": 0.5, "itemknn": 0.5, "mostpop": 0.0, "merged": 1.0}
    assert set(candidates.features) == {"user_tower_score", "user_tower_rank", "user_tower_gap", "itemknn_score",
                                        "itemknn_rank", "itemknn_gap", "mostpop_score", "mostpop_rank",
                                        "itemknn_last_score", "n_sources", "history_length"}
    c_row = np.flatnonzero((candidates.row == 0) & (candidates.item == C))[0]
    assert candidates.features["itemknn_score"][c_row] == pytest.approx(2.5)
    assert candidates.features["itemknn_last_score"][c_row] == pytest.approx(2.0)   # M[b][c] only
    assert candidates.features["itemknn_gap"][c_row] == pytest.approx(0.0)          # the user's best
    assert candidates.features["history_length"][c_row] == pytest.approx(np.log1p(2))


def test_full_ranking_puts_candidates_first_and_excludes_the_history():
    popularity = Popularity(np.array([5, 4, 3, 2, 1]))
    candidates = CandidateSet(row=np.array([0, 0, 1]), item=np.array([3, 0, 4]), score={}, rank={}, proposed={})
    ranker = np.array([0.9, 0.1, 0.5], dtype=np.float32)
    scores = ranked_scores(candidates, ranker, popularity, np.array([0, 1]))
    # user 0: d (0.9) > a (0.1) > then by popularity b, c, e
    assert np.argsort(-scores[0], kind="stable").tolist() == [3, 0, 1, 2, 4]
    histories = [np.array([0]), np.array([4])]
    # user 0: history a excluded -> target c behind d, b; user 1: target e is history but the target
    # itself is never excluded: it still has its ranker score (2.5) and comes first
    ranks = recommender_ranks(candidates, ranker, popularity, histories, np.array([2, 4]), chunk_size=1)
    assert ranks.tolist() == [2, 0]
    assert ranks.tolist() == target_ranks(np.stack([scores[0], scores[1]]), np.array([2, 4]), histories).tolist()
    lists = top_k_lists(candidates, ranker, popularity, histories, k=2)
    assert lists.tolist() == [[3, 1], [0, 1]]                  # the final lists never show the history
