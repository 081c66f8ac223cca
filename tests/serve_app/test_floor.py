"""The serving benchmark's floor application on the package's real Serve instance: an ingress that
makes N sequential handle calls to a constant deployment (bench/serve_floor.py)."""
import pytest
import requests

from bench.serve_floor import CONSTANT, MAX_HOPS, floor_app

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def test_floor_app_answers_the_constant_after_n_handle_calls(url):
    from ray import serve

    serve.run(floor_app({"ray_actor_options": {"num_cpus": 0.05}}, {"ray_actor_options": {"num_cpus": 0.05}}),
              name="floor_test", route_prefix="/floor-test")
    try:
        for hops in (0, 2, MAX_HOPS):
            response = requests.get(f"{url}/floor-test/floor/{hops}", timeout=30)
            assert response.status_code == 200 and response.json() == CONSTANT
        too_many = requests.get(f"{url}/floor-test/floor/{MAX_HOPS + 1}", timeout=30)
        assert too_many.status_code == 422 and "hops must be within" in too_many.text
    finally:
        serve.delete("floor_test")
