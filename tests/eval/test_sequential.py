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
