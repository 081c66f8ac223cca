"""Protocol E3's leave-last-out split by hand, including ties in the order column."""
import numpy as np
import pytest

from recsys.eval.sequential import full_ranking_ranks, leave_last_out
from recsys.metrics.ranking import target_ranks


def toy_split():
    # file order matters only for ties: u1 has two rows at time 2 (y before z in the file)
    users = ["u1", "u2", "u1", "u1", "u3", "u1", "u2", "u3", "u3", "u3"]
    items = ["x", "x", "y", "z", "w", "x", "y", "x", "y", "z"]
    order = [1, 5, 2, 2, 9, 3, 6, 1, 2, 3]
    return leave_last_out(users, items, order)


def test_sequences_follow_the_order_column_with_file_order_for_ties():
    split = toy_split()
    assert split.user_ids.tolist() == ["u1", "u2", "u3"]
    assert split.item_ids.tolist() == ["w", "x", "y", "z"]        # every item of the log, sorted
    w, x, y, z = range(4)
    assert [s.tolist() for s in split.sequences] == [[x, y, z, x], [x, y], [x, y, z, w]]


def test_last_is_test_second_to_last_is_validation_and_short_users_are_not_evaluated():
    split = toy_split()
    w, x, y, z = range(4)
    assert split.evaluated.tolist() == [True, False, True]        # u2 has 2 interactions
    assert split.eval_rows.tolist() == [0, 2]
    assert split.targets("test").tolist() == [x, w]
    assert split.targets("val").tolist() == [z, z]
    assert [h.tolist() for h in split.history("test")] == [[x, y, z], [x, y, z]]
    assert [h.tolist() for h in split.history("val")] == [[x, y], [x, y]]
    # what a model may learn from: evaluated users cut before the stage's target, u2 whole
    assert [s.tolist() for s in split.training_sequences("val")] == [[x, y], [x, y], [x, y]]
    assert [s.tolist() for s in split.training_sequences("test")] == [[x, y, z], [x, y], [x, y, z]]
    with pytest.raises(ValueError):
        split.history("train")


def test_timestamps_work_as_order():
    split = leave_last_out(["a", "a", "a"], ["i1", "i2", "i3"],
                           np.array(["2020-01-03", "2020-01-01", "2020-01-02"], dtype="datetime64[ns]"))
    assert split.targets("test").tolist() == [0] and split.targets("val").tolist() == [2]


def test_full_ranking_in_chunks_equals_one_pass():
    rng = np.random.default_rng(0)
    scores = rng.random((7, 5))
    targets = rng.integers(0, 5, 7)
    histories = [rng.choice(5, 2, replace=False) for _ in range(7)]
    chunked = full_ranking_ranks(lambda rows: scores[rows], targets, histories, chunk_size=3)
    assert chunked.tolist() == target_ranks(scores, targets, histories).tolist()


def test_baskets_are_runs_of_equal_keys_per_user():
    # u1 bought x, y on day 1 and z, x on day 2; u2 two single-item days; keys repeat across users
    split = leave_last_out(["u1", "u1", "u2", "u1", "u1", "u2"], ["x", "y", "x", "z", "x", "y"], [0, 1, 0, 2, 3, 1],
                           baskets=[1, 1, 1, 2, 2, 2])
    assert [b.tolist() for b in split.baskets] == [[0, 0, 1, 1], [0, 1]]
    assert split.has_baskets
    assert [b.tolist() for b in split.basket_ids("test")] == [[0, 0, 1]]          # u1 only is evaluated
    assert [b.tolist() for b in split.basket_ids("train_val")] == [[0, 0], [0, 1]]
    # without baskets every item is its own
    plain = leave_last_out(["u1"] * 3, ["x", "y", "z"], [0, 1, 2])
    assert not plain.has_baskets and [b.tolist() for b in plain.basket_ids("test")] == [[0, 1]]


def test_paired_bootstrap_by_hand():
    from recsys.eval.sequential import paired_bootstrap, per_user_metrics

    a, b = np.array([0, 1, 20, 3]), np.array([0, 30, 20, 3])
    per_user = per_user_metrics(a, k=10)
    assert per_user["hr@10"].tolist() == [1, 1, 0, 1]
    assert np.allclose(per_user["ndcg@10"], [1, 1 / np.log2(3), 0, 1 / np.log2(5)])
    assert np.allclose(per_user["mrr"], [1, 0.5, 1 / 21, 0.25])
    result = paired_bootstrap(a, b, k=10, samples=500)
    # only user 1 differs: HR 1 vs 0 -> mean difference 1/4; every resample has difference >= 0
    assert result["hr@10"]["difference"] == 0.25 and result["hr@10"]["ci95"][0] >= 0
    assert result["mrr"]["difference"] == round((0.5 - 1 / 31) / 4, 4)
    assert result["users_hit_only_a@10"] == 1 and result["users_hit_only_b@10"] == 0
    same = paired_bootstrap(a, a, samples=100)
    assert same["ndcg@10"]["ci95"] == [0.0, 0.0] and same["ndcg@10"]["p_not_better"] == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:3])
