"""One embedded PostgreSQL (with pgvector) for the whole test session, in a fresh temporary folder.

Started from nothing, as whatever user runs the tests (root here and in CI: then the server runs as the
unprivileged ``fashionrec-pg`` account), on a free port so parallel sessions never clash; stopped at the end.
"""
from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from recsys.stores.postgres import PostgresConfig, ensure_server, stop_server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    return PostgresConfig(data_dir=str(make_state_dir()), port=free_port())


@pytest.fixture(scope="session")
def pg_dsn(pg_config):
    dsn = ensure_server(pg_config)
    yield dsn
    stop_server(pg_config)
