"""Serve the demo: the FashionRec application on the newest artifacts (what `make demo` just built).

    python -m serve_app.demo [--config configs/serve.yaml] [--port 8000] [--check] [--index-backend pgvector]

Serves the newest complete version (the pipeline's runs, handed to the model deployments as their
``user_config``), starts Ray Serve with the YAML's settings and deployments, waits for /healthz and
prints the URL with sample curl lines, then serves until Ctrl-C. ``--check`` instead calls a few
endpoints (search, similar items, a stored user, a described user, a profile alone), prints what
they answered and exits: 0 when every call answered 200. ``--index-backend pgvector`` (``make demo
INDEX=pgvector``) serves the newest pgvector build_index run with the item log in the same database:
the embedded PostgreSQL (started here when the DSN variable is unset) or the DSN in that variable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import requests
import yaml

from recsys import logs
from serve_app.config import ServeAppConfig, load_serve_yaml, resolve_paths
from serve_app.versions import newest_version, version_label

APP_NAME = "fashionrec"


def sample_ids(version: dict) -> tuple[str | None, list[str], str]:
    """(a stored user id, that user's history, an item id) from the version's files."""
    from recsys import storage  # the version names runs by location: a path or an object-store URI

    item = pq.read_table(**storage.arrow_args(version["items"], "source"), columns=["item_id"])["item_id"][0].as_py()
    if not version.get("users_run"):
        return None, [], item
    users = pq.read_table(**storage.arrow_args(storage.join(version["users_run"], "users.parquet"), "source"),
                          columns=["user_id", "history"]).slice(0, 1)
    row = users.to_pylist()[0]
    return row["user_id"], list(row["history"]), (row["history"] or [item])[0]


def curl_lines(url: str, user_id: str | None, history: list[str], item_id: str) -> list[str]:
    search = json.dumps({"attributes": {"category": "블라우스", "style": ["로맨틱"]}, "k": 5}, ensure_ascii=False)
    lines = [f"curl -s {url}/healthz",
             f"curl -s -X POST {url}/api/search -H 'content-type: application/json' -d '{search}'",
             f"curl -s '{url}/api/similar/{item_id}?k=5'"]
    if user_id:
        described = json.dumps({"history": history[-2:], "profile": {"age": 31, "style": "로맨틱"},
                                "context": "화이트 드레스", "k": 5, "mmr_lambda": 0.8}, ensure_ascii=False)
        lines += [f"curl -s '{url}/api/recommend/user/{user_id}?k=5'",
                  f"curl -s -X POST {url}/api/recommend/user -H 'content-type: application/json' -d '{described}'",
                  f"curl -s -X POST {url}/api/recommend/user -H 'content-type: application/json' -d "
                  f"'{json.dumps({'profile': {'age': 31, 'style': '로맨틱'}, 'k': 5}, ensure_ascii=False)}'"
                  "   # profile only: the persona model"]
    return lines


def wait_healthy(url: str, timeout_s: float = 600) -> dict:
    deadline, last = time.time() + timeout_s, "no answer"
    while time.time() < deadline:
        try:
            response = requests.get(f"{url}/healthz", timeout=10)
            if response.status_code == 200:
                return response.json()
            last = f"{response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(1)
    raise RuntimeError(f"{url}/healthz did not answer 200 within {timeout_s:.0f} s (last: {last})")


def check(url: str, user_id: str | None, history: list[str], item_id: str) -> dict[str, int]:
    """Call the main endpoints once; {call: status}."""
    calls = {"search": ("post", "/api/search", {"json": {"text": "black skirt", "k": 3}}),
             "similar": ("get", f"/api/similar/{item_id}", {"params": {"k": 3}})}
    if user_id:
        calls["stored user"] = ("get", f"/api/recommend/user/{user_id}", {"params": {"k": 3}})
        calls["described user"] = ("post", "/api/recommend/user", {"json": {"history": history[-2:],
                                                                           "context": "화이트 드레스", "k": 3}})
        calls["profile only"] = ("post", "/api/recommend/user", {"json": {"profile": {"age": 31, "style": "로맨틱"},
                                                                         "k": 3}})
    statuses = {}
    for name, (method, path, kwargs) in calls.items():
        response = getattr(requests, method)(url + path, timeout=60, **kwargs)
        statuses[name] = response.status_code
        body = response.json()
        if response.status_code == 200:
            titles = [f"{h['item']['item_id']} {h['item'].get('title') or ''}".strip() for h in body["results"]]
            extra = f"  reranker {body['reranker']['name']}" if "reranker" in body else ""
            extra += f"  space {body['space']}" if body.get("space") else ""
            extra += f"  persona '{body['persona']}'" if body.get("persona") else ""
            print(f"  {name:15s} 200  {titles}{extra}")
        else:
            print(f"  {name:15s} {response.status_code}  {body}")
    return statuses


def run_demo(config: ServeAppConfig, deployments: dict, host: str = "127.0.0.1", port: int = 8000,
             only_check: bool = False, app_name: str = APP_NAME) -> dict[str, int] | None:
    """Serve ``config`` on the newest version; with ``only_check`` call the endpoints and shut down."""
    from ray import serve

    from serve_app.app import build_app

    logs.route_ray_logs()  # Serve sets up its driver logger on import: to the log file when quiet

    config = resolve_paths(config)
    version = newest_version(config)
    print("serving version: " + ", ".join(f"{key} {name}" for key, name in version_label(version).items() if name))
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(build_app(config, deployments, version), name=app_name, route_prefix="/", blocking=False)
        url = f"http://{host}:{port}"
        health = wait_healthy(url)
        user_id, history, item_id = sample_ids(version)
        print(f"\nFashionRec is up: {url}   (OpenAPI docs: {url}/docs; health: {health['status']})")
        if user_id:
            print(f"users: {(health['deployments']['recommender']['queries'].get('users') or {}).get('note')}")
        print("Try:\n  " + "\n  ".join(curl_lines(url, user_id, history, item_id)))
        if not os.environ.get(config.admin_token_env):
            print(f"(item changes need the admin token: export {config.admin_token_env}=... "
                  f"before starting)")
        if only_check:
            print("\nchecking the endpoints:")
            return check(url, user_id, history, item_id)
        print("\nServing until Ctrl-C.")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        serve.shutdown()
    return None


def with_index_backend(config: ServeAppConfig, backend: str) -> ServeAppConfig:
    """``config`` serving from ``backend``. pgvector: the item log moves to PostgreSQL (the index rows
    change in its transactions), and when the DSN variable is unset the embedded server is started and
    its DSN put there (before Ray starts, so the replicas inherit it)."""
    if backend == "faiss":
        return replace(config, index=replace(config.index, backend="faiss"))
    if not os.environ.get(config.item_log.dsn_env):
        from recsys.stores.postgres import PostgresConfig, ensure_server

        os.environ[config.item_log.dsn_env] = ensure_server(PostgresConfig())
        print(f"item log + index: the embedded PostgreSQL ({PostgresConfig().data_dir}), DSN in "
              f"${config.item_log.dsn_env}")
    return replace(config, index=replace(config.index, backend="pgvector"),
                   item_log=replace(config.item_log, kind="postgres"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/serve.yaml")
    parser.add_argument("--host", default=None, help="default: http_options.host of the config")
    parser.add_argument("--port", type=int, default=None, help="default: http_options.port of the config")
    parser.add_argument("--check", action="store_true", help="call a few endpoints and exit")
    parser.add_argument("--verbose", action="store_true", help="show Ray's and Serve's logs here, not in the log file")
    parser.add_argument("--index-backend", choices=["faiss", "pgvector"], default=None,
                        help="default: index.backend of the config; pgvector also puts the item log in PostgreSQL")
    args = parser.parse_args(argv)
    config, deployments = load_serve_yaml(args.config)
    if args.index_backend:
        config = with_index_backend(config, args.index_backend)
    http = (yaml.safe_load(Path(args.config).read_text()) or {}).get("http_options") or {}
    import ray

    if not ray.is_initialized():
        # The replicas' request logs stay in Ray's log directory (/tmp/ray/session_latest/logs/serve)
        # and Ray's and Serve's own lines go to the log file, so the URL and curl lines are what the
        # terminal shows. RAY_ADDRESS joins a running cluster.
        if not args.verbose:
            logs.quiet_console("serve_demo")
        ray.init(**({} if os.environ.get("RAY_ADDRESS") else {"address": "local"}), log_to_driver=args.verbose)
        logs.ray_started()
    statuses = run_demo(config, deployments, args.host or http.get("host", "127.0.0.1"),
                        args.port or int(http.get("port", 8000)), args.check)
    return 0 if statuses is None or all(s == 200 for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
