"""What Ray Data's own execution stats say about one operator of a finished dataset run."""
from __future__ import annotations


def operator_window_seconds(dataset, operator_prefix: str) -> float | None:
    """Seconds from the first to the last block an operator processed (its tasks' or actors'
    execution window: actor start-up and the stages before and after it are outside), or None
    when Ray Data's stats do not carry it.

    ``Dataset.get_stats_summary`` is Ray Data's developer API; it also answers for a dataset
    consumed by a ``write_*`` call, which is how the jobs run their pools."""
    try:
        pending = [dataset.get_stats_summary()]
    except Exception:  # an older or newer Ray without it: the caller reports whole-stage time only
        return None
    while pending:
        summary = pending.pop()
        for operator in summary.operators_stats:
            if operator.operator_name.startswith(operator_prefix) and operator.earliest_start_time is not None:
                return float(operator.latest_end_time - operator.earliest_start_time)
        pending += summary.parents
    return None
