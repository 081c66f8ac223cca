"""Chart of a hyperparameter sweep of the JSON encoder (``ray_jobs.tune``): every trial's validation
curve (short curves were stopped early by ASHA) and the best Top-5 per temperature."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.plots import plt, save_figure


def plot_sweep(report: dict, path: Path, title: str) -> None:
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    temperatures = sorted({t["config"]["temperature"] for t in report["trials"] if "error" not in t})
    colours = dict(zip(temperatures, plt.cm.viridis(np.linspace(0, 0.9, len(temperatures)))))
    for t in report["trials"]:
        if "error" in t:
            continue
        curves.plot(range(1, len(t["curve_val_top5"]) + 1), t["curve_val_top5"], marker="o", markersize=3,
                    color=colours[t["config"]["temperature"]],
                    label=f"T={t['config']['temperature']} bs={t['config']['batch_size']} lr={t['config']['lr']:.1e}")
    curves.set_xlabel("epoch")
    curves.set_ylabel("validation Top-5 (full gallery)")
    curves.set_title("trials (short curves were stopped by ASHA)")
    curves.legend(fontsize=6)
    values = report["best_val_top5_by_temperature"]
    drawn = bars.bar(list(values), list(values.values()), color=[colours[float(k)] for k in values])
    bars.bar_label(drawn, fmt="%.3f")
    bars.set_xlabel("temperature")
    bars.set_title(f"best Top-5 per temperature (recommended T = {report['recommended_temperature']})")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
