"""Serving KPIs: request counts, errors and latency percentiles.

Under Ray, Serve itself exports per-route request, error and latency series with the cluster's
Prometheus metrics (``ray_serve_num_http_requests_total``, ``ray_serve_http_request_latency_ms``,
...); recording them again per request would only cost the ingress CPU. What the app adds is an
in-process window per ingress replica (:class:`LiveStats`) for ``GET /api/kpi`` and ``GET /metrics``,
which also works in the plain uvicorn process. Routes are
labelled by their template (``/api/similar/{item_id}``), never by the raw path.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


class LiveStats:
    def __init__(self, window: int = 10_000):
        self.started = time.time()
        self.window = deque(maxlen=window)  # (route, latency_ms)
        self.requests = Counter()            # (route, method, status) -> n
        self.lock = threading.Lock()

    def record(self, route: str, method: str, status: int, latency_ms: float) -> None:
        with self.lock:
            self.window.append((route, latency_ms))
            self.requests[(route, method, status)] += 1

    def raw(self) -> dict:
        with self.lock:
            return {"started": self.started, "window": list(self.window),
                    "requests": [[r, m, s, n] for (r, m, s), n in self.requests.items()]}


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    array = np.asarray(values)
    return {"p50": round(float(np.percentile(array, 50)), 2), "p95": round(float(np.percentile(array, 95)), 2),
            "p99": round(float(np.percentile(array, 99)), 2), "mean": round(float(array.mean()), 2)}


def summarize(raws: list[dict]) -> dict:
    """Merge the raw windows of one or more ingress replicas into the KPI block."""
    window = [entry for raw in raws for entry in raw["window"]]
    totals = Counter()
    for raw in raws:
        for route, method, status, n in raw["requests"]:
            totals[(route, method, int(status))] += n
    per_route: dict[str, dict] = {}
    for (route, _, status), n in totals.items():
        entry = per_route.setdefault(route, {"requests": 0, "client_errors": 0, "server_errors": 0})
        entry["requests"] += n
        entry["client_errors"] += n if 400 <= status < 500 else 0
        entry["server_errors"] += n if status >= 500 else 0
    for route, entry in per_route.items():
        entry["latency_ms"] = _percentiles([ms for r, ms in window if r == route])
    requests = sum(totals.values())
    client = sum(n for (_, _, s), n in totals.items() if 400 <= s < 500)
    server = sum(n for (_, _, s), n in totals.items() if s >= 500)
    started = min((raw["started"] for raw in raws), default=time.time())
    return {"requests": requests, "errors": client + server, "client_errors": client, "server_errors": server,
            "error_rate": round((client + server) / requests, 4) if requests else 0.0,
            "latency_ms": _percentiles([ms for _, ms in window]), "latency_window": len(window),
            "uptime_s": round(time.time() - started, 1), "ingress_replicas": len(raws), "per_route": per_route}


def prometheus_text(raws: list[dict]) -> str:
    """The live counters and latency quantiles in Prometheus text exposition format."""
    summary = summarize(raws)
    totals = Counter()
    for raw in raws:
        for route, method, status, n in raw["requests"]:
            totals[(route, method, int(status))] += n
    lines = ["# HELP fashionrec_requests_total HTTP requests answered by FashionRec",
             "# TYPE fashionrec_requests_total counter"]
    for (route, method, status), n in sorted(totals.items()):
        lines.append(f'fashionrec_requests_total{{route="{route}",method="{method}",status="{status}"}} {n}')
    lines += ["# HELP fashionrec_request_errors_total FashionRec answers with status >= 400",
              "# TYPE fashionrec_request_errors_total counter",
              f"fashionrec_request_errors_total {summary['errors']}",
              "# HELP fashionrec_request_latency_ms Request latency over the recent window (ms)",
              "# TYPE fashionrec_request_latency_ms summary"]
    for route, entry in sorted(summary["per_route"].items()):
        for quantile, key in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")):
            value = entry["latency_ms"][key]
            if value is not None:
                lines.append(f'fashionrec_request_latency_ms{{route="{route}",quantile="{quantile}"}} {value}')
    return "\n".join(lines) + "\n"
