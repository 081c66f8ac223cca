"""The temperature study of the JSON encoder's InfoNCE (the K-Fashion study's question): several
seeds per temperature with everything else fixed, the selection items' Top-5 and MRR per run, their
mean and spread per temperature, and a recommendation only when the best temperature's mean Top-5
beats the runner-up's by more than the seeds' spread (the larger of the two standard deviations).
Only the selection items (carved from training) are read: the held-out items stay untouched."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

METRICS = ("top5", "mrr")


def temperature_summary(runs: Sequence[dict]) -> dict:
    """``runs``: {"temperature", "seed", "top5", "mrr"} each. Per temperature: n, mean, std (sample,
    ddof 1), min and max of each metric; the recommendation or why there is none."""
    temperatures = sorted({float(r["temperature"]) for r in runs})
    per = {}
    for t in temperatures:
        values = {m: np.array([r[m] for r in runs if float(r["temperature"]) == t], dtype=np.float64)
                  for m in METRICS}
        per[str(t)] = {"n": int(len(values["top5"])),
                       **{f"{m}_{stat}": round(float(fn(v)), 4) for m, v in values.items()
                          for stat, fn in (("mean", np.mean), ("std", _std), ("min", np.min), ("max", np.max))}}
    ranked = sorted(per, key=lambda t: per[t]["top5_mean"], reverse=True)
    out = {"per_temperature": per, "ranking_by_top5_mean": [float(t) for t in ranked]}
    if len(ranked) < 2 or min(per[t]["n"] for t in ranked[:2]) < 2:
        out.update(recommended_temperature=None, reason="needs two temperatures with at least two seeds each")
        return out
    best, second = ranked[:2]
    margin = per[best]["top5_mean"] - per[second]["top5_mean"]
    spread = max(per[best]["top5_std"], per[second]["top5_std"])
    out["margin_over_runner_up"], out["seed_spread"] = round(margin, 4), round(spread, 4)
    if margin > spread:
        out.update(recommended_temperature=float(best),
                   reason=f"T={best} leads T={second} by {margin:.4f} Top-5, more than the seeds' spread {spread:.4f}")
    else:
        out.update(recommended_temperature=None,
                   reason=f"no recommendation: T={best} leads T={second} by {margin:.4f} Top-5, within the seeds' "
                          f"spread {spread:.4f}")
    return out


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def plot_temperature_study(runs: Sequence[dict], summary: dict, path: Path, title: str) -> None:
    """Each run's Top-5 and MRR as dots, the mean per temperature with a +-1 std bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    temperatures = [float(t) for t in summary["per_temperature"]]
    for axis, metric in zip(axes, METRICS):
        for r in runs:
            axis.scatter(temperatures.index(float(r["temperature"])), r[metric], color="grey", s=14, zorder=2)
        means = [summary["per_temperature"][str(t)][f"{metric}_mean"] for t in temperatures]
        stds = [summary["per_temperature"][str(t)][f"{metric}_std"] for t in temperatures]
        axis.errorbar(range(len(temperatures)), means, yerr=stds, fmt="o-", capsize=4, zorder=3)
        axis.set_xticks(range(len(temperatures)), [str(t) for t in temperatures])
        axis.set_xlabel("temperature")
        axis.set_title(f"selection {metric} (mean +- std over seeds)")
    figure.suptitle(f"{title}\n{summary['reason']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
