"""Helpers of the store tests; the session's embedded PostgreSQL fixtures (``pg_dsn``, ``pg_config``,
``make_state_dir``) live in tests/conftest.py, shared with the Serve tests."""
from __future__ import annotations

from bench.ports import free_port  # noqa: F401 (the store tests' import)
