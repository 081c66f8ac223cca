import numpy as np
import pytest

from recsys.metrics.retrieval import blockwise_ranks, positive_ranks, ranking_summary, similarity_stats


def test_ranks_by_hand():
    # gallery items on the unit circle; queries chosen so the positives rank 0, 2 and 1.
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = np.array([[1.0, 0.0],          # closest to g0 -> rank 0
                        [0.9, -0.1],         # g0 (0.9) > g2 (-0.9)? scores: g0 .9, g1 -.1, g2 -.9 -> g1 rank 1
                        [0.6, 0.8]])         # scores: g0 .6, g1 .8, g2 -.6 -> g2 rank 2
    assert positive_ranks(queries, gallery).tolist() == [0, 1, 2]
    summary = ranking_summary(np.array([0, 1, 2]), ks=(1, 2))
    assert summary["top1"] == pytest.approx(1 / 3) and summary["top2"] == pytest.approx(2 / 3)
    assert summary["precision@2"] == pytest.approx(1 / 3) and summary["recall@2"] == pytest.approx(2 / 3)
    assert summary["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_ties_count_in_favour_of_the_positive():
    gallery = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert positive_ranks(gallery, gallery).tolist() == [0, 0]


def test_blockwise_ranks_only_compare_within_blocks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(130, 8))
    ranks = blockwise_ranks(x, x.copy(), block=64)
    assert len(ranks) == 128  # the partial block of 2 is dropped
    assert ranks.max() <= 63
    shuffled = blockwise_ranks(x, x[::-1].copy(), block=64)
    assert shuffled.mean() > 10


def test_similarity_stats():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    stats = similarity_stats(q, q)
    assert stats["mean_positive_similarity"] == 1.0 and stats["mean_negative_similarity"] == 0.0
    assert stats["query_norm_min"] == stats["query_norm_max"] == 1.0
    assert stats["query_embedding_variance"] == pytest.approx(0.5)


def test_evaluate_pairs_marks_in_batch_as_missing_when_there_are_too_few_pairs():
    from recsys.metrics.retrieval import evaluate_pairs

    x = np.eye(10)
    report = evaluate_pairs(x, x, block=64)
    assert report["full"]["top1"] == 1.0
    assert report["inbatch64"]["n_queries"] == 0 and np.isnan(report["inbatch64"]["top5"])
