import numpy as np
import pytest

from recsys.retrieval.ranker import CandidateRanker, RankerConfig, hits_within_groups, sample_per_group


def test_sample_keeps_every_positive_and_at_most_n_negatives_per_group():
    labels = np.array([0, 1, 0, 0, 0, 0, 0, 1, 0])
    groups = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    rows = sample_per_group(labels, groups, negatives=1, seed=3)
    assert {1, 7} <= set(rows.tolist())
    assert np.bincount(groups[rows][labels[rows] == 0], minlength=3).tolist() == [1, 1, 1]
    assert sample_per_group(labels, groups, negatives=10).tolist() == list(range(9))


def test_hits_within_groups_by_hand():
    scores = np.array([0.9, 0.5, 0.1, 0.3, 0.3, 0.2, 0.8])
    labels = np.array([0, 1, 0, 0, 1, 0, 0])
    groups = np.array([5, 5, 5, 6, 6, 6, 7])
    # group 5: one higher -> rank 1; group 6: a tie does not count -> rank 0; group 7: no positive
    assert hits_within_groups(scores, labels, groups, k=1) == pytest.approx(1 / 3)
    assert hits_within_groups(scores, labels, groups, k=2) == pytest.approx(2 / 3)


@pytest.mark.parametrize("kind", ["gbdt", "logistic", "auto"])
def test_ranker_learns_which_feature_marks_the_target(kind):
    rng = np.random.default_rng(0)
    n_users, per_user = 300, 20
    groups = np.repeat(np.arange(n_users), per_user)
    labels = np.zeros(n_users * per_user, dtype=np.int8)
    labels[np.arange(n_users) * per_user + rng.integers(0, per_user, n_users)] = 1
    features = np.stack([labels + rng.normal(0, 0.3, len(labels)), rng.normal(size=len(labels))], 1)
    ranker = CandidateRanker(RankerConfig(kind=kind, negatives_per_user=5), ["signal", "noise"])
    scores = ranker.fit(features, labels, groups, held_out_scores=True).predict(features).reshape(n_users, per_user)
    top = scores.argmax(1)
    assert (labels.reshape(n_users, per_user)[np.arange(n_users), top] == 1).mean() > 0.8
    summary = ranker.summary()
    assert summary["train_rows"] == n_users * 6
    # every candidate has a held-out score (a model fitted without its user) that also finds the target
    held_out = ranker.held_out_scores.reshape(n_users, per_user)
    assert (labels.reshape(n_users, per_user)[np.arange(n_users), held_out.argmax(1)] == 1).mean() > 0.8
    if kind == "logistic":
        # out of fold: the first fold's users are scored by a model fitted on the other fold's rows only
        users = np.arange(n_users)
        fold = np.empty(n_users, np.int64)
        fold[np.random.default_rng(ranker.config.seed).permutation(n_users)] = users % 2
        rows = sample_per_group(labels, groups, 5, ranker.config.seed)
        other = rows[fold[groups[rows]] == 1]
        held = fold[groups] == 0
        expected = ranker._build("logistic").fit(features[other], labels[other]).predict_proba(features[held])[:, 1]
        assert np.allclose(ranker.held_out_scores[held], expected)
        assert not np.allclose(ranker.held_out_scores[held], scores.reshape(-1)[held], atol=1e-4)
    if kind == "auto":
        selection = summary["selection_hit@10_held_out_users"]
        assert summary["kind"] in ("gbdt", "logistic") and set(selection) == {"gbdt", "logistic"}
        # the kind chosen is judged by the same held-out scores it serves for the order choice
        assert selection[summary["kind"]] == round(hits_within_groups(ranker.held_out_scores, labels, groups), 4)
    else:
        assert summary["kind"] == kind


def test_ranker_needs_both_classes():
    with pytest.raises(ValueError):
        CandidateRanker(RankerConfig(), ["f"]).fit(np.zeros((3, 1)), np.zeros(3, np.int8), np.zeros(3))
    with pytest.raises(ValueError):
        RankerConfig(kind="lambdamart")


def test_held_out_scores_only_when_asked():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 5)
    labels = (np.arange(200) % 5 == 0).astype(np.int8)
    features = np.stack([labels + rng.normal(0, 0.3, 200)], 1)
    assert CandidateRanker(RankerConfig(kind="logistic"), ["f"]).fit(features, labels, groups).held_out_scores is None
    auto = CandidateRanker(RankerConfig(kind="auto"), ["f"]).fit(features, labels, groups)
    assert auto.held_out_scores is None and auto.selection      # compared on held-out scores, not kept
