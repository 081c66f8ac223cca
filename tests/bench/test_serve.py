"""bench.serve's comparison with Serve's floor: overheads and targets from hand-made numbers, and
the floor servers themselves (the trivial bare app in-process; the Serve floor in tests/serve_app)."""
from fastapi.testclient import TestClient

from bench import serve as bench
from bench.serve_floor import CONSTANT, trivial_app


def point(c, p50, p99, rps, errors=0):
    return {"concurrency": c, "p50_ms": p50, "p99_ms": p99, "requests_per_s": rps, "errors": errors}


def sides(app_c1_p50=30.0, app_c16_rps=40.0, errors=0):
    return {
        "bare": {"results": {"similar": [point(1, 6.0, 9.0, 150.0), point(16, 40.0, 90.0, 100.0)]}},
        "serve": {"results": {"similar": [point(1, app_c1_p50, 50.0, 30.0, errors), point(16, 300.0, 600.0, app_c16_rps)]}},
        "trivial": {"results": {"floor0": [point(1, 2.0, 4.0, 400.0), point(16, 20.0, 40.0, 700.0)]}},
        "floor": {"results": {"floor2": [point(1, 22.0, 34.0, 45.0), point(16, 250.0, 400.0, 60.0)]}},
    }


def config():
    return bench.BenchServeConfig(endpoints=["similar"], concurrencies=[1, 16], floor_hops={"similar": 2},
                                  reference_hops=2)


def test_overheads_are_differences_to_each_sides_bare_process():
    rows = bench.compare(sides(), config())["similar"]
    c1 = rows[0]
    assert c1["app_overhead_p50_ms"] == 24.0 and c1["floor_overhead_p50_ms"] == 20.0   # 30-6, 22-2
    assert c1["app_overhead_p99_ms"] == 41.0 and c1["floor_overhead_p99_ms"] == 30.0   # 50-9, 34-4
    assert c1["app_over_reference_floor_overhead_p50"] == 1.2
    c16 = rows[1]
    assert c16["serve_over_bare_requests_per_s"] == 0.4 and c16["serve_over_reference_floor_requests_per_s"] == 0.667


def test_targets_latency_throughput_and_errors():
    met = bench.targets(bench.compare(sides(), config()), config())["similar"]
    # 1.2x the floor's overhead at c1 (<= 1.5); at c16 0.4x bare but 0.667x the floor: the lower bound
    # of the two (0.5x bare = 50 req/s vs 0.8x floor = 48 req/s) is the floor's, and 40 < 48.
    assert met["c1_met"] is True and met["c16_met"] is False and met["errors_met"] is True
    assert bench.targets(bench.compare(sides(app_c16_rps=49.0), config()), config())["similar"]["c16_met"] is True
    slow = bench.targets(bench.compare(sides(app_c1_p50=40.0), config()), config())["similar"]
    assert slow["c1_met"] is False                                   # (40-6)/20 = 1.7
    failed = bench.targets(bench.compare(sides(errors=3), config()), config())["similar"]
    assert failed["errors_met"] is False and failed["errors"] == 3


def test_trivial_floor_app_answers_a_constant():
    client = TestClient(trivial_app())
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/floor/3").json() == CONSTANT
