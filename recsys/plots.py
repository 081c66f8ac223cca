"""Matplotlib helpers shared by reports (headless backend, Hangul-capable font)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


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
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
