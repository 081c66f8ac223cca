"""Wall-clock timings that reports carry (``{"seconds": {...}}``)."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Record how long the block took as ``seconds[name]`` (0.1 s resolution)."""
    started = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - started, 1)


def process_usage() -> dict[str, float]:
    """This process's CPU-seconds (user + system), peak resident memory and seconds since the library loaded.

    Every run manifest records it for the process that ran the stage (the driver): on a cluster the
    driver only coordinates, and these numbers show whether it did more. Peak RSS is the process's
    high-water mark, not the stage's own (several stages in one process report a rising value)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_bytes = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # KiB on Linux, bytes on macOS
    return {"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(rss_bytes / 2**20, 1),
            "wall_seconds": round(time.time() - _LOADED_AT, 2)}


_LOADED_AT = time.time()  # a stage imports the library first thing: close to the process's start
