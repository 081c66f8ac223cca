"""The persona job on Ray Train for real, on a small generated H&M-like dataset written in the
adapters' formats (customers / articles / transactions parquet): young customers buy Divided
articles, older ones Ladieswear, so the profile tower has something to learn."""
import json

import numpy as np
import pandas as pd
import pytest

from ray_jobs import train_persona
from recsys.models.persona import PersonaRecommender

pytestmark = pytest.mark.ray

GROUPS = {"Divided": ["Top", "Shorts"], "Ladieswear": ["Dress", "Blouse"]}


@pytest.fixture(scope="module")
def hm_like(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("hm_like")
    articles = []
    for i in range(40):
        group = list(GROUPS)[i % 2]
        kind = GROUPS[group][(i // 2) % 2]
        articles.append({"article_id": f"{i:010d}", "prod_name": f"{kind} {i}", "product_type_name": kind,
                         "product_group_name": "Garment", "index_group_name": group,
                         "garment_group_name": f"{kind}s", "colour_group_name": rng.choice(["Black", "White"])})
    pd.DataFrame(articles).to_parquet(root / "articles.parquet")
    customers, transactions = [], []
    for c in range(120):
        young = c % 2 == 0
        customers.append({"customer_id": f"c{c:03d}", "FN": 1.0 if c % 3 == 0 else None, "Active": None,
                          "club_member_status": "ACTIVE" if c % 5 else "PRE-CREATE",
                          "fashion_news_frequency": "Regularly" if young else "NONE",
                          "age": None if c == 7 else float(rng.integers(18, 28) if young else rng.integers(50, 70)),
                          "postal_code": "x"})
        n_days = 1 if c % 10 == 0 else int(rng.integers(3, 6))  # every tenth customer is cold (one day)
        for day in rng.choice(300, n_days, replace=False):
            for _ in range(int(rng.integers(1, 3))):
                article = 2 * int(rng.integers(0, 20)) + (0 if young else 1)  # even = Divided, odd = Ladieswear
                transactions.append({"t_dat": pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(day)),
                                     "customer_id": f"c{c:03d}", "article_id": f"{article:010d}",
                                     "price": 0.01 + 0.001 * article, "sales_channel_id": 2})
    transactions.append({"t_dat": pd.Timestamp("2020-05-01"), "customer_id": "c001", "article_id": "9999999999",
                         "price": 0.5, "sales_channel_id": 1})  # an article without metadata: left out
    pd.DataFrame(customers).to_parquet(root / "customers.parquet")
    pd.DataFrame(transactions).to_parquet(root / "transactions.parquet")
    return root


def test_persona_job_writes_the_run_directory_and_metrics_in_range(idle_ray, hm_like, tmp_path, capsys):
    metrics = train_persona.main([
        "--config", "configs/persona.yaml",
        "--set", f"data.customers={hm_like / 'customers.parquet'}",
        "--set", f"data.articles={hm_like / 'articles.parquet'}",
        "--set", f"data.transactions={hm_like / 'transactions.parquet'}",
        "--set", "train.epochs=2", "--set", "train.batch_size=64", "--set", "evaluation.personas=3",
        "--set", "evaluation.tsne_sample=60", "--set", f"output_root={tmp_path / 'runs'}", "--set", "run_name=fixed"])
    run_dir = tmp_path / "runs" / "fixed"
    for name in ("checkpoints/best_model.pt", "checkpoints/featurizer.json", "products.parquet", "personas.json",
                 "metrics.json", "tsne.png", "personas.png", "training_charts.png", "manifest.json", "config.yaml"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["k"] == 3 and len(saved["history"]) == 2
    assert saved["split"]["cold_users"] == 12 and saved["split"]["warm_users"] == 108
    assert saved["n_candidates"] <= 40 and saved["n_customers"] == 120
    assert len(saved["personas"]) == 3 and sum(p["size"] for p in saved["personas"]) == 120
    assert all(" · " in p["name"] and p["name"].startswith("age ") for p in saved["personas"])
    for population in ("warm", "cold"):
        for ranker in ("model", "model_pop_ties", "most_popular", "persona_popular"):
            report = saved[population][ranker]
            assert report["overall"]["n"] == saved[population]["n_customers"] > 0
            for block in [report["overall"], *report["per_persona"].values()]:
                for metric in ("hit@3", "category_hit@3"):
                    assert block[metric] is None or 0 <= block[metric] <= 1
            assert report["overall"]["hit@3"] <= report["overall"]["category_hit@3"]
    # Two product groups split by age: the model and PersonaPop see it; MostPop cannot.
    assert saved["warm"]["model"]["overall"]["category_hit@3"] > 0.5
    assert 0 < saved["warm"]["chance"]["overall"]["hit@3"] < 1
    assert {"train_loss", "val_hit@3", "val_category_hit@3", "val_auc"} <= set(saved["history"][-1])
    assert "example {" in capsys.readouterr().out  # (the worker's epoch lines do not reach this driver)

    recommender = PersonaRecommender.load(run_dir)
    young = recommender.recommend({"age": 20, "fashion_news_frequency": "Regularly"}, top_n=5)
    assert len(young) == 5 and all(isinstance(a, str) for a, _ in young)
    # the served ranker is the validation day's choice: cosines for the two-tower, purchase counts for PersonaPop
    assert recommender.ranker == saved["served"]["ranker"]
    assert all(-1 <= s <= 1 for _, s in young) if recommender.ranker == "model" else young[0][1] >= 1
    assert recommender.persona({"age": 20}) in {p["name"] for p in saved["personas"]}
    with pytest.raises(ValueError, match="profile field 'club_member_status'"):
        recommender.recommend({"club_member_status": 1})
    assert metrics["run_dir"] == str(run_dir)
