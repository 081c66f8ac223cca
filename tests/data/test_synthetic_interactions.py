"""The synthetic interaction log: seeded, fashion-like statistics, ties, sequential structure."""
import json

import numpy as np
import pandas as pd
import pytest

from recsys.data.synthetic_interactions import SyntheticInteractionsConfig, generate_interactions, write_interactions
from recsys.eval.sequential import leave_last_out
from recsys.retrieval.transitions import TransitionKNN

SMALL = dict(n_users=3000, n_items=2000, seed=1)


@pytest.fixture(scope="module")
def log():
    return generate_interactions(SyntheticInteractionsConfig(**SMALL))


def test_seeded(log):
    again, items, _ = generate_interactions(SyntheticInteractionsConfig(**SMALL))
    pd.testing.assert_frame_equal(log[0], again)
    other, _, _ = generate_interactions(SyntheticInteractionsConfig(**{**SMALL, "seed": 2}))
    assert not log[0].equals(other)


def test_fashion_like_statistics(log):
    interactions, items, summary = log
    per_user = interactions.groupby("user_id").size()
    assert per_user.median() == pytest.approx(6, abs=1)
    assert summary["interactions"] == len(interactions) and summary["users"] == 3000
    # Zipfian: the top 1% of items take far more than 1% of the interactions
    counts = interactions["item_id"].value_counts()
    assert counts.iloc[:len(counts) // 100].sum() / counts.sum() > 0.08
    assert set(items.columns) == {"item_id", "group", "category", "colour", "title"}
    assert items["item_id"].is_unique and len(items) == 2000 and items["category"].nunique() == 48
    assert set(interactions["item_id"]) <= set(items["item_id"])
    # ties in the order column (baskets) exist, and the file is in time order
    assert summary["tied_timestamps"] > 0
    assert interactions["timestamp"].is_monotonic_increasing


def test_next_item_follows_the_previous_one(log):
    """Transitions predict the next item far better than chance; same or partner category often."""
    interactions, items, _ = log
    split = leave_last_out(interactions["user_id"], interactions["item_id"], np.arange(len(interactions)))
    knn = TransitionKNN.fit(split.training_sequences("test"), split.n_items)
    scores = knn.scores(split.history("test"))
    top10 = np.argsort(-scores, axis=1)[:, :10]
    hit = (top10 == split.targets("test")[:, None]).any(1).mean()
    assert hit > 0.15                                       # chance: 10 / ~1,900 items


def test_write_parquet_and_csv(tmp_path):
    cfg = SyntheticInteractionsConfig(n_users=50, n_items=100, n_groups=2, categories_per_group=3,
                                      out_dir=str(tmp_path / "p"))
    manifest = write_interactions(cfg)
    frame = pd.read_parquet(manifest["files"]["interactions"])
    assert list(frame.columns) == ["user_id", "item_id", "timestamp"]
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["summary"]["interactions"] == len(frame)
    cfg.out_dir, cfg.format = str(tmp_path / "c"), "csv"
    manifest = write_interactions(cfg)
    assert len(pd.read_csv(manifest["files"]["interactions"])) == len(frame)
    with pytest.raises(ValueError):
        SyntheticInteractionsConfig(format="json")


def test_a_sequences_only_log_keeps_each_users_order_without_times(log):
    frame, _, summary = generate_interactions(SyntheticInteractionsConfig(**SMALL, order_column="position"))
    assert "timestamp" not in frame.columns and summary["tied_timestamps"] == 0
    timed = log[0]
    # the same rows in the same file order; position = the user's step in time order (file order in ties)
    assert frame[["user_id", "item_id"]].equals(timed[["user_id", "item_id"]])
    assert frame["position"].tolist() == timed.groupby("user_id").cumcount().tolist()
    first = frame[frame["user_id"] == frame["user_id"].iloc[0]]
    assert first["position"].tolist() == list(range(len(first)))
    with pytest.raises(ValueError, match="order_column"):
        SyntheticInteractionsConfig(order_column="time")
