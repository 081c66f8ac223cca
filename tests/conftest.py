"""Shared fixtures: the real data in ../shared/data, one Ray runtime and one embedded PostgreSQL for the session."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from recsys.stores.postgres import PostgresConfig, ensure_server, stop_server

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FASHIONREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (the real K-Fashion samples, Myntra catalog and H&M subset)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} does not exist (set FASHIONREC_SHARED_DATA "
                    "to its location to run the real-data tests)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kfashion_samples(shared_data) -> Path:
    path = shared_data / "kfashion_samples"
    if not path.is_dir():
        pytest.skip(f"{path} does not exist")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray for every test that needs it (starting Ray costs seconds).

    4 logical CPUs on a 2-core machine: Ray Train/Tune release a finished trial's placement group
    asynchronously, and with exactly 2 logical CPUs a sweep can wait on that indefinitely.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture
def idle_ray(ray_session):
    """The shared Ray with every CPU free again: Ray Train removes a finished run's placement group
    asynchronously, and a test that needs the whole (2-CPU) cluster must not start before that."""
    import time

    deadline = time.time() + 60
    while ray_session.available_resources().get("CPU", 0) < ray_session.cluster_resources()["CPU"]:
        if time.time() > deadline:
            pytest.fail(f"Ray CPUs still held after 60 s: {ray_session.available_resources()}")
        time.sleep(1)
    return ray_session


# ---------------------------------------------------------------- one embedded PostgreSQL per session
# Started from nothing, as whatever user runs the tests (root here and in CI: then the server runs as the
# unprivileged ``fashionrec-pg`` account), on a free port so parallel sessions never clash; stopped at the end.

@pytest.fixture(scope="session")
def make_state_dir() -> Iterator[Callable[[], Path]]:
    """Fresh folders for server data, outside pytest's tmp_path: pytest resets its base folder to mode 0700
    whenever a session starts (any concurrent run), which would lock the server account out as root."""
    made = []

    def make() -> Path:
        made.append(Path(tempfile.mkdtemp(prefix="fashionrec-pg-test-")))
        return made[-1] / "state"

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_config(make_state_dir) -> PostgresConfig:
    from tests.stores.conftest import free_port

    return PostgresConfig(data_dir=str(make_state_dir()), port=free_port())


@pytest.fixture(scope="session")
def pg_dsn(pg_config):
    dsn = ensure_server(pg_config)
    yield dsn
    stop_server(pg_config)
