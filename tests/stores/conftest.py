"""Helpers of the store tests; the session's embedded PostgreSQL fixtures (``pg_dsn``, ``pg_config``,
``make_state_dir``) live in tests/conftest.py, shared with the Serve tests."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from bench.ports import free_port  # noqa: F401 (the store tests' import)
from recsys.stores.postgres import PostgresConfig


def postmaster_pid(cfg: PostgresConfig) -> int:
    return int((cfg.pgdata / "postmaster.pid").read_text().splitlines()[0])


def process_state(pid: int) -> str | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return next(line for line in status.splitlines() if line.startswith("State:")).split()[1]


def kill_hard(cfg: PostgresConfig, timeout_s: float = 30) -> int:
    """SIGKILL the embedded server's postmaster and wait until it is gone (or a zombie where no init
    reaps it, as in containers); its pid."""
    pid = postmaster_pid(cfg)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while process_state(pid) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.1)
    return pid
