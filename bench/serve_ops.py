"""Serving operations under load: autoscaling observed, and a replica killed.

    python -m bench.serve_ops --config configs/bench_serve_ops.yaml      (make bench-serve-ops)

On the demo artifacts (``configs/serve.yaml``'s application, with the deployment settings below):

- ``autoscale``: closed-loop clients on loopback follow a ramp (e.g. 1 -> 16 -> 1 clients); every
  half second Serve's status API gives each deployment's replica count, and each 2 s window its
  answers, failures and p50/p99. Replicas should go up under load and back down after. On a 2-core
  machine this proves Serve's control loop, not extra capacity: more replicas share the same two
  cores, so throughput cannot grow much (the report says so).
- ``kill``: each model deployment runs 2 replicas; 16 clients send requests that reach it (uploads
  for the ImageEmbedder, searches and similar items for the Recommender) and one replica is killed
  with ``ray.kill``. Reported: failed requests (goal 0: reads are retried on another replica when
  theirs dies, ``serve_app.clients``), the time until Serve reports the deployment healthy with 2
  replicas again, and p99 after the kill.

Writes ``artifacts/bench/serve_ops/serve-ops-<time>.json`` and ``.png``.
"""
from __future__ import annotations

import io
import os
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from recsys.artifacts import write_json
from recsys.plots import plt, save_figure
from ray_jobs.common.cli import load_stage_config, run_main
from bench.serve import attribute_queries
from bench.serve_load import Load, kill_under_load, replica_counts, wait_replicas, windows
from serve_app.config import load_serve_yaml, resolve_paths

APP = "fashionrec_ops"


@dataclass
class AutoscaleSettings:
    ramp: list[list[float]] = field(default_factory=lambda: [[1, 10], [16, 40], [1, 40]])  # [clients, seconds]
    sample_every_s: float = 0.5
    window_s: float = 2.0
    endpoints: list[str] = field(default_factory=lambda: ["search", "similar"])


@dataclass
class KillSettings:
    clients: int = 16
    replicas: int = 2
    before_s: float = 4.0        # load before the kill
    after_s: float = 3.0         # load after the deployment is healthy again
    deployments: list[str] = field(default_factory=lambda: ["Recommender", "ImageEmbedder"])


@dataclass
class BenchServeOpsConfig:
    serve_config: str = "configs/serve.yaml"
    output_root: str = "artifacts/bench/serve_ops"
    modes: list[str] = field(default_factory=lambda: ["autoscale", "kill"])
    seed: int = 0
    # deployment settings of each mode, merged over configs/serve.yaml's ({deployment: options})
    autoscale_deployments: dict[str, dict] = field(default_factory=dict)
    kill_deployments: dict[str, dict] = field(default_factory=dict)
    autoscale: AutoscaleSettings = field(default_factory=AutoscaleSettings)
    kill: KillSettings = field(default_factory=KillSettings)
    startup_timeout_s: int = 300


def _jpeg(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, size=(96, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def requests_for(url: str, endpoints: list[str], version: dict, seed: int, n: int = 200) -> list:
    """Distinct requests per endpoint: attribute searches, similar items, stored users, uploads."""
    import random

    import pyarrow.parquet as pq
    import requests as http

    rng = random.Random(seed)
    out = []
    if "search" in endpoints:
        described = http.get(f"{url}/api/attributes", timeout=30).json()
        out += [("POST", "/api/search", {"attributes": q, "k": 10}, None) for q in attribute_queries(described, n, rng)]
    if "similar" in endpoints:
        ids = sorted(set(pq.read_table(Path(version["embed_run"]) / "image_embeddings",
                                       columns=["item_id"])["item_id"].to_pylist()))
        out += [("GET", f"/api/similar/{i}?k=10", None, None) for i in rng.sample(ids, min(n, len(ids)))]
    if "user" in endpoints and version.get("users_run"):
        users = pq.read_table(Path(version["users_run"]) / "users.parquet", columns=["user_id"])["user_id"]
        out += [("GET", f"/api/recommend/user/{u}?k=10", None, None)
                for u in rng.sample(users.to_pylist(), min(n, len(users)))]
    if "upload" in endpoints:
        out += [("POST", "/api/recommend/customer_input", None,
                 {"file": (f"q{i}.jpg", _jpeg(seed + i), "image/jpeg"), "scope": (None, "all", None)})
                for i in range(min(n, 40))]
    rng.shuffle(out)
    return out


class _App:
    """The application on a private local Ray with ``deployments`` settings; ``serve.shutdown`` after."""

    def __init__(self, cfg: BenchServeOpsConfig, deployments: dict[str, dict]):
        self.cfg, self.overrides = cfg, deployments

    def __enter__(self):
        import ray
        from ray import serve

        from bench.ports import free_port
        from bench.serve import wait_healthy
        from serve_app.app import build_app
        from serve_app.versions import newest_version

        config, deployments = load_serve_yaml(self.cfg.serve_config)
        config = resolve_paths(config)
        for name, options in self.overrides.items():
            deployments[name] = {**deployments.get(name, {}), **options}
        self.version = newest_version(config)
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(Path.cwd())}})
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(replace(config, state_dir=_scratch_state()), deployments, self.version), name=APP,
                  route_prefix="/")
        self.url = f"http://127.0.0.1:{port}"
        wait_healthy(self.url, self.cfg.startup_timeout_s)
        self.deployments = deployments
        return self

    def __exit__(self, *exc):
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def _scratch_state() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="bench-serve-ops-state-")  # reads only; never touch the real item store


def run_autoscale(cfg: BenchServeOpsConfig) -> dict:
    settings = cfg.autoscale
    with _App(cfg, cfg.autoscale_deployments) as app:
        requests_ = requests_for(app.url, settings.endpoints, app.version, cfg.seed)
        load = Load(app.url, requests_, max_clients=int(max(c for c, _ in settings.ramp)))
        timeline, started = [], time.perf_counter()
        load.start(0)
        try:
            for clients, seconds in settings.ramp:
                load.set_clients(int(clients))
                stage_end = time.perf_counter() + seconds
                while time.perf_counter() < stage_end:
                    counts = replica_counts(APP)
                    timeline.append({"t_s": round(time.perf_counter() - started, 2), "clients": int(clients),
                                     **{name: c["running"] for name, c in counts.items()},
                                     **{f"{name}:starting": c["replicas"].get("STARTING", 0)
                                        for name, c in counts.items()}})
                    time.sleep(settings.sample_every_s)
        finally:
            samples = load.stop()
        deployments = {name: opts.get("autoscaling_config") for name, opts in app.deployments.items()}
    names = [n for n in deployments if deployments[n]]
    peak = {n: max(row.get(n, 0) for row in timeline) for n in names}
    decided = {n: next((row["t_s"] for row in timeline if row.get(n, 0) + row.get(f"{n}:starting", 0) > 1), None)
               for n in names}
    running = {n: next((row["t_s"] for row in timeline if row.get(n, 0) > 1), None) for n in names}
    final = {n: timeline[-1].get(n, 0) for n in names}
    return {"ramp": settings.ramp, "autoscaling_config": deployments, "replicas_over_time": timeline,
            "latency_over_time": windows(samples, started, settings.window_s),
            "answers": len(samples), "failed": sum(not s.ok for s in samples),
            "peak_replicas": peak, "final_replicas": final,
            "first_extra_replica_started_s": decided, "first_extra_replica_running_s": running,
            "load_up_at_s": sum(s for _, s in settings.ramp[:1]),
            "scaled_up": {n: peak[n] > (deployments[n] or {}).get("min_replicas", 1) for n in names},
            "scaled_back_down": {n: final[n] < peak[n] for n in names},
            "note": (f"on {os.cpu_count()} CPU cores this shows Serve's control loop (replicas follow the load), "
                     "not extra capacity: added replicas share the same cores")}


def run_kill(cfg: BenchServeOpsConfig) -> dict:
    settings = cfg.kill
    with _App(cfg, cfg.kill_deployments) as app:
        out = {}
        for deployment in settings.deployments:
            wait_replicas(APP, deployment, settings.replicas, cfg.startup_timeout_s)
            endpoints = ["upload"] if deployment == "ImageEmbedder" else ["search", "similar"]
            requests_ = requests_for(app.url, endpoints, app.version, cfg.seed)
            out[deployment] = kill_under_load(app.url, APP, deployment, requests_, settings.clients,
                                              settings.replicas, settings.before_s, settings.after_s)
            result = out[deployment]
            print(f"[kill] {deployment}: {result['failed']} failed of {result['answers']} answers "
                  f"({result['failed_after_kill']} after the kill); healthy with {settings.replicas} replicas again "
                  f"after {result['seconds_to_healthy']} s; p99 after the kill {result['p99_ms_after_kill']} ms",
                  flush=True)
    return out


def plot(result: dict, path: Path) -> None:
    panels = []
    if "autoscale" in result:
        panels.append("autoscale")
    kills = list(result.get("kill", {}))
    fig, axes = plt.subplots(len(panels) + len(kills), 1, figsize=(10, 3.4 * (len(panels) + len(kills))),
                             squeeze=False)
    row = 0
    if "autoscale" in result:
        auto = result["autoscale"]
        ax = axes[row][0]
        times = [r["t_s"] for r in auto["replicas_over_time"]]
        for n, name in enumerate(auto["peak_replicas"]):
            rows = auto["replicas_over_time"]
            ax.step(times, [r.get(name, 0) for r in rows], where="post", color=f"C{n}", label=f"{name} running")
            ax.step(times, [r.get(name, 0) + r.get(f"{name}:starting", 0) for r in rows], where="post",
                    color=f"C{n}", linestyle="--", alpha=0.6, label=f"{name} running + starting")
        ax.step(times, [r["clients"] / 4 for r in auto["replicas_over_time"]], where="post", linestyle=":",
                color="grey", label="clients / 4")
        twin = ax.twinx()
        lat = auto["latency_over_time"]
        twin.plot([w["t_s"] for w in lat], [w["p50_ms"] for w in lat], "C3.-", alpha=0.6, label="p50 ms")
        twin.plot([w["t_s"] for w in lat], [w["p99_ms"] for w in lat], "C3:", alpha=0.6, label="p99 ms")
        twin.set_ylabel("latency (ms)")
        ax.set_xlabel("seconds")
        ax.set_title("autoscaling under a load ramp (" + auto["note"] + ")", fontsize=8)
        ax.legend(loc="upper left", fontsize=7)
        twin.legend(loc="upper right", fontsize=7)
        row += 1
    for name in kills:
        kill = result["kill"][name]
        ax = axes[row][0]
        t = [w["t_s"] for w in kill["timeline"]]
        ax.plot(t, [w["requests_per_s"] for w in kill["timeline"]], "C0.-", label="answers/s")
        ax.bar(t, [w["failed"] for w in kill["timeline"]], color="C3", alpha=0.7, label="failed")
        ax.axvline(kill["killed_at_s"], color="k", linestyle="--", label="replica killed")
        ax.axvline(kill["killed_at_s"] + kill["seconds_to_healthy"], color="C2", linestyle="--",
                   label="healthy again")
        ax.set_title(f"{name}: one of {kill['replicas']} replicas killed under {kill['clients']} clients: "
                     f"{kill['failed']} failed of {kill['answers']}", fontsize=9)
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7)
        row += 1
    fig.tight_layout()
    save_figure(fig, path)


def run(cfg: BenchServeOpsConfig) -> dict:
    import ray

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    unknown = set(cfg.modes) - {"autoscale", "kill"}
    if unknown:
        raise ValueError(f"unknown mode(s) {sorted(unknown)}; known: autoscale, kill")
    result = {"benchmark": "serve_ops", "created_utc": stamp,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__}}
    if "autoscale" in cfg.modes:
        print("[autoscale] ramp " + " -> ".join(f"{int(c)} clients {s:g} s" for c, s in cfg.autoscale.ramp), flush=True)
        result["autoscale"] = run_autoscale(cfg)
        auto = result["autoscale"]
        print(f"[autoscale] peak replicas {auto['peak_replicas']}, at the end {auto['final_replicas']}; "
              f"{auto['failed']} failed of {auto['answers']}", flush=True)
    if "kill" in cfg.modes:
        result["kill"] = run_kill(cfg)
    out = Path(cfg.output_root)
    write_json(out / f"serve-ops-{stamp}.json", result)
    plot(result, out / f"serve-ops-{stamp}.png")
    print(f"results: {out / f'serve-ops-{stamp}.json'} and .png")
    return result


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BenchServeOpsConfig, "configs/bench_serve_ops.yaml", argv))


if __name__ == "__main__":
    run_main(main)
