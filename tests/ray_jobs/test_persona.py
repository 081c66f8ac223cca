"""The persona job on Ray Train for real, on the small generated H&M-like dataset of conftest.py
(``hm_like``; the run is the session's ``hm_like_persona_run``)."""
import json

import pytest

from recsys.models.persona import PersonaRecommender

pytestmark = pytest.mark.ray


def test_persona_job_writes_the_run_directory_and_metrics_in_range(hm_like_persona_run):
    metrics, run_dir, printed = hm_like_persona_run
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
            # one article per category (same scores, same tie order): its categories include the plain
            # list's (the first ones met in rank order), so category_hit@3 can only rise
            if ranker != "model":
                distinct = saved[population][f"{ranker.removesuffix('_pop_ties')}_one_per_category"]["overall"]
                assert distinct["category_hit@3"] >= report["overall"]["category_hit@3"]
        # an oracle list per persona can always repeat the best list for everyone
        ceiling = saved[population]["category_hit@3_ceiling"]
        assert ceiling["one_list_for_everyone"] <= ceiling["one_list_per_persona"] <= 1
        most_popular = ("most_popular", "most_popular_one_per_category")    # one list for everyone as well
        assert max(saved[population][r]["overall"]["category_hit@3"] for r in most_popular) <= ceiling[
            "one_list_for_everyone"]
    # Two product groups split by age: the model and PersonaPop see it; MostPop cannot.
    assert saved["warm"]["model"]["overall"]["category_hit@3"] > 0.5
    assert 0 < saved["warm"]["chance"]["overall"]["hit@3"] < 1
    assert {"train_loss", "val_hit@3", "val_category_hit@3", "val_auc"} <= set(saved["history"][-1])
    assert "example {" in printed  # (the worker's epoch lines do not reach this driver)

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
