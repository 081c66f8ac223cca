"""A free TCP port on loopback, for servers the benchmarks and tests start (Serve's HTTP proxy, a
second Ray head, PostgreSQL, the S3-compatible server): the OS picks one nobody is bound to."""
from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
