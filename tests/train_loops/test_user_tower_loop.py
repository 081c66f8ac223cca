"""The user-tower loop's pure parts: its E3 datasets and early stopping (the loop runs on Ray Train
in tests/ray_jobs/test_evaluate_seq.py)."""
import numpy as np

from recsys.eval.sequential import leave_last_out
from recsys.models.user_tower import UserTowerConfig
from recsys.train_loops.user_tower import should_stop, tower_datasets


def test_datasets_train_on_what_the_validation_stage_sees():
    # u1: a b c d (evaluated), u2: b c (too short: trained on whole)
    split = leave_last_out(["u1"] * 4 + ["u2"] * 2, list("abcd") + list("bc"), [1, 2, 3, 4, 1, 2])
    a, b, c, d = range(4)
    data = tower_datasets(split, max_len=3, user_columns={"profile_numeric": np.array([[30.0], [40.0]])},
                          item_vectors=np.eye(4))
    # u1 trains on a b (c = validation, d = test), u2 on b c; tokens = item + 1
    assert data["train"]["items"].tolist() == [[a + 1, 0, 0], [b + 1, 0, 0]]
    assert data["train"]["targets"].tolist() == [[b + 1, 0, 0], [c + 1, 0, 0]]
    assert data["train"]["profile_numeric"].tolist() == [[30.0], [40.0]]
    assert data["val"]["items"].tolist() == [[a + 1, b + 1, 0]] and data["val"]["target"].tolist() == [c]
    assert data["val"]["profile_numeric"].tolist() == [[30.0]]
    assert data["val_seen"]["row"].tolist() == [0, 0] and data["val_seen"]["item"].tolist() == [a, b]
    assert data["items"]["count"].tolist() == [1, 2, 1, 0] and data["items"]["vector"].shape == (4, 4)


def test_validation_users_are_a_seeded_sample():
    users = [f"u{i}" for i in range(20) for _ in range(3)]
    split = leave_last_out(users, [str(i % 7) for i in range(60)], np.arange(60))
    first = tower_datasets(split, 4, val_max_users=5, seed=1)["val"]["target"]
    again = tower_datasets(split, 4, val_max_users=5, seed=1)["val"]["target"]
    assert len(first) == 5 and first.tolist() == again.tolist()
    assert len(tower_datasets(split, 4)["val"]["target"]) == 20


def test_should_stop_after_patience_epochs_without_improvement():
    history = [{"val_hr@10": v} for v in (0.1, 0.3, 0.2, 0.25)]
    assert not should_stop(history, 3)          # best at epoch 1, 2 epochs since
    assert should_stop(history + [{"val_hr@10": 0.29}], 3)
    assert not should_stop(history + [{"val_hr@10": 0.29}], 0)
    # equal HR@10: a better MRR still counts as progress
    flat = [{"val_hr@10": 0.1, "val_mrr": m} for m in (0.01, 0.02, 0.03, 0.04)]
    assert not should_stop(flat, 2) and should_stop(flat + [{"val_hr@10": 0.1, "val_mrr": 0.01}] * 2, 2)
    assert UserTowerConfig().max_len == 50


def test_length_batches_cover_every_row_once_with_similar_lengths():
    from recsys.train_loops.user_tower import length_batches

    lengths = np.array([1, 50, 2, 49, 3, 48, 1, 50])
    batches = length_batches(lengths, 2, np.random.default_rng(0), pool=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(8))
    assert all(lengths[b].max() - lengths[b].min() <= 2 for b in batches)
