"""Wall-clock timings that reports carry (``{"seconds": {...}}``)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Record how long the block took as ``seconds[name]`` (0.1 s resolution)."""
    started = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - started, 1)
