"""One Serve application for the whole tests/serve_app package (see running.py for the order)."""
from __future__ import annotations

import pytest

from serve_app.config import ServeAppConfig
from tests.serve_app import artifacts as test_artifacts
from tests.serve_app import running


@pytest.fixture(scope="package")
def built(tmp_path_factory):
    return test_artifacts.build(tmp_path_factory.mktemp("serve_artifacts"), n_images=12)


@pytest.fixture(scope="package")
def config(built) -> ServeAppConfig:
    return running.app_config(built["root"])


@pytest.fixture(scope="package")
def url(ray_session, config):
    from ray import serve

    port = running.free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        running.start(config)
        base = f"http://127.0.0.1:{port}"
        running.wait_healthy(base)
        yield base
    finally:
        serve.shutdown()
