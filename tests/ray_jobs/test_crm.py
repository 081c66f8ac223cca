"""The CRM job on Ray Data for real, over the session's small persona run (conftest.py): messages
for every persona and two customers, the claim checker's evaluation, segment fit recomputed here
by hand from the raw transactions, and canaries that must not reach any prompt."""
import json

import numpy as np
import pandas as pd
import pytest

from ray_jobs import crm
from recsys.config import ConfigError
from recsys.models.persona import PersonaRecommender

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def campaign_run(ray_session, hm_like_persona_run, tmp_path_factory):
    _, persona_run, _ = hm_like_persona_run
    out = tmp_path_factory.mktemp("crm")
    report = crm.main(["--config", "configs/crm.yaml", "--set", f"persona_run={persona_run}",
                       "--set", "embedder=hashing", "--set", "evaluation.canary_share=0.25",
                       "--set", "profiles=[{age: 20, fashion_news_frequency: Regularly}]",
                       "--set", f"output_root={out}", "--set", "run_name=fixed"])
    return report, out / "fixed", persona_run


def _hand_fit(hm_like, recommender, picks: dict[str, list[str]], k: int) -> tuple[float, float, int]:
    """hit@k of each customer's persona picks and of MostPop on the customer's last purchase day;
    with a PersonaPop run, also the picks themselves, from the training days' purchases alone."""
    articles = set(pd.read_parquet(hm_like / "articles.parquet")["article_id"])
    t = pd.read_parquet(hm_like / "transactions.parquet")
    t = t[t["article_id"].isin(articles)].assign(day=lambda f: f["t_dat"].dt.normalize())
    t = t.drop_duplicates(["customer_id", "day", "article_id"])   # one purchase per article and day
    days = t.groupby("customer_id")["day"].agg(["max", lambda d: sorted(set(d))])
    test = t[t["day"] == t["customer_id"].map(days["max"])]
    cutoff = {c: (ds[-2] if len(ds) >= 3 else ds[-1]) for c, ds in days.iloc[:, 1].items()}
    train = t[t["day"] < t["customer_id"].map(cutoff)]
    counts = train["article_id"].value_counts()
    candidates = sorted(counts.index)
    popular = sorted(candidates, key=lambda a: -counts[a])[:k]   # stable: ties in id order
    customers = pd.read_parquet(hm_like / "customers.parquet").set_index("customer_id")

    def persona_of(customer: str) -> str:
        row = customers.loc[customer]
        return recommender.persona({f: row[f] for f in ("age", "club_member_status", "fashion_news_frequency")
                                    if pd.notna(row[f])})

    if recommender.ranker == "persona_popular":   # the persona's training purchases, then overall, then id
        train = train.assign(persona=train["customer_id"].map(persona_of))
        for name, chosen in picks.items():
            own = train.loc[train["persona"] == name, "article_id"].value_counts()
            assert chosen == sorted(candidates, key=lambda a: (-own.get(a, 0), -counts[a], a))[:k], name
    pick_hits, pop_hits = [], []
    for customer, bought in test.groupby("customer_id")["article_id"]:
        persona = persona_of(customer)
        pick_hits.append(bool(set(bought) & set(picks[persona])))
        pop_hits.append(bool(set(bought) & set(popular)))
    return float(np.mean(pick_hits)), float(np.mean(pop_hits)), len(pick_hits)


def test_crm_job_writes_grounded_messages_and_its_evaluation(campaign_run, hm_like):
    report, run_dir, persona_run = campaign_run
    for name in ("messages.jsonl", "prompts.jsonl", "report.json", "report.html", "manifest.json", "config.yaml"):
        assert (run_dir / name).is_file(), name
    results = [json.loads(line) for line in (run_dir / "messages.jsonl").read_text().splitlines()]
    recommender = PersonaRecommender.load(persona_run)
    names = recommender.personas.names
    assert [r["segment"]["name"] for r in results[:3]] == names and len(results) == 6
    assert all(r["segment"]["name"] == "one customer" for r in results[3:5])   # no customer id in a prompt
    assert [r["kind"] for r in results] == ["persona"] * 3 + ["customer"] * 2 + ["profile"]
    customer_ids = [r["key"] for r in results[3:5]]   # the outputs say who, the prompts do not
    assert not any(c in (run_dir / "prompts.jsonl").read_text() for c in customer_ids)
    young = {"age": 20, "fashion_news_frequency": "Regularly"}
    assert results[5]["segment"] == {"name": f"profile (persona {recommender.persona(young)})", "profile": young}
    assert results[5]["product_ids"] == [a for a, _ in recommender.recommend(young, 3)]
    # The offline template writer: three tones per segment, every one passing the checker first time.
    assert report["messages"] == 18 and report["rejected_drafts"] == 0 and not report["dropped"]
    assert report["backend"] == "crm templates (stand-in, no LLM)"
    assert "say nothing about a real LLM" in (run_dir / "report.html").read_text()
    for result in results:
        known = {s["snippet_id"] for snippets in result["sources"].values() for s in snippets}
        for message in result["messages"]:
            assert set(message["product_ids"]) <= set(result["product_ids"]) and message["product_ids"]
            assert set(message["source_ids"]) <= known and len(message["text"]) <= 1000
    # A persona's picks are its top 3 under the run's served ranker.
    for name, result in zip(names, results):
        assert result["product_ids"] == [a for a, _ in recommender.recommend_persona(name, 3)]
        assert result["segment"]["profile"]["customers"] > 0
    # Segment fit, recomputed from the raw files.
    picks = dict(zip(names, (r["product_ids"] for r in results)))
    fit = report["segment_fit"]
    picks_hit, popular_hit, n = _hand_fit(hm_like, recommender, picks, 3)
    assert fit["n_customers"] == n == 120
    assert fit["segment_picks"]["overall"]["hit@3"] == pytest.approx(picks_hit)
    assert fit["most_popular"]["overall"]["hit@3"] == pytest.approx(popular_hit)
    assert 0 < fit["chance"]["overall"]["hit@3"] < 1
    # Privacy: canaries in a quarter of the customers' rows, none in any prompt (read back here too).
    privacy = report["privacy"]
    assert privacy["canaries"] >= 60 and privacy["leaked"] == 0 and privacy["prompts"] == 18
    assert "CANARY-" not in (run_dir / "prompts.jsonl").read_text()
    # The checker on this run's messages: each injected false claim found, no valid message flagged.
    checker = report["claim_checker"]
    assert checker["n"] == 18 and checker["tp"] + checker["fn"] == 9
    assert checker["precision"] == 1.0 and checker["recall"] >= 0.75, checker


def test_unknown_personas_and_non_runs_are_refused(hm_like_persona_run, tmp_path):
    _, persona_run, _ = hm_like_persona_run
    with pytest.raises(ConfigError, match="unknown persona.*'nobody'"):
        crm.main(["--config", "configs/crm.yaml", "--set", f"persona_run={persona_run}", "--set", "personas=[nobody]",
                  "--set", f"output_root={tmp_path}"])
    with pytest.raises(ConfigError, match=r"profiles\[0\].*'height'"):
        crm.main(["--config", "configs/crm.yaml", "--set", f"persona_run={persona_run}",
                  "--set", "profiles=[{height: 170}]", "--set", f"output_root={tmp_path}"])
    with pytest.raises(ConfigError, match="product_ids.*'nope'"):
        crm.main(["--config", "configs/crm.yaml", "--set", f"persona_run={persona_run}",
                  "--set", "product_ids=[nope]", "--set", f"output_root={tmp_path}"])
    assert not any(tmp_path.iterdir())   # refused before any run directory was written
    with pytest.raises(ConfigError, match="not a train_persona run"):
        crm.main(["--config", "configs/crm.yaml", "--set", f"persona_run={tmp_path}"])
    with pytest.raises(ConfigError, match="unknown channel"):
        crm.main(["--config", "configs/crm.yaml", "--set", "channel=fax"])
