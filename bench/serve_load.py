"""Closed-loop HTTP load whose client count can change while it runs, and the Serve-side
observations the operations benchmark and tests make beside it (replica counts, killing a replica).

:class:`Load` runs up to ``max_clients`` clients on an asyncio loop in a background thread; only
the first ``clients`` of them send (each waits for its answer before the next request), cycling over
a request list. Every answer is kept as a :class:`Sample` (start time, latency, status), so a run can
be cut into windows afterwards.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import numpy as np

# (method, path, JSON body or None, multipart {field: (filename, bytes, content type) for a file,
#  (None, str, None) for a plain form field} or None)
Request = tuple[str, str, dict | None, dict | None]


@dataclass
class Sample:
    started: float      # time.perf_counter() when the request was sent
    latency_ms: float
    status: int         # HTTP status; 0: no answer (connection error, timeout)
    label: str          # the request's path template (first path part after /api)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def _label(path: str) -> str:
    parts = [p for p in path.split("?")[0].split("/") if p]
    return "/".join(parts[:3]) if parts and parts[0] == "api" else "/".join(parts[:1])


class Load:
    def __init__(self, url: str, requests_: list[Request], max_clients: int = 64, timeout_s: float = 60):
        if not requests_:
            raise ValueError("no requests to send")
        self.url, self.requests, self.max_clients, self.timeout_s = url, requests_, max_clients, timeout_s
        self.clients = 0
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next = 0

    def set_clients(self, n: int) -> None:
        if not 0 <= n <= self.max_clients:
            raise ValueError(f"clients: expected 0..{self.max_clients}, got {n}")
        self.clients = n

    def start(self, clients: int) -> "Load":
        self.set_clients(clients)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 10)
        return list(self.samples)

    async def _run(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.max_clients)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._client(session, n) for n in range(self.max_clients)))

    async def _client(self, session, n: int) -> None:
        import aiohttp

        while not self._stop.is_set():
            if n >= self.clients:
                await asyncio.sleep(0.05)
                continue
            method, path, body, files = self.requests[self._next % len(self.requests)]
            self._next += 1
            data = None
            if files:
                data = aiohttp.FormData()
                for name, (filename, content, content_type) in files.items():
                    data.add_field(name, content, filename=filename, content_type=content_type)
            started = time.perf_counter()
            try:
                async with session.request(method, self.url + path, json=body, data=data) as response:
                    await response.read()
                    status, error = response.status, None if response.status == 200 else (await response.text())[:200]
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, error = 0, f"{type(exc).__name__}: {exc}"[:200]
            self.samples.append(Sample(started, (time.perf_counter() - started) * 1000, status, _label(path), error))


def windows(samples: list[Sample], start: float, width_s: float) -> list[dict]:
    """Per window of ``width_s`` seconds from ``start``: answers, failures, req/s, p50/p99 (ms)."""
    if not samples:
        return []
    end = max(s.started for s in samples)
    out = []
    for left in np.arange(start, end + width_s, width_s):
        inside = [s for s in samples if left <= s.started < left + width_s]
        if not inside:
            continue
        latency = np.asarray([s.latency_ms for s in inside if s.ok] or [np.nan])
        out.append({"t_s": round(float(left - start), 2), "answers": len(inside),
                    "failed": sum(not s.ok for s in inside), "requests_per_s": round(len(inside) / width_s, 2),
                    "p50_ms": None if np.isnan(latency).all() else round(float(np.nanpercentile(latency, 50)), 1),
                    "p99_ms": None if np.isnan(latency).all() else round(float(np.nanpercentile(latency, 99)), 1)})
    return out


# -- Serve's side -------------------------------------------------------------------------------

def replica_counts(app: str) -> dict[str, dict]:
    """{deployment: {"status", "running", "replicas": {state: n}}} from Serve's status API."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return {}
    return {name: {"status": str(getattr(d.status, "value", d.status)),
                   "running": int(sum(n for state, n in d.replica_states.items()
                                      if str(getattr(state, "value", state)) == "RUNNING")),
                   "replicas": {str(getattr(state, "value", state)): int(n) for state, n in d.replica_states.items()}}
            for name, d in status.deployments.items()}


def replica_actor_names(app: str, deployment: str) -> list[str]:
    """Names of the deployment's replica actors (Serve names them ``SERVE_REPLICA::app#deployment#id``)."""
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))


def kill_one_replica(app: str, deployment: str) -> str:
    """``ray.kill`` one replica actor of the deployment (no restart: Serve must replace it)."""
    import ray

    names = replica_actor_names(app, deployment)
    if not names:
        raise RuntimeError(f"no replica actor of {app}/{deployment} found")
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    return names[0]


def wait_replicas(app: str, deployment: str, running: int, timeout_s: float, exclude: str | None = None) -> float:
    """Seconds until the deployment is HEALTHY with ``running`` RUNNING replicas (none of them named
    ``exclude``, a killed one); raises TimeoutError. With ``exclude``, Serve's status must first show
    that it noticed the loss (fewer running, or one starting): right after a kill the status can
    still count the dead replica as running."""
    started = time.perf_counter()
    noticed = exclude is None
    while time.perf_counter() - started < timeout_s:
        counts = replica_counts(app).get(deployment)
        if counts and not noticed:
            noticed = counts["running"] < running or counts["replicas"].get("STARTING", 0) > 0 or \
                counts["status"] != "HEALTHY"
        if noticed and counts and counts["status"] == "HEALTHY" and counts["running"] == running:
            names = replica_actor_names(app, deployment)  # a dead replica's name drops out at once
            if len(names) == running and exclude not in names:
                return time.perf_counter() - started
        time.sleep(0.2)
    raise TimeoutError(f"{app}/{deployment}: not HEALTHY with {running} running replicas within {timeout_s} s: "
                       f"{replica_counts(app).get(deployment)}")


def kill_under_load(url: str, app: str, deployment: str, requests_: list[Request], clients: int = 16,
                    replicas: int = 2, before_s: float = 4.0, after_s: float = 3.0,
                    recover_timeout_s: float = 120.0, load_until_healthy: bool = True) -> dict:
    """``clients`` concurrent clients; after ``before_s`` one replica of ``deployment`` is killed;
    the load goes on until Serve reports the deployment healthy with ``replicas`` running again
    (plus ``after_s``). Returns failures (before and after the kill) and the time to recovery.
    ``load_until_healthy=False`` (the tests): the load stops ``after_s`` after the kill (the window
    where requests to the lost replica must be retried), then the replacement starts unloaded."""
    load = Load(url, requests_, max_clients=clients).start(clients)
    samples = None
    try:
        time.sleep(before_s)
        killed_at = time.perf_counter()
        victim = kill_one_replica(app, deployment)
        if not load_until_healthy:
            time.sleep(after_s)
            samples = load.stop()
        recovered_s = wait_replicas(app, deployment, replicas, recover_timeout_s, exclude=victim)
        if load_until_healthy:
            time.sleep(after_s)
    finally:
        samples = load.stop() if samples is None else samples
    after = [s for s in samples if s.started >= killed_at]
    failed = [s for s in samples if not s.ok]
    return {"deployment": deployment, "killed": victim, "clients": clients, "replicas": replicas,
            "answers": len(samples), "answers_after_kill": len(after), "failed": len(failed),
            "failed_after_kill": sum(not s.ok for s in after),
            "failure_examples": sorted({f"{s.status} {s.label}: {s.error}" for s in failed})[:5],
            "seconds_to_healthy": round(recovered_s, 2),
            "p99_ms_after_kill": round(float(np.percentile([s.latency_ms for s in after], 99)), 1) if after else None,
            "timeline": windows(samples, samples[0].started if samples else killed_at, 1.0),
            "killed_at_s": round(killed_at - (samples[0].started if samples else killed_at), 2)}
