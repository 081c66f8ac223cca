"""The temperature study's summary: mean and spread per temperature, a recommendation only beyond the spread."""
import pytest

from recsys.eval.temperature import plot_temperature_study, temperature_summary


def runs(values: dict) -> list[dict]:
    return [{"temperature": t, "seed": s, "top5": v, "mrr": v / 2} for t, vs in values.items() for s, v in enumerate(vs)]


def test_a_lead_beyond_the_seed_spread_is_recommended(tmp_path):
    data = runs({0.05: [0.40, 0.42, 0.44], 0.1: [0.30, 0.31, 0.32]})
    summary = temperature_summary(data)
    row = summary["per_temperature"]["0.05"]
    assert row["n"] == 3 and row["top5_mean"] == pytest.approx(0.42) and row["top5_std"] == pytest.approx(0.02)
    assert row["top5_min"] == 0.40 and row["top5_max"] == 0.44 and row["mrr_mean"] == pytest.approx(0.21)
    # lead 0.11 > spread max(0.02, 0.01)
    assert summary["recommended_temperature"] == 0.05 and summary["margin_over_runner_up"] == pytest.approx(0.11)
    assert summary["ranking_by_top5_mean"] == [0.05, 0.1]
    plot_temperature_study(data, summary, tmp_path / "study.png", "toy")
    assert (tmp_path / "study.png").stat().st_size > 5_000


def test_a_lead_within_the_spread_recommends_nothing():
    summary = temperature_summary(runs({0.07: [0.40, 0.50, 0.45], 0.1: [0.42, 0.43, 0.44], 0.15: [0.1, 0.1, 0.1]}))
    # 0.07 leads 0.1 by 0.02, its own spread is 0.05
    assert summary["recommended_temperature"] is None and "within the seeds' spread" in summary["reason"]
    assert summary["seed_spread"] == pytest.approx(0.05)
    one_seed = temperature_summary(runs({0.07: [0.4], 0.1: [0.3]}))
    assert one_seed["recommended_temperature"] is None and "two seeds" in one_seed["reason"]
