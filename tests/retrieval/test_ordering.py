"""The served order: the learned ranker's unless a fallback does better on held-out validation users."""
import numpy as np
import pytest

from recsys.retrieval.candidates import CandidateSet
from recsys.retrieval.ordering import FUSION, LEARNED, choose_order, order_scores, orders
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.recommender import StageResult, recommender_ranks

N_ITEMS = 6


def stage() -> tuple[StageResult, np.ndarray, Popularity]:
    """Three users with candidates {0, 1, 2}; source "knn" lists the target first for every user,
    source "pop" lists 0, 1, 2 (target first only for user 0); targets 0, 1, 2."""
    users, items = np.repeat(np.arange(3), 3), np.tile(np.arange(3), 3)
    targets = np.array([0, 1, 2])
    knn_rank = np.array([0, 1, 2, 1, 0, 2, 1, 2, 0], np.int32)         # target at rank 0
    pop_rank = np.tile(np.array([0, 1, 2], np.int32), 3)
    rank = {"knn": knn_rank, "pop": pop_rank}
    proposed = {name: np.ones(9, bool) for name in rank}
    score = {name: (3 - r).astype(np.float32) for name, r in rank.items()}
    candidates = CandidateSet(users, items, score, rank, proposed)
    labels = (items == targets[users]).astype(np.int8)
    popularity = Popularity(np.array([6, 5, 4, 3, 2, 1], float))       # item 0 most popular
    return StageResult(candidates, labels), targets, popularity


def ranks(result, targets, popularity, scores):
    return recommender_ranks(result.candidates, scores, popularity, [np.zeros(0, np.int64)] * 3, targets)


def test_a_source_order_puts_its_list_first_and_the_rest_below():
    result, targets, popularity = stage()
    assert orders(result.candidates) == [LEARNED, FUSION, "source:knn", "source:pop"]
    knn = order_scores(result.candidates, "source:knn", None, popularity)
    assert ranks(result, targets, popularity, knn).tolist() == [0, 0, 0]
    pop = order_scores(result.candidates, "source:pop", None, popularity)
    assert ranks(result, targets, popularity, pop).tolist() == [0, 1, 2]
    # a candidate the source did not list goes below the source's last listed one
    partial = CandidateSet(result.candidates.row, result.candidates.item, result.candidates.score,
                           {"knn": np.where(result.candidates.item == 0, 100, result.candidates.rank["knn"]),
                            "pop": result.candidates.rank["pop"]},
                           {"knn": result.candidates.item != 0, "pop": result.candidates.proposed["pop"]})
    scores = order_scores(partial, "source:knn", None, popularity)
    for user in range(3):
        own = scores[(partial.row == user)]
        listed = partial.proposed["knn"][partial.row == user]
        assert own[~listed].max() < own[listed].min()
    with pytest.raises(ValueError, match="unknown order"):
        order_scores(result.candidates, "source:nothing", None, popularity)


def test_the_learned_order_is_kept_only_when_it_does_at_least_as_well_as_every_fallback():
    result, targets, popularity = stage()
    histories = [np.zeros(0, np.int64)] * 3
    # held-out scores that find no target: the best fallback (knn, every target first) is served
    wrong = np.where(result.labels == 1, 0.1, 0.9).astype(np.float32)
    choice = choose_order(result, wrong, popularity, histories, targets, k=1)
    assert choice.order == "source:knn" and not choice.learned
    # k = 1: knn hits 3/3; pop hits user 0 only; learned (wrong) hits none
    assert choice.validation["source:knn"] == {"hr@1": 1.0, "ndcg@1": 1.0}
    assert choice.validation["source:pop"] == {"hr@1": pytest.approx(1 / 3, abs=1e-4),
                                               "ndcg@1": pytest.approx(1 / 3, abs=1e-4)}
    assert choice.validation[LEARNED] == {"hr@1": 0.0, "ndcg@1": 0.0}
    # held-out scores as good as the best fallback: the learned order stays
    right = result.labels.astype(np.float32)
    choice = choose_order(result, right, popularity, histories, targets, k=1)
    assert choice.order == LEARNED and choice.summary()["learned_ranker_chosen"] is True
    # no held-out scores (too few targets to cross-fit): the best fallback, said so
    choice = choose_order(result, None, popularity, histories, targets, k=1)
    assert choice.order == "source:knn" and "no held-out" in choice.reason
    # a configured order is served as it is; an unknown one is refused
    assert choose_order(result, wrong, popularity, histories, targets, configured=FUSION).order == FUSION
    with pytest.raises(ValueError, match="not one of"):
        choose_order(result, wrong, popularity, histories, targets, configured="source:tower")


def test_strict_order_breaks_ties_by_popularity_and_survives_float32():
    rows = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.5, 0.5, 0.9, 1e-9, 1.1e-9])        # user 1's scores differ below float32's step at 2.0
    popularity = np.array([0.2, 0.7, 0.1, 0.3, 0.4])
    out = order_scores_of(rows, scores, popularity)
    # user 0: 0.9 first, then the two 0.5s by popularity (the second one, 0.7, first)
    assert out[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert out[3] < out[4] and (np.float32(2.0) + out[3]) < (np.float32(2.0) + out[4])


def order_scores_of(rows, scores, popularity):
    from recsys.retrieval.ordering import strict_order

    return strict_order(rows, scores, popularity)


def test_each_source_order_reproduces_that_sources_own_ranks_on_a_real_stage():
    """On run_stage's candidates of the toy log in tests/retrieval/test_recommender.py: wherever a
    source ranks the target within its own list, its order over the merged candidates gives the
    same rank, history excluded."""
    from recsys.retrieval.recommender import CandidateConfig, run_stage
    from tests.retrieval.test_recommender import sources

    histories = [np.array([0, 1]), np.array([3]), np.array([2])]
    targets = np.array([2, 4, 0])
    user_vectors = np.array([[0, 0, 0, 0, 1.0], [0, 0, 1.0, 0, 0.5], [1.0, 0, 0, 0, 0]], dtype=np.float32)
    srcs, popularity = sources(user_vectors)
    stage = run_stage(srcs, popularity, histories, targets, CandidateConfig(n_per_source=3), evaluate=True)
    listed = 0
    for name, own in stage.ranks.items():
        scores = order_scores(stage.candidates, f"source:{name}", None, popularity)
        served = recommender_ranks(stage.candidates, scores, popularity, histories, targets)
        inside = own < 2                                             # within every source's list after the history
        listed += inside.sum()
        assert served[inside].tolist() == own[inside].tolist(), name
    assert listed >= 4
