"""Protocol E3 end to end on Ray Train: a small synthetic log with strong sequential structure."""
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from ray_jobs import evaluate_seq
from recsys.retrieval.e3 import content_vectors
from recsys.data.synthetic_interactions import SyntheticInteractionsConfig, write_interactions

pytestmark = pytest.mark.ray

FAST = ["--set", "user_tower.dim=32", "--set", "user_tower.max_len=20", "--set", "user_tower.layers=1",
        "--set", "train.epochs=5", "--set", "train.batch_size=16", "--set", "train.patience=0",
        "--set", "train.lr=0.01", "--set", "candidates.n_per_source=30", "--set", "val_max_users=null",
        "--set", "ranker.kind=logistic"]  # the kind selection (two more fits per kind) is tested in tests/retrieval


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
    # the synthetic log has baskets (tied timestamps) and no --items: no content source
    assert saved["data"]["baskets"] is True
    assert set(saved["candidate_recall"]["test"]) == {"user_tower", "itemknn", "basket", "mostpop", "merged"}
    assert set(saved["sources"]) == {"user_tower", "itemknn", "basket", "mostpop"}
    assert saved["sources"]["itemknn"] == saved["baselines"]["itemknn"]
    cold = saved["cold_test_targets"]  # no --items: counted, not compared
    assert "skipped" in cold and 0 <= cold["n_users"] <= saved["n_users"]
    paired = saved["comparison"]["model_vs_itemknn"]
    for metric in ("hr@10", "ndcg@10", "mrr"):
        low, high = paired[metric]["ci95"]
        assert low <= paired[metric]["difference"] <= high
    repeats = saved["hits_on_repeated_test_targets"]
    assert repeats["model"]["hits@k"] == round(saved["model"]["hr@10"] * saved["n_users"])
    assert 0 <= repeats["itemknn"]["of_which_repeated"] <= min(repeats["repeated_targets"], repeats["itemknn"]["hits@k"])
    gap = saved["model"]["hr@10"] - saved["baselines"]["itemknn"]["hr@10"]
    assert abs(paired["hr@10"]["difference"] - gap) < 2e-4
    assert saved["timings_s"]["total"] > 0
    # the heavy steps ran as Ray tasks with the declared resources, none in this (driver) process
    tasks = saved["ray_tasks"]
    assert set(tasks) == {"e3.content", "e3.candidates_val", "e3.candidates_test", "e3.ranker", "e3.cold_targets"}
    assert all(t["pid"] != os.getpid() and t["resources"] == {"CPU": 1.0} for t in tasks.values())
    # strong sequential structure: the recommender and the tower must beat popularity
    mostpop = saved["baselines"]["mostpop"]["hr@10"]
    assert saved["model"]["hr@10"] > mostpop and saved["user_tower"]["hr@10"] > mostpop
    assert report["model"] == saved["model"]
    # the served order: chosen on held-out validation users, never below the best source's interval
    order = saved["order"]
    assert order["served"] in ("learned", "rank_fusion", *(f"source:{n}" for n in saved["sources"]))
    held_out = order["validation_held_out (hr@10, ndcg@10)"]
    assert set(held_out) == {"learned", "rank_fusion", *(f"source:{n}" for n in saved["sources"])}
    score = {name: m["hr@10"] + m["ndcg@10"] for name, m in held_out.items()}
    assert score[order["served"]] == max(score.values())
    assert order["learned_ranker_chosen"] == (order["served"] == "learned")
    # a source's order over the merged candidates reproduces that source's own ranking (its top 10)
    for name in saved["sources"]:
        assert abs(held_out[f"source:{name}"]["hr@10"] - saved["validation"][name]["hr@10"]) <= 2 / saved["n_users"]
    if order["learned_ranker_chosen"]:
        assert saved["learned_ranker"] == saved["model"]
    rival = saved["best_source"]
    sums = {name: m["hr@10"] + m["ndcg@10"] for name, m in saved["sources"].items()}
    assert sums[rival] == max(sums.values())
    for metric in ("hr@10", "ndcg@10"):
        assert saved["comparison"]["model_vs_best_source"][metric]["ci95"][1] >= 0

    candidates = pq.read_table(out / "candidates.parquet")
    assert candidates.schema.names == ["user_id", "item_id", "split", "label", "score_user_tower", "score_itemknn",
                                       "score_basket", "score_mostpop", "rank_fusion", "ranker_score"]
    assert set(candidates.column("split").to_pylist()) == {"val", "test"}
    labels = candidates.column("label").to_numpy()
    assert labels.dtype == np.int8 and 0 < labels.sum() <= 2 * saved["n_users"]
    sequences = pq.read_table(out / "sequences.parquet").to_pylist()
    assert len(sequences) == saved["n_users"]
    first = sequences[0]
    assert first["history_test"] == first["history_val"] + [first["target_val"]]
    assert (out / "comparison.png").is_file() and (out / "training_charts.png").is_file()


def test_content_vectors_from_a_generic_catalog(log):
    """--items feeds the content source: TF-IDF rows in the log's item order (no Ray involved)."""
    items = pq.read_table(log["items"]).to_pandas()
    cfg = evaluate_seq.SequentialEvalConfig()
    cfg.item_vectors.catalog.hierarchy = ["group", "category"]
    cfg.item_vectors.catalog.std_fields = ["colour"]
    cfg.item_vectors.catalog.id_col = "wrong"
    with pytest.raises(Exception, match="wrong"):
        content_vectors(cfg, log["items"], items["item_id"].to_numpy(), None)
    cfg.item_vectors.catalog.id_col, cfg.item_vectors.catalog.title_col = "item_id", "title"
    item_ids = np.r_[items["item_id"].to_numpy()[:5], ["not_in_catalog"]]
    matrix, info = content_vectors(cfg, log["items"], item_ids, None)
    dense = matrix.toarray()
    assert dense.shape[0] == 6 and info["coverage"] == round(5 / 6, 4)
    assert np.allclose(np.linalg.norm(dense[:5], axis=1), 1) and not dense[5].any()
    same_category = items["category"].to_numpy()[:5]
    # items of one category share tokens; the catalog's first two items are both in the first category
    assert same_category[0] == same_category[1] and dense[0] @ dense[1] > 0
    with pytest.raises(Exception, match="no catalog item matches"):
        content_vectors(cfg, log["items"], np.array(["x1", "x2"]), None)
    cfg.content.enabled = False
    assert content_vectors(cfg, log["items"], item_ids, None)[0] is None
    cfg.content.enabled, cfg.content.vectors = True, "item_tower"
    assert content_vectors(cfg, log["items"], item_ids, None)[0] is None


def test_cold_targets_compare_both_content_vectors_on_the_same_users(log):
    """The content source on TF-IDF and on item-tower vectors, scored on the test targets nobody bought in
    training (no Ray: the vectors are given). A tower vector equal to the TF-IDF rows must score the same."""
    from recsys.eval.sequential import leave_last_out
    from recsys.retrieval.e3 import SequentialEvalConfig, cold_target_content, content_vectors
    from recsys.retrieval.popularity import Popularity

    frame, _ = evaluate_seq.load_log(log["interactions"], "user_id", "item_id", "timestamp", True)
    split = leave_last_out(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(), frame["position"].to_numpy())
    history, target = split.history("test"), split.targets("test")
    bought = {int(i) for seq in split.training_sequences("test") for i in seq}
    expected_cold = sum(int(t) not in bought for t in target)
    cfg = SequentialEvalConfig()
    cfg.item_vectors.catalog.hierarchy = ["group", "category"]
    cfg.item_vectors.catalog.std_fields = ["colour"]
    cfg.item_vectors.catalog.id_col = "item_id"
    tfidf, _ = content_vectors(cfg, log["items"], split.item_ids, None)
    popularity = Popularity.fit(split.training_sequences("test"), split.n_items)
    n = len(target)
    is_cold = np.array([int(t) not in bought for t in target])
    # ranks that differ by user: a hit (rank 0 / 5) exactly on the cold users, a miss (50) elsewhere
    fake_ranks = {"model": np.where(is_cold, 0, 50), "sources": {"mostpop": np.where(is_cold, 5, 50)}}
    report = cold_target_content(cfg, split, log["items"], np.asarray(tfidf.todense(), dtype=np.float32), None,
                                 history, target, popularity, fake_ranks["model"], fake_ranks["sources"])
    assert report["n_users"] == expected_cold > 0 and report["share_of_test_users"] == round(expected_cold / n, 4)
    metrics = report["metrics"]
    assert metrics["model"]["hr@10"] == 1.0 and metrics["mostpop"]["hr@10"] == 1.0   # the cold users' ranks only
    assert metrics["content:item_tower"] == pytest.approx(metrics["content:tfidf"], abs=1e-4)
    assert report["item_tower_vs_tfidf"]["users"] == expected_cold
    without_items = cold_target_content(cfg, split, None, None, None, history, target, popularity,
                                        fake_ranks["model"], fake_ranks["sources"])
    assert "skipped" in without_items and without_items["n_users"] == expected_cold
