"""Helpers of the store tests; the session's embedded PostgreSQL fixtures (``pg_dsn``, ``pg_config``,
``make_state_dir``) live in tests/conftest.py, shared with the Serve tests."""
from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
