"""Fixtures shared by the job tests: a small generated H&M-like dataset in the adapters' formats
(customers / articles / transactions parquet; young customers buy Divided articles, older ones
Ladieswear, so the profile tower has something to learn) and one persona run trained on it, which
the persona job's test checks and the CRM job's test reads (one Ray Train fit for both)."""
import contextlib
import io
import time

import numpy as np
import pandas as pd
import pytest

GROUPS = {"Divided": ["Top", "Shorts"], "Ladieswear": ["Dress", "Blouse"]}


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def hm_like_persona_run(ray_session, hm_like, tmp_path_factory):
    """(the job's returned metrics, its run directory, what it printed) of one small persona run."""
    from ray_jobs import train_persona

    deadline = time.time() + 60   # every CPU free again (see idle_ray)
    while ray_session.available_resources().get("CPU", 0) < ray_session.cluster_resources()["CPU"]:
        assert time.time() < deadline, f"Ray CPUs still held after 60 s: {ray_session.available_resources()}"
        time.sleep(1)
    root = tmp_path_factory.mktemp("persona_runs")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        metrics = train_persona.main([
            "--config", "configs/persona.yaml",
            "--set", f"data.customers={hm_like / 'customers.parquet'}",
            "--set", f"data.articles={hm_like / 'articles.parquet'}",
            "--set", f"data.transactions={hm_like / 'transactions.parquet'}",
            "--set", "train.epochs=2", "--set", "train.batch_size=64", "--set", "evaluation.personas=3",
            "--set", "evaluation.tsne_sample=60", "--set", f"output_root={root}", "--set", "run_name=fixed"])
    return metrics, root / "fixed", printed.getvalue()
