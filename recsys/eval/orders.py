"""Across E3 runs (``ray_jobs.evaluate_seq`` reports, one per log): which order each served (the
learned ranker or a fallback, ``recsys.retrieval.ordering``), the served order against the best
single source on the test targets with its paired-bootstrap interval, and the learned ranker's own
gain over that source. How often the learned ranker wins is the point: a recommender that always
falls back shows only that its sources work."""
from __future__ import annotations

from typing import Mapping

METRICS = ("hr@10", "ndcg@10")


def order_rows(reports: Mapping[str, dict]) -> dict[str, dict]:
    """One row per log: the served order, test metrics of the recommender, its learned ranker and
    the best source, and the paired differences (mean and 95% interval) against that source."""
    rows = {}
    for log, report in reports.items():
        rival = report["best_source"]
        row = {"served": report["order"]["served"], "learned_ranker_chosen": report["order"]["learned_ranker_chosen"],
               "reason": report["order"]["reason"], "best_source": rival, "n_users": report["n_users"]}
        for label, metrics in (("model", report["model"]), ("learned", report["learned_ranker"]),
                               ("best_source", report["sources"][rival])):
            row.update({f"{label}_{m}": metrics[m] for m in METRICS})
        for label, key in (("model", "model_vs_best_source"), ("learned", "learned_ranker_vs_best_source")):
            paired = report["comparison"][key]
            row.update({f"{label}_minus_best_{m}": paired[m]["difference"] for m in METRICS})
            row.update({f"{label}_minus_best_{m}_ci95": paired[m]["ci95"] for m in METRICS})
        rows[log] = row
    return rows


def order_summary(rows: Mapping[str, dict]) -> dict:
    """How often the learned ranker was served, its mean gain over the best source where it was,
    and whether the served order's interval against the best source stayed above 0 on every log."""
    chosen = [row for row in rows.values() if row["learned_ranker_chosen"]]
    mean = lambda values: round(sum(values) / len(values), 4) if values else None  # noqa: E731
    return {"logs": len(rows), "learned_ranker_served": len(chosen),
            **{f"mean_gain_over_best_source_when_served_{m}": mean([r[f"model_minus_best_{m}"] for r in chosen])
               for m in METRICS},
            "served_interval_upper_at_least_0_on_every_log": all(
                row[f"model_minus_best_{m}_ci95"][1] >= 0 for row in rows.values() for m in METRICS)}


def print_orders(rows: Mapping[str, dict], summary: dict) -> str:
    lines = [f"{'log':28s} {'served':18s} {'best source':12s} {'HR@10':>7s} {'src':>7s} {'NDCG@10':>7s} {'src':>7s}"
             f"  {'served - source HR@10 (95% CI)':32s} {'NDCG@10 (95% CI)':28s} learned - source NDCG@10"]
    for log, r in rows.items():
        ci = lambda key: f"{r[key]:+.4f} ({r[key + '_ci95'][0]:+.4f}..{r[key + '_ci95'][1]:+.4f})"  # noqa: E731
        lines.append(f"{log:28s} {r['served']:18s} {r['best_source']:12s} {r['model_hr@10']:7.4f} "
                     f"{r['best_source_hr@10']:7.4f} {r['model_ndcg@10']:7.4f} {r['best_source_ndcg@10']:7.4f}  "
                     f"{ci('model_minus_best_hr@10'):32s} {ci('model_minus_best_ndcg@10'):28s} "
                     f"{ci('learned_minus_best_ndcg@10')}")
    lines.append(f"learned ranker served on {summary['learned_ranker_served']} of {summary['logs']} logs; mean gain "
                 f"over the best source where served: HR@10 {summary['mean_gain_over_best_source_when_served_hr@10']}"
                 f", NDCG@10 {summary['mean_gain_over_best_source_when_served_ndcg@10']}; served interval upper "
                 f"bound >= 0 on every log: {summary['served_interval_upper_at_least_0_on_every_log']}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


TOWER_KNOBS = ("history_skip", "min_id_count", "item_vector_dim")


def tower_rows(reports: Mapping[str, dict]) -> dict[str, dict]:
    """One row per run: the user tower alone and MostPop on the test targets, the tower's paired
    difference from MostPop (mean and 95% interval), the recommender, and what the tower was (its
    resolved settings and item vectors): an ablation of the tower reads as one table."""
    rows = {}
    for run, report in reports.items():
        tower = report["config"]["user_tower_resolved"]
        row = {**{knob: tower.get(knob) for knob in TOWER_KNOBS},   # reports before a knob existed: None
               "item_vectors": report["data"]["item_vectors"].get("user_tower", {}).get("source", "none"),
               "best_epoch": report["user_tower_training"]["best_epoch"]}
        for label, metrics in (("tower", report["user_tower"]), ("mostpop", report["baselines"]["mostpop"]),
                               ("model", report["model"])):
            row.update({f"{label}_{m}": metrics[m] for m in METRICS})
        paired = report["comparison"].get("user_tower_vs_mostpop")
        if paired:
            row.update({f"tower_minus_mostpop_{m}_ci95": paired[m]["ci95"] for m in METRICS})
        rows[run] = row
    return rows


def print_towers(rows: Mapping[str, dict]) -> str:
    lines = [f"{'run':22s} {'skip':>5s} {'min id':>6s} {'vectors':>7s} {'tower HR@10':>11s} {'NDCG@10':>8s} "
             f"{'MostPop HR@10':>13s} {'NDCG@10':>8s}  {'tower - MostPop NDCG@10 95% CI':30s} {'model HR@10':>11s} "
             f"{'NDCG@10':>8s}"]
    for run, r in rows.items():
        ci = r.get("tower_minus_mostpop_ndcg@10_ci95")
        knob = lambda name, width: f"{'-' if r[name] is None else r[name]:>{width}}"  # noqa: E731
        lines.append(f"{run:22s} {knob('history_skip', 5)} {knob('min_id_count', 6)} {knob('item_vector_dim', 7)} "
                     f"{r['tower_hr@10']:11.4f} {r['tower_ndcg@10']:8.4f} {r['mostpop_hr@10']:13.4f} "
                     f"{r['mostpop_ndcg@10']:8.4f}  {(f'{ci[0]:+.4f}..{ci[1]:+.4f}' if ci else '-'):30s} "
                     f"{r['model_hr@10']:11.4f} {r['model_ndcg@10']:8.4f}")
    text = "\n".join(lines)
    print(text, flush=True)
    return text
