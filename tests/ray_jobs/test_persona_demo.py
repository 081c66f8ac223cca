"""The persona job on the demo's users for real (Ray Train), from configs/persona_demo.yaml: a small
train_users-style run (the job's own log and user-table functions over a generated K-Fashion
corpus's preprocessed items, plus a few bad records) instead of the H&M files."""
import json
from dataclasses import replace

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ray_jobs import train_persona
from recsys.artifacts import write_manifest
from recsys.config import load_config
from recsys.data.demo_users import STAND_IN, UserLogConfig, generate_log, user_table
from recsys.eval.persona import RANKERS, PersonaDataConfig
from recsys.models.persona import PersonaRecommender
from tests.serve_app.artifacts import preprocess_run

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def users_run(tmp_path_factory):
    """users.parquet, interactions.parquet and a manifest naming the items, as train_users writes them;
    with one duplicate user row, one interaction of an unknown item and one without a timestamp."""
    root = tmp_path_factory.mktemp("demo")
    items_dir = preprocess_run(root, 40) / "items"
    items = pq.read_table(items_dir, columns=["item_id", "category", "styles", "title"]).to_pandas()
    log = generate_log(items, UserLogConfig(n_users=150, median_length=6.0, categories=4))
    users = user_table(log, items, 0)
    run_dir = root / "train_users" / "users-v1"
    run_dir.mkdir(parents=True)
    bad = pd.DataFrame({"user_id": ["user-000001", "user-000002"], "item_id": ["no-such-item", items["item_id"][0]],
                        "timestamp": pd.to_datetime(["2021-01-01", None])})
    pd.concat([log, bad], ignore_index=True).to_parquet(run_dir / "interactions.parquet", index=False)
    pd.concat([users, users.iloc[[0]]], ignore_index=True).to_parquet(run_dir / "users.parquet", index=False)
    write_manifest(run_dir, "train_users", {"embed_run": "unused", "items": str(items_dir)}, {})
    return {"run": run_dir, "items_dir": items_dir, "item_ids": set(items["item_id"]), "log_rows": len(log),
            "users": len(users), "styles": set(users["style"].dropna())}


def test_persona_demo_trains_on_a_users_run_and_serves_its_items(idle_ray, users_run, tmp_path, capsys):
    cfg = load_config("configs/persona_demo.yaml", train_persona.TrainPersonaConfig,
                      {"train.epochs": 2, "train.batch_size": 64, "evaluation.personas": 3,
                       "evaluation.tsne_sample": 60, "output_root": str(tmp_path / "runs"), "run_name": "fixed"})
    metrics = train_persona.run(replace(cfg, data=PersonaDataConfig(users_run=str(users_run["run"]))))
    run_dir = tmp_path / "runs" / "fixed"
    assert metrics["run_dir"] == str(run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["note"] == STAND_IN and STAND_IN in capsys.readouterr().out

    # every record read is written or quarantined with its reason, and the protocol accounts for the rest
    data = saved["data"]
    assert all(block["reconciles"] for block in data.values())
    assert data["transactions"]["read"] == users_run["log_rows"] + 2
    assert data["transactions"]["quarantine_reasons"] == {"unknown_item": 1, "invalid_order": 1}
    assert data["customers"]["read"] == users_run["users"] + 1
    assert data["customers"]["quarantine_reasons"] == {"duplicate_user": 1}
    assert data["articles"]["written"] == len(users_run["item_ids"])
    rows, customers = saved["accounting"]["transactions"], saved["accounting"]["customers"]
    assert rows["reconciles"] and rows["read"] == data["transactions"]["written"]
    assert customers["reconciles"] and customers["buyers"] == customers["profiles"] == users_run["users"]
    assert saved["n_candidates"] == saved["accounting"]["items"]["candidates"] <= len(users_run["item_ids"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["inputs"]["items"] == str(users_run["items_dir"])   # from the users run's manifest

    # the model and both baselines on the same last purchase days
    for population in ("warm", "cold"):
        for ranker in RANKERS:
            overall = saved[population][ranker]["overall"]
            assert overall["n"] == saved[population]["n_customers"] > 0
            assert 0 <= overall["hit@3"] <= overall["category_hit@3"] <= 1
    names = [p["name"] for p in saved["personas"]]
    assert len(names) == 3 and sum(p["size"] for p in saved["personas"]) == saved["n_customers"]
    for name in names:   # "age 25-34 · 스트리트 style"
        age, style = name.split(" · ")
        assert age.startswith("age ") and style.split(" (")[0].removesuffix(" style") in users_run["styles"] | {"unknown"}

    recommender = PersonaRecommender.load(run_dir)
    profile = {"age": 31, "style": "스트리트"}
    top = recommender.recommend(profile, top_n=5)
    catalog = set(pq.read_table(run_dir / "products.parquet")["article_id"].to_pylist())
    assert len(top) == 5 and all(item in catalog and item in users_run["item_ids"] for item, _ in top)
    # what answers profile-only requests was chosen on the validation day (serving.json), and is what loads
    served = saved["served"]
    assert recommender.ranker == served["ranker"] in ("model", "persona_popular")
    hits = served["validation_hit@3"]
    assert served["ranker"] == ("persona_popular" if hits["persona_popular"] > hits["model"] else "model")
    if served["ranker"] == "model":
        assert all(-1 <= score <= 1 for _, score in top)                  # cosines
    else:
        assert [score for _, score in top] == sorted((score for _, score in top), reverse=True) and top[0][1] >= 1
    assert recommender.persona(profile) in names
    with pytest.raises(ValueError, match=r"profile field\(s\) \['colour'\] are not model inputs"):
        recommender.recommend({"age": 31, "colour": "블랙"})
