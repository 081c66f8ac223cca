"""Serving latency and throughput: the Ray Serve application vs the same models in one bare
FastAPI/uvicorn process, on loopback.

    python -m bench.serve --config configs/bench_serve.yaml

Bounded load: for each endpoint (``POST /api/search``, ``GET /api/similar/{id}``) and each
concurrency (e.g. 1/4/16), a fixed number of requests from that many concurrent clients, after a
warm-up. Both sides serve the same artifacts with the same routes (``serve_app.api``): Serve with
the deployments of ``configs/serve.yaml`` composed through DeploymentHandles, the baseline with the
same components called in-process (``serve_app.standalone``). They run one after the other, so
they never compete for the CPUs. Writes ``artifacts/bench/serve/serve-<time>.json`` and ``.png``
with p50/p95/p99 latency and requests/s per endpoint and concurrency.
"""
from __future__ import annotations

import asyncio
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from recsys.artifacts import write_json
from recsys.plots import plt, save_figure
from ray_jobs.cli import load_stage_config, run_main
from serve_app.config import load_serve_yaml, resolve_paths


@dataclass
class BenchServeConfig:
    serve_config: str = "configs/serve.yaml"
    output_root: str = "artifacts/bench/serve"
    endpoints: list[str] = field(default_factory=lambda: ["search", "similar"])
    concurrencies: list[int] = field(default_factory=lambda: [1, 4, 16])
    requests: int = 200            # per endpoint and concurrency
    warmup: int = 20               # per endpoint, not timed
    k: int = 10
    seed: int = 0
    sides: list[str] = field(default_factory=lambda: ["bare", "serve"])
    # Serve deployment settings for the run: {deployment: options}, merged over configs/serve.yaml's
    deployment_overrides: dict[str, dict] = field(default_factory=dict)
    startup_timeout_s: int = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def workload(url: str, cfg: BenchServeConfig) -> dict[str, list[tuple[str, str, dict | None]]]:
    """Request lists per endpoint: attribute queries from the served vocabulary, similar-item ids
    from the catalog (via the API itself, so both sides get identical requests)."""
    import requests

    rng = random.Random(cfg.seed)
    described = requests.get(f"{url}/api/attributes", timeout=30).json()
    finite = {f: v for f, v in described["finite_fields"].items() if v}
    queries = []
    for _ in range(256):
        fields = rng.sample(sorted(finite), k=min(len(finite), rng.randint(1, 3)))
        queries.append({f: (rng.choice(finite[f]) if f not in described["multi_valued"] else [rng.choice(finite[f])])
                        for f in fields})
    seed_query = requests.post(f"{url}/api/search", json={"attributes": queries[0], "k": 100}, timeout=60).json()
    ids = [h["item"]["item_id"] for h in seed_query["results"]]
    return {"search": [("POST", "/api/search", {"attributes": q, "k": cfg.k}) for q in queries],
            "similar": [("GET", f"/api/similar/{i}?k={cfg.k}", None) for i in ids]}


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


def measure(url: str, work: dict, cfg: BenchServeConfig, side: str) -> dict:
    out = {}
    for endpoint in cfg.endpoints:
        asyncio.run(_load(url, work[endpoint], cfg.warmup, 1))
        out[endpoint] = []
        for concurrency in cfg.concurrencies:
            result = asyncio.run(_load(url, work[endpoint], cfg.requests, concurrency))
            out[endpoint].append(result)
            print(f"[{side}] {endpoint:8s} c={concurrency:<3d} {result['requests_per_s']:8.1f} req/s  p50 "
                  f"{result['p50_ms']:7.1f} ms  p95 {result['p95_ms']:7.1f}  p99 {result['p99_ms']:7.1f}  "
                  f"errors {result['errors']}", flush=True)
    return out


def run_bare(serve_yaml: Path, state_dir: str, cfg: BenchServeConfig, work: dict | None):
    """The baseline in its own process (one uvicorn worker), as it would be deployed."""
    config_path = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "serve.yaml"
    data = yaml.safe_load(serve_yaml.read_text())
    data["applications"][0]["args"]["state_dir"] = state_dir
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True))
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "serve_app.standalone", "--config", str(config_path),
                                "--port", str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        startup = wait_healthy(url, cfg.startup_timeout_s, process)
        work = work or workload(url, cfg)
        return {"startup_s": round(startup, 1), "results": measure(url, work, cfg, "bare")}, work
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def run_serve(serve_yaml: Path, state_dir: str, cfg: BenchServeConfig, work: dict | None):
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
        work = work or workload(url, cfg)
        return {"startup_s": round(startup, 1), "deployments": deployments, "cluster_cpus": ray.cluster_resources().get("CPU"),
                "results": measure(url, work, cfg, "serve")}, work
    finally:
        serve.shutdown()
        ray.shutdown()


def plot(result: dict, path: Path) -> None:
    endpoints = list(result["config"]["endpoints"])
    fig, axes = plt.subplots(len(endpoints), 2, figsize=(11, 3.6 * len(endpoints)), squeeze=False)
    for row, endpoint in enumerate(endpoints):
        for side, style, color in (("bare", "o--", "C0"), ("serve", "s-", "C1")):
            if side not in result["sides"]:
                continue
            points = result["sides"][side]["results"][endpoint]
            xs = [p["concurrency"] for p in points]
            label = "Ray Serve" if side == "serve" else "bare FastAPI/uvicorn"
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
    sides, work = {}, None
    for side in cfg.sides:
        print(f"[{side}] starting", flush=True)
        runner = run_bare if side == "bare" else run_serve
        sides[side], work = runner(serve_yaml, state_dir, cfg, work)
    import ray

    result = {"benchmark": "serve", "created_utc": stamp, "config": {k: getattr(cfg, k) for k in (
        "endpoints", "concurrencies", "requests", "warmup", "k")}, "sides": sides,
              "image_encoder_pretrained": _pretrained(serve_yaml),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__}}
    if {"bare", "serve"} <= set(sides):
        result["serve_over_bare_requests_per_s"] = {
            endpoint: {str(s["concurrency"]): round(s["requests_per_s"] / b["requests_per_s"], 2)
                       for s, b in zip(sides["serve"]["results"][endpoint], sides["bare"]["results"][endpoint])}
            for endpoint in cfg.endpoints}
    out = Path(cfg.output_root)
    write_json(out / f"serve-{stamp}.json", result)
    plot(result, out / f"serve-{stamp}.png")
    print(f"results: {out / f'serve-{stamp}.json'} and .png")
    return result


def _pretrained(serve_yaml: Path) -> str:
    from serve_app.versions import current_version, embed_report

    config, _ = load_serve_yaml(serve_yaml)
    try:
        return embed_report(current_version(resolve_paths(config))).get("pretrained", "unknown")
    except (OSError, ValueError):
        return "unknown"


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BenchServeConfig, "configs/bench_serve.yaml", argv))


if __name__ == "__main__":
    run_main(main)
