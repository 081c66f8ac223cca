"""Serving latency and throughput: the Ray Serve application vs the same models in one bare
FastAPI/uvicorn process, beside Ray Serve's floor, on loopback.

    python -m bench.serve --config configs/bench_serve.yaml

Bounded load: for each endpoint (``POST /api/search``, ``GET /api/similar/{id}``,
``GET /api/recommend/user/{id}``) and each concurrency (e.g. 1/4/16), a fixed number of requests
from that many concurrent clients, after a warm-up, cycling over at least ``distinct_queries``
different requests (the app caches no responses). Four sides, one after the other so they never
compete for the CPUs:

- ``bare``: the same routes and models in one uvicorn process (``serve_app.standalone``);
- ``serve``: the application with the deployments of ``configs/serve.yaml``;
- ``trivial``: a uvicorn process answering a constant (``bench.serve_floor``);
- ``floor``: a Serve app whose ingress makes N sequential handle calls returning a constant, N the
  hop count of each route (``floor_hops``) and the two-call reference.

Reports, per endpoint and concurrency, ``app overhead = serve - bare`` beside
``floor overhead = floor(N) - trivial`` (p50 and p99) and the throughput ratios, and checks the
targets of the serving issue. Writes ``artifacts/bench/serve/serve-<time>.json`` and ``.png``.
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from bench.ports import free_port

from recsys.artifacts import write_json
from recsys.plots import plt, save_figure
from ray_jobs.common.cli import load_stage_config, run_main
from serve_app.config import load_serve_yaml, resolve_paths


@dataclass
class BenchServeConfig:
    serve_config: str = "configs/serve.yaml"
    output_root: str = "artifacts/bench/serve"
    endpoints: list[str] = field(default_factory=lambda: ["search", "similar", "user"])
    concurrencies: list[int] = field(default_factory=lambda: [1, 4, 16])
    requests: int = 200            # per endpoint and concurrency
    warmup: int = 20               # per endpoint, not timed
    k: int = 10
    seed: int = 0
    sides: list[str] = field(default_factory=lambda: ["bare", "serve", "trivial", "floor"])
    distinct_queries: int = 1000   # per endpoint (fewer only when the catalog/users have fewer)
    # Sequential DeploymentHandle calls behind each route of the app (the floor app repeats them)
    floor_hops: dict[str, int] = field(default_factory=lambda: {"search": 1, "similar": 1, "user": 1})
    reference_hops: int = 2        # the "two-call floor" the targets compare with
    # Serve deployment settings for the run: {deployment: options}, merged over configs/serve.yaml's
    deployment_overrides: dict[str, dict] = field(default_factory=dict)
    startup_timeout_s: int = 300


def wait_healthy(url: str, timeout: float, process: subprocess.Popen | None = None) -> float:
    import requests

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the baseline server exited with code {process.returncode}")
        try:
            if requests.get(f"{url}/healthz", timeout=5).status_code == 200:
                return time.perf_counter() - started
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}/healthz did not answer 200 within {timeout}s")


def attribute_queries(described: dict, n: int, rng: random.Random) -> list[dict]:
    """Up to ``n`` different attribute queries (1-3 fields each) from ``GET /api/attributes``'s answer."""
    finite = {f: v for f, v in described["finite_fields"].items() if v}
    queries, seen = [], set()
    for _ in range(n * 20):
        if len(queries) >= n:
            break
        fields = rng.sample(sorted(finite), k=min(len(finite), rng.randint(1, 3)))
        query = {f: (rng.choice(finite[f]) if f not in described["multi_valued"] else [rng.choice(finite[f])])
                 for f in sorted(fields)}
        key = json.dumps(query, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            queries.append(query)
    return queries


def workload(url: str, cfg: BenchServeConfig, version: dict) -> dict[str, list[tuple[str, str, dict | None]]]:
    """Request lists per endpoint, each of ``distinct_queries`` different requests where the data
    allows: attribute queries from the served vocabulary, similar-item ids from the served image
    embeddings, stored user ids from the users run. Both sides get identical lists."""
    import pyarrow.parquet as pq
    import requests

    rng = random.Random(cfg.seed)
    queries = attribute_queries(requests.get(f"{url}/api/attributes", timeout=30).json(), cfg.distinct_queries, rng)
    embeddings = pq.read_table(Path(version["embed_run"]) / "image_embeddings", columns=["item_id", "view"])
    item_ids = sorted({i for i, v in zip(embeddings["item_id"].to_pylist(), embeddings["view"].to_pylist()) if v == 0})
    rng.shuffle(item_ids)
    user_ids = []
    if version.get("users_run") and (Path(version["users_run"]) / "users.parquet").is_file():
        user_ids = sorted(map(str, pq.read_table(Path(version["users_run"]) / "users.parquet",
                                                 columns=["user_id"])["user_id"].to_pylist()))
        rng.shuffle(user_ids)
    return {"search": [("POST", "/api/search", {"attributes": q, "k": cfg.k}) for q in queries],
            "similar": [("GET", f"/api/similar/{i}?k={cfg.k}", None) for i in item_ids[:cfg.distinct_queries]],
            "user": [("GET", f"/api/recommend/user/{u}?k={cfg.k}", None) for u in user_ids[:cfg.distinct_queries]]}


def floor_workload(hops: set[int]) -> dict[str, list[tuple[str, str, dict | None]]]:
    return {f"floor{h}": [("GET", f"/floor/{h}", None)] for h in sorted(hops)}


async def _load(url: str, requests_: list, total: int, concurrency: int) -> dict:
    import aiohttp

    latencies, errors = [], 0
    counter = iter(range(total))

    async def client(session):
        nonlocal errors
        for n in counter:
            method, path, body = requests_[n % len(requests_)]
            started = time.perf_counter()
            try:
                async with session.request(method, url + path, json=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    array = np.asarray(latencies)
    return {"concurrency": concurrency, "requests": total, "errors": errors, "seconds": round(wall, 3),
            "requests_per_s": round(total / wall, 2),
            **{f"p{q}_ms": round(float(np.percentile(array, q)), 2) for q in (50, 95, 99)},
            "mean_ms": round(float(array.mean()), 2)}


def measure(url: str, work: dict, cfg: BenchServeConfig, side: str, endpoints: list[str] | None = None) -> dict:
    out = {}
    for endpoint in endpoints or cfg.endpoints:
        if not work.get(endpoint):
            print(f"[{side}] {endpoint}: no requests (nothing to ask for), skipped", flush=True)
            continue
        asyncio.run(_load(url, work[endpoint], cfg.warmup, 1))
        out[endpoint] = []
        for concurrency in cfg.concurrencies:
            result = asyncio.run(_load(url, work[endpoint], cfg.requests, concurrency))
            out[endpoint].append(result)
            print(f"[{side}] {endpoint:8s} c={concurrency:<3d} {result['requests_per_s']:8.1f} req/s  p50 "
                  f"{result['p50_ms']:7.1f} ms  p95 {result['p95_ms']:7.1f}  p99 {result['p99_ms']:7.1f}  "
                  f"errors {result['errors']}", flush=True)
    return out


@contextmanager
def uvicorn_process(module_args: list[str], cfg: BenchServeConfig):
    """``python -m <module> ... --port N`` in its own process, as it would be deployed; yields
    (url, seconds until healthy) and stops it afterwards."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", *module_args, "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        yield url, wait_healthy(url, cfg.startup_timeout_s, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def run_bare(serve_yaml: Path, state_dir: str, cfg: BenchServeConfig, work: dict | None, version: dict):
    """The baseline in its own process (one uvicorn worker), as it would be deployed."""
    config_path = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "serve.yaml"
    data = yaml.safe_load(serve_yaml.read_text())
    data["applications"][0]["args"]["state_dir"] = state_dir
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with uvicorn_process(["serve_app.standalone", "--config", str(config_path)], cfg) as (url, startup):
        work = work or workload(url, cfg, version)
        return {"startup_s": round(startup, 1), "results": measure(url, work, cfg, "bare")}, work


def run_serve(serve_yaml: Path, state_dir: str, cfg: BenchServeConfig, work: dict | None, version: dict):
    import ray
    from ray import serve

    from serve_app.app import build_app

    app_config, deployments = load_serve_yaml(serve_yaml)
    app_config = replace(resolve_paths(app_config), state_dir=state_dir)
    for name, options in cfg.deployment_overrides.items():
        deployments[name] = {**deployments.get(name, {}), **options}
    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path.cwd())}})
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(app_config, deployments), name="fashionrec_bench", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, cfg.startup_timeout_s)
        startup = time.perf_counter() - started
        work = work or workload(url, cfg, version)
        return {"startup_s": round(startup, 1), "deployments": deployments, "cluster_cpus": ray.cluster_resources().get("CPU"),
                "results": measure(url, work, cfg, "serve")}, work
    finally:
        serve.shutdown()
        ray.shutdown()


def _hops(cfg: BenchServeConfig) -> set[int]:
    return {cfg.floor_hops[e] for e in cfg.endpoints if e in cfg.floor_hops} | {cfg.reference_hops}


def run_trivial(serve_yaml: Path, state_dir: str, cfg: BenchServeConfig, work: dict | None, version: dict):
    """The floor's bare side: a uvicorn process answering a constant."""
    with uvicorn_process(["bench.serve_floor"], cfg) as (url, startup):
        floor = floor_workload({0})
        return {"startup_s": round(startup, 1), "results": measure(url, floor, cfg, "trivial", list(floor))}, work


def run_floor(serve_yaml: Path, state_dir: str, cfg: BenchServeConfig, work: dict | None, version: dict):
    """The floor on Serve: ingress + N sequential handle calls to a constant deployment, with the
    ingress's replica options of the real app (same CPU share and concurrency)."""
    import ray
    from ray import serve

    from bench.serve_floor import floor_app
    from serve_app.app import DEFAULT_OPTIONS, INGRESS

    _, deployments = load_serve_yaml(serve_yaml)
    ingress = {k: v for k, v in {**DEFAULT_OPTIONS[INGRESS], **deployments.get(INGRESS, {})}.items()
               if k in ("ray_actor_options", "max_ongoing_requests", "num_replicas")}
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        started = time.perf_counter()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(floor_app(ingress, {"ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 64}),
                  name="fashionrec_floor", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, cfg.startup_timeout_s)
        floor = floor_workload(_hops(cfg))
        return {"startup_s": round(time.perf_counter() - started, 1), "ingress_options": ingress,
                "results": measure(url, floor, cfg, "floor", list(floor))}, work
    finally:
        serve.shutdown()
        ray.shutdown()


RUNNERS = {"bare": run_bare, "serve": run_serve, "trivial": run_trivial, "floor": run_floor}


def _point(side: dict | None, endpoint: str, concurrency: int) -> dict | None:
    for point in (side or {}).get("results", {}).get(endpoint, []):
        if point["concurrency"] == concurrency:
            return point
    return None


def compare(sides: dict, cfg: BenchServeConfig) -> dict:
    """Per endpoint and concurrency: app overhead beside floor overhead, throughput ratios, targets."""
    out = {}
    for endpoint in cfg.endpoints:
        hops = cfg.floor_hops.get(endpoint, cfg.reference_hops)
        rows = []
        for c in cfg.concurrencies:
            bare, app = _point(sides.get("bare"), endpoint, c), _point(sides.get("serve"), endpoint, c)
            trivial = _point(sides.get("trivial"), "floor0", c)
            floor, reference = (_point(sides.get("floor"), f"floor{h}", c) for h in (hops, cfg.reference_hops))
            if not (bare and app and trivial and floor and reference):
                continue
            row = {"concurrency": c, "route_hops": hops}
            for q in ("p50_ms", "p99_ms"):
                row[f"app_overhead_{q}"] = round(app[q] - bare[q], 2)
                row[f"floor_overhead_{q}"] = round(floor[q] - trivial[q], 2)
                row[f"reference_floor_overhead_{q}"] = round(reference[q] - trivial[q], 2)
            row["app_over_reference_floor_overhead_p50"] = round(
                row["app_overhead_p50_ms"] / max(row["reference_floor_overhead_p50_ms"], 1e-6), 2)
            row["serve_over_bare_requests_per_s"] = round(app["requests_per_s"] / bare["requests_per_s"], 3)
            row["serve_over_reference_floor_requests_per_s"] = round(app["requests_per_s"] / reference["requests_per_s"], 3)
            row["errors"] = app["errors"] + bare["errors"]
            rows.append(row)
        out[endpoint] = rows
    return out


def targets(comparison: dict, cfg: BenchServeConfig) -> dict:
    """The serving issue's targets: at concurrency 1, app p50 overhead within 1.5x the two-call
    floor's; at the highest concurrency, throughput at least 0.5x bare or 0.8x the two-call floor,
    whichever bound is lower; zero errors."""
    low, high = min(cfg.concurrencies), max(cfg.concurrencies)
    out = {}
    for endpoint, rows in comparison.items():
        by_c = {r["concurrency"]: r for r in rows}
        if low not in by_c or high not in by_c:
            continue
        latency = by_c[low]["app_over_reference_floor_overhead_p50"]
        ratio_bare, ratio_floor = (by_c[high]["serve_over_bare_requests_per_s"],
                                   by_c[high]["serve_over_reference_floor_requests_per_s"])
        out[endpoint] = {
            f"c{low}_overhead_vs_two_call_floor": latency, f"c{low}_met": latency <= 1.5,
            f"c{high}_serve_over_bare": ratio_bare, f"c{high}_serve_over_two_call_floor": ratio_floor,
            # "at least 0.5x bare or 0.8x the floor, whichever is lower": the easier bound counts
            f"c{high}_met": ratio_bare >= 0.5 or ratio_floor >= 0.8,
            "errors": sum(r["errors"] for r in rows), "errors_met": all(r["errors"] == 0 for r in rows)}
    return out


def plot(result: dict, path: Path) -> None:
    endpoints = list(result["config"]["endpoints"])
    fig, axes = plt.subplots(len(endpoints), 2, figsize=(11, 3.6 * len(endpoints)), squeeze=False)
    for row, endpoint in enumerate(endpoints):
        hops = result["config"]["floor_hops"].get(endpoint, result["config"]["reference_hops"])
        for side, key, style, color, label in (
                ("bare", endpoint, "o--", "C0", "bare FastAPI/uvicorn"), ("serve", endpoint, "s-", "C1", "Ray Serve app"),
                ("trivial", "floor0", "^:", "C2", "trivial bare (constant)"),
                ("floor", f"floor{hops}", "v-.", "C3", f"Serve floor ({hops} hops)")):
            points = result["sides"].get(side, {}).get("results", {}).get(key)
            if not points:
                continue
            xs = [p["concurrency"] for p in points]
            axes[row][0].plot(xs, [p["requests_per_s"] for p in points], style, color=color, label=label)
            for q, alpha in (("p50_ms", 1.0), ("p99_ms", 0.4)):
                axes[row][1].plot(xs, [p[q] for p in points], style, color=color, alpha=alpha,
                                  label=f"{label} {q[:3]}")
        axes[row][0].set_title(f"{endpoint}: throughput (req/s)")
        axes[row][1].set_title(f"{endpoint}: latency (ms)")
        for ax in axes[row]:
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.legend(fontsize=7)
    fig.suptitle(f"FashionRec serving on {result['machine']['cpus']} CPUs, {result['config']['requests']} requests "
                 f"per point (image encoder pretrained: {result['image_encoder_pretrained']})", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def run(cfg: BenchServeConfig) -> dict:
    import requests  # noqa: F401  (fail early when missing)

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    serve_yaml = Path(cfg.serve_config)
    state_dir = tempfile.mkdtemp(prefix="bench-serve-state-")  # reads only; never touch the real item store
    version = _version(serve_yaml)
    unknown = set(cfg.sides) - set(RUNNERS)
    if unknown:
        raise ValueError(f"unknown side(s) {sorted(unknown)}; known: {sorted(RUNNERS)}")
    sides, work = {}, None
    for side in cfg.sides:
        print(f"[{side}] starting", flush=True)
        sides[side], work = RUNNERS[side](serve_yaml, state_dir, cfg, work, version)
    import ray

    result = {"benchmark": "serve", "created_utc": stamp, "config": {k: getattr(cfg, k) for k in (
        "endpoints", "concurrencies", "requests", "warmup", "k", "distinct_queries", "floor_hops",
        "reference_hops")}, "distinct_requests": {e: len(v) for e, v in (work or {}).items()}, "sides": sides,
              "image_encoder_pretrained": _pretrained(serve_yaml),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__}}
    if {"bare", "serve"} <= set(sides):
        result["serve_over_bare_requests_per_s"] = {
            endpoint: {str(s["concurrency"]): round(s["requests_per_s"] / b["requests_per_s"], 2)
                       for s, b in zip(sides["serve"]["results"][endpoint], sides["bare"]["results"][endpoint])}
            for endpoint in cfg.endpoints if sides["serve"]["results"].get(endpoint)}
    result["comparison"] = compare(sides, cfg)
    result["targets"] = targets(result["comparison"], cfg)
    for endpoint, checks in result["targets"].items():
        print(f"[targets] {endpoint}: " + "  ".join(f"{k} {v}" for k, v in checks.items()), flush=True)
    out = Path(cfg.output_root)
    write_json(out / f"serve-{stamp}.json", result)
    plot(result, out / f"serve-{stamp}.png")
    print(f"results: {out / f'serve-{stamp}.json'} and .png")
    return result


def _version(serve_yaml: Path) -> dict:
    from serve_app.versions import newest_version

    config, _ = load_serve_yaml(serve_yaml)
    return newest_version(resolve_paths(config))


def _pretrained(serve_yaml: Path) -> str:
    from serve_app.versions import embed_report, newest_version

    config, _ = load_serve_yaml(serve_yaml)
    try:
        return embed_report(newest_version(resolve_paths(config))).get("pretrained", "unknown")
    except (OSError, ValueError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BenchServeConfig, "configs/bench_serve.yaml", argv))


if __name__ == "__main__":
    run_main(main)
