"""Protocol E3 end to end on Ray Train: a small synthetic log with strong sequential structure."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from ray_jobs import evaluate_seq
from recsys.data.synthetic_interactions import SyntheticInteractionsConfig, write_interactions

pytestmark = pytest.mark.ray

FAST = ["--set", "user_tower.dim=32", "--set", "user_tower.max_len=20", "--set", "user_tower.layers=1",
        "--set", "train.epochs=5", "--set", "train.batch_size=16", "--set", "train.patience=0",
        "--set", "train.lr=0.01", "--set", "candidates.n_per_source=30", "--set", "val_max_users=null"]


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    cfg = SyntheticInteractionsConfig(out_dir=str(tmp_path_factory.mktemp("log")), n_users=300, n_items=300,
                                      n_groups=3, categories_per_group=4, p_sequential=0.9, p_complement_item=0.9,
                                      complements_per_item=2, seed=3)
    return write_interactions(cfg)["files"]


def test_evaluate_seq_writes_the_report_and_beats_mostpop(idle_ray, log, tmp_path):
    out = tmp_path / "e3"
    report = evaluate_seq.main(["--interactions", log["interactions"], "--user-col", "user_id", "--item-col",
                                "item_id", "--order-col", "timestamp", "--out", str(out), *FAST])
    saved = json.loads((out / "metrics.json").read_text())
    assert {"model", "user_tower", "baselines", "n_users", "n_items", "config"} <= set(saved)
    assert set(saved["baselines"]) == {"mostpop", "itemknn"}
    for values in (saved["model"], saved["user_tower"], *saved["baselines"].values()):
        assert set(values) == {"hr@10", "ndcg@10", "mrr"}
        assert 0 <= values["ndcg@10"] <= values["hr@10"] <= 1 and 0 < values["mrr"] <= 1
    assert 250 < saved["n_users"] <= 300 and saved["n_items"] <= 300
    assert saved["config"]["candidates"]["n_per_source"] == 30
    assert set(saved["candidate_recall"]["test"]) == {"user_tower", "itemknn", "mostpop", "merged"}
    assert saved["timings_s"]["total"] > 0
    # strong sequential structure: the recommender and the tower must beat popularity
    mostpop = saved["baselines"]["mostpop"]["hr@10"]
    assert saved["model"]["hr@10"] > mostpop and saved["user_tower"]["hr@10"] > mostpop
    assert report["model"] == saved["model"]

    candidates = pq.read_table(out / "candidates.parquet")
    assert candidates.schema.names == ["user_id", "item_id", "split", "label", "score_user_tower", "score_itemknn",
                                       "score_mostpop", "ranker_score"]
    assert set(candidates.column("split").to_pylist()) == {"val", "test"}
    labels = candidates.column("label").to_numpy()
    assert labels.dtype == np.int8 and 0 < labels.sum() <= 2 * saved["n_users"]
    sequences = pq.read_table(out / "sequences.parquet").to_pylist()
    assert len(sequences) == saved["n_users"]
    first = sequences[0]
    assert first["history_test"] == first["history_val"] + [first["target_val"]]
    assert (out / "comparison.png").is_file() and (out / "training_charts.png").is_file()
