"""The table across E3 runs: served order, gain over the best source, how often the ranker was served."""
import pytest

from recsys.eval.orders import order_rows, order_summary


def report(served: str, model: tuple, learned: tuple, source: tuple, ci_low: float) -> dict:
    paired = lambda a, b: {m: {"difference": round(x - y, 4), "ci95": [ci_low, round(x - y + 0.01, 4)]}  # noqa: E731
                           for m, x, y in zip(("hr@10", "ndcg@10"), a, b)}
    return {"order": {"served": served, "learned_ranker_chosen": served == "learned", "reason": "r"},
            "best_source": "itemknn", "n_users": 100,
            "model": {"hr@10": model[0], "ndcg@10": model[1]},
            "learned_ranker": {"hr@10": learned[0], "ndcg@10": learned[1]},
            "sources": {"itemknn": {"hr@10": source[0], "ndcg@10": source[1]}},
            "comparison": {"model_vs_best_source": paired(model, source),
                           "learned_ranker_vs_best_source": paired(learned, source)}}


REPORTS = {"a": report("learned", (0.30, 0.20), (0.30, 0.20), (0.25, 0.15), -0.01),
           "b": report("source:itemknn", (0.10, 0.05), (0.08, 0.04), (0.10, 0.05), 0.0),
           "c": report("learned", (0.12, 0.07), (0.12, 0.07), (0.10, 0.06), 0.001)}


def test_rows_and_summary_by_hand():
    rows = order_rows(REPORTS)
    assert rows["b"]["served"] == "source:itemknn" and rows["b"]["learned_minus_best_hr@10"] == -0.02
    assert rows["a"]["model_minus_best_ndcg@10"] == 0.05 and rows["a"]["best_source_hr@10"] == 0.25
    summary = order_summary(rows)
    # served on a and c: HR gains 0.05 and 0.02, NDCG gains 0.05 and 0.01
    assert summary["learned_ranker_served"] == 2 and summary["logs"] == 3
    assert summary["mean_gain_over_best_source_when_served_hr@10"] == pytest.approx(0.035)
    assert summary["mean_gain_over_best_source_when_served_ndcg@10"] == pytest.approx(0.03)
    assert summary["served_interval_upper_at_least_0_on_every_log"] is True
    worse = order_rows({"d": report("rank_fusion", (0.10, 0.05), (0.09, 0.04), (0.12, 0.07), -0.05)})
    # upper bound of the made-up interval: -0.02 + 0.01 < 0
    assert order_summary(worse)["served_interval_upper_at_least_0_on_every_log"] is False
    assert order_summary(worse)["mean_gain_over_best_source_when_served_hr@10"] is None


def test_tower_rows_read_the_tower_against_mostpop():
    from recsys.eval.orders import print_towers, tower_rows

    tower = {"history_skip": 3.0, "min_id_count": 10, "item_vector_dim": 128}
    run = {"config": {"user_tower_resolved": tower},
           "data": {"item_vectors": {"user_tower": {"source": "attributes (TF-IDF, truncated SVD)"}}},
           "user_tower_training": {"best_epoch": 4},
           "user_tower": {"hr@10": 0.05, "ndcg@10": 0.02}, "baselines": {"mostpop": {"hr@10": 0.01, "ndcg@10": 0.004}},
           "model": {"hr@10": 0.1, "ndcg@10": 0.07},
           "comparison": {"user_tower_vs_mostpop": {"hr@10": {"ci95": [0.02, 0.06]}, "ndcg@10": {"ci95": [0.01, 0.02]}}}}
    # a report from before the history skip existed: no such knobs, no tower-vs-MostPop comparison
    old = {**run, "config": {"user_tower_resolved": {"item_vector_dim": 0}}, "comparison": {},
           "data": {"item_vectors": {}}}
    rows = tower_rows({"configured": run, "no_skip": old})
    assert rows["configured"]["tower_hr@10"] == 0.05 and rows["configured"]["mostpop_ndcg@10"] == 0.004
    assert rows["configured"]["tower_minus_mostpop_ndcg@10_ci95"] == [0.01, 0.02]
    assert rows["no_skip"]["history_skip"] is None and rows["no_skip"]["item_vectors"] == "none"
    text = print_towers(rows)
    assert "+0.0100..+0.0200" in text and text.count("\n") == 2
    assert text.splitlines()[2].split()[1:3] == ["-", "-"]
