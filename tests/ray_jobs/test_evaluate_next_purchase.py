"""Protocol E2 end to end on Ray Train: a generated purchase log where customers rebuy their own
favourites, so the recommender (repurchase candidates + learned ranker) must beat MostPop."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from ray_jobs import evaluate_next_purchase

pytestmark = pytest.mark.ray

FAST = ["--set", "expected_counts=null", "--set", "customers=null", "--set", "articles=null",
        "--set", "user_tower.dim=16", "--set", "user_tower.max_len=20", "--set", "train.epochs=1",
        "--set", "train.patience=0", "--set", "sources.user_tower=20", "--set", "sources.itemknn=20",
        "--set", "sources.recent=20", "--set", "bootstrap=500", "--set", "ranker.max_iter=100",
        "--set", "ranker_stages=3"]


def generated_log(path, n_customers=160, n_items=150, seed=0):
    """Each customer has 3 favourite items and buys 3-6 days, 2-3 articles a day: a favourite with
    probability 0.6, else an item drawn by (Zipf) popularity."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1)
    popularity /= popularity.sum()
    rows = []
    for c in range(n_customers):
        favourites = rng.choice(n_items, 3, replace=False)
        days = np.sort(rng.choice(120, rng.integers(3, 7), replace=False))
        for day in days:
            for _ in range(rng.integers(2, 4)):
                item = rng.choice(favourites) if rng.random() < 0.6 else rng.choice(n_items, p=popularity)
                rows.append((f"c{c:04d}", f"{item:010d}", pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(day)),
                             float(rng.uniform(0.01, 0.05)), 1))
    frame = pd.DataFrame(rows, columns=["customer_id", "article_id", "t_dat", "price", "sales_channel_id"])
    path.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path / "transactions.parquet")
    return path


def test_evaluate_next_purchase_report_and_model_beats_mostpop(idle_ray, tmp_path):
    data = generated_log(tmp_path / "log")
    out = tmp_path / "e2"
    report = evaluate_next_purchase.main(["--set", f"data_dir={data}", "--set", f"out={out}", *FAST])
    saved = json.loads((out / "metrics.json").read_text())
    assert {"methods", "model_vs_repurchase", "counts", "config", "timings_s", "candidates", "ranker"} <= set(saved)
    methods = saved["methods"]
    assert set(methods) == {"MostPop", "RecentPop (30d)", "Repurchase + MostPop", "two-stage recommender (model)",
                            "user tower alone"}
    for values in methods.values():
        assert set(values) == {"map@12", "recall@12"} and 0 <= values["map@12"] <= 1 and 0 <= values["recall@12"] <= 1
    assert saved["counts"]["test"]["customers"] == 160      # every customer buys on >= 3 days
    assert saved["counts"]["validation"]["customers"] == 160
    ci = saved["model_vs_repurchase"]
    assert ci["ci_low"] <= ci["mean_difference"] <= ci["ci_high"]
    model, mostpop = methods["two-stage recommender (model)"], methods["MostPop"]
    assert model["map@12"] > 2 * mostpop["map@12"] and model["recall@12"] > mostpop["recall@12"]
    assert saved["candidates"]["target_recall"]["test"]["merged"] >= saved["candidates"]["target_recall"]["test"][
        "repurchase"] > 0
    assert saved["config"]["sources"]["user_tower"] == 20
    assert report["methods"] == methods
    # the heavy steps ran as Ray tasks with the declared resources, none in this (driver) process
    tasks = saved["ray_tasks"]
    assert set(tasks) == {"e2.content", "e2.ranker", *(f"e2.candidates_{s}" for s in ("val1", "val2", "val3", "test"))}
    assert all(t["pid"] != os.getpid() and t["resources"] == {"CPU": 1.0} for t in tasks.values())
    assert saved["timings_s"]["candidates"] > 0
    assert (out / "comparison.png").is_file() and (out / "training_charts.png").is_file()
