"""Serve operations on the package's application under load: a replica of each model deployment
killed under 16 concurrent clients, and autoscaling following a load ramp (short test delays).

Both change the application's deployment settings through Serve config updates (in place, like
``serve deploy``) and restore the package's settings afterwards, so test_serve_app.py finds one
replica of each deployment again.
"""
from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

from bench.serve_load import Load, kill_under_load, replica_counts, wait_replicas
from tests.serve_app.running import APP, OPTIONS, deploy, serve_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _jpeg(color) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 64), color).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def restore_settings(url, config):
    yield
    deploy(serve_config(config))
    for name in ("Recommender", "ImageEmbedder"):
        wait_replicas(APP, name, 1, 120)


def _reads(url, built) -> list:
    live = [i for i in dict.fromkeys(built["item_ids"]) if requests.get(f"{url}/api/items/{i}", timeout=10).ok]
    return ([("GET", f"/api/similar/{i}?k=3", None, None) for i in live]
            + [("POST", "/api/search", {"attributes": {"category": c}, "k": 3}, None)
               for c in ("블라우스", "원피스", "티셔츠")])


def test_a_killed_replica_fails_no_request(url, config, built, restore_settings):
    two = {**OPTIONS, **{name: {**OPTIONS[name], "num_replicas": 2} for name in ("Recommender", "ImageEmbedder")}}
    # seconds for the second replicas to start with no load: the yardstick for recovery under load
    cold_start_s = deploy(serve_config(config, options=two))
    uploads = [("POST", "/api/recommend/customer_input", None,
                {"file": (f"q{n}.jpg", _jpeg((40 * n, 90, 200 - 30 * n)), "image/jpeg"),
                 "scope": (None, "all", None)}) for n in range(5)]
    for deployment, requests_ in (("Recommender", _reads(url, built)), ("ImageEmbedder", uploads)):
        wait_replicas(APP, deployment, 2, 120)
        # 16 clients through the kill and 6 s past it (Serve notices a dead replica within its 2 s
        # health check; requests routed to it meanwhile must be retried), then the replacement starts
        # without load: `make bench-serve-ops` measures recovery under load.
        result = kill_under_load(url, APP, deployment, requests_, clients=16, replicas=2, before_s=2, after_s=6,
                                 recover_timeout_s=300, load_until_healthy=False)
        print(f"{deployment}: killed {result['killed']}; {result['failed']} failed of {result['answers']}; "
              f"healthy with 2 replicas after {result['seconds_to_healthy']} s (cold start {cold_start_s:.1f} s)")
        # uploads are slow (an image model per request on 2 shared cores): fewer answers in the window
        assert result["answers_after_kill"] >= (20 if deployment == "Recommender" else 5), {
            k: v for k, v in result.items() if k != "timeline"}
        # reads are retried on the surviving replica when theirs dies (serve_app.clients)
        assert result["failed"] == 0, result["failure_examples"]
        # The replacement is one more replica start on the shared cores: 3x the unloaded start of the
        # second replicas (CI machines are slower than this one), and 90 s at least.
        assert result["seconds_to_healthy"] < max(90.0, 3 * cold_start_s), (result["seconds_to_healthy"], cold_start_s)


def test_autoscaling_follows_the_load(url, config, built, restore_settings):
    scaling = {**OPTIONS, "Recommender": {**OPTIONS["Recommender"], "autoscaling_config": {
        "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0.5,
        "downscale_delay_s": 2, "look_back_period_s": 1, "metrics_interval_s": 0.5}}}
    deploy(serve_config(config, options=scaling))
    load = Load(url, _reads(url, built), max_clients=6).start(6)
    try:
        up = wait_replicas(APP, "Recommender", 2, 120)
        load.set_clients(0)
        down = wait_replicas(APP, "Recommender", 1, 60)
    finally:
        samples = load.stop()
    print(f"autoscaling: 2 replicas {up:.1f} s after 6 clients started, back to 1 {down:.1f} s after they stopped")
    assert samples and all(s.ok for s in samples), [s.error for s in samples if not s.ok][:3]
    assert replica_counts(APP)["Recommender"]["running"] == 1
