"""Console summaries shared by the evaluation commands."""
from __future__ import annotations

from typing import Mapping, Sequence


def print_metric_table(rows: Mapping[str, Mapping[str, float]], metrics: Sequence[str],
                       headers: Sequence[str] | None = None, name_width: int = 24, width: int = 8,
                       digits: int = 4) -> str:
    """Prints (and returns) one line per row name with its ``metrics``, under a header line
    (``headers``: the column titles, default the metric names)."""
    headers = list(headers or metrics)
    widths = [max(width, len(h)) for h in headers]
    lines = [f"{'':{name_width}s} " + " ".join(f"{h:>{w}s}" for h, w in zip(headers, widths))]
    for name, values in rows.items():
        lines.append(f"{name:{name_width}s} " + " ".join(f"{values[m]:{w}.{digits}f}" for m, w in zip(metrics, widths)))
    text = "\n".join(lines)
    print(text, flush=True)
    return text
