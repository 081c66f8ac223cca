"""Matplotlib helpers shared by reports (headless backend, Hangul-capable font)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save (creating the folder) and close, so figures never pile up in long jobs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def use_korean_font() -> None:
    """K-Fashion labels are Korean; DejaVu has no Hangul. NanumGothic comes with koreanize-matplotlib;
    it is added as a fallback so Latin text keeps the default look."""
    from matplotlib import font_manager
    from koreanize_matplotlib import get_font_ttf_path

    path = get_font_ttf_path()
    font_manager.fontManager.addfont(path)
    name = font_manager.FontProperties(fname=path).get_name()
    matplotlib.rcParams["font.family"] = ["DejaVu Sans", name]


def bar_panels(panels: Mapping[str, Mapping[str, int]], path: str | Path, title: str,
               top_n: int = 25) -> Path:
    """One horizontal bar chart per panel ({label: count}), side by side, saved as PNG."""
    use_korean_font()
    panels = {k: v for k, v in panels.items() if v}
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 6), squeeze=False)
    for ax, (name, counts) in zip(axes[0], panels.items()):
        items = sorted(counts.items(), key=lambda kv: -kv[1])[:top_n][::-1]
        ax.barh([str(k) for k, _ in items], [v for _, v in items], color="#4c72b0")
        for y, (_, value) in enumerate(items):
            ax.text(value, y, f" {value}", va="center", fontsize=8)
        ax.set_title(name)
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def line_panels(history: list[dict], panels: Mapping[str, Sequence[str]], path: str | Path, title: str) -> Path:
    """Per-epoch curves from a training history: one panel per entry {panel title: [metric keys]}
    (2 columns)."""
    epochs = [h["epoch"] + 1 for h in history]
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(11, 4 * rows), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            label = key.removeprefix("val_").replace("_", " ")
            ax.plot(epochs, [h.get(key) for h in history], marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def training_charts(history: list[dict], path: str | Path, title: str, held_out: str = "validation") -> Path:
    """2x2: train/val loss, Top-1/Top-5 (full gallery), positive vs negative similarity, learning rate.
    ``held_out`` names what the ``val_*`` series were measured on (e.g. "selection items")."""
    return line_panels(history, {f"loss (train, {held_out})": ["train_loss", "val_loss"],
                                 f"{held_out} accuracy (full gallery)": ["val_top1", "val_top5"],
                                 "mean cosine similarity (positive vs negative pairs)":
                                     ["val_mean_positive_similarity", "val_mean_negative_similarity"],
                                 "learning rate": ["lr"]}, path, title)


def grouped_bars(groups: Mapping[str, Mapping[str, float]], path: str | Path, title: str,
                 ylabel: str = "") -> Path:
    """One group of bars per key of ``groups`` ({variant: {metric: value}}), values printed on top."""
    use_korean_font()
    variants = list(groups)
    metrics = list(next(iter(groups.values())))
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) * len(variants) / 2 + 3), 4.5))
    for i, variant in enumerate(variants):
        xs = [m + i * width for m in range(len(metrics))]
        values = [groups[variant].get(metric, 0.0) for metric in metrics]
        bars = ax.bar(xs, values, width, label=variant)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([m + width * (len(variants) - 1) / 2 for m in range(len(metrics))], metrics)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
