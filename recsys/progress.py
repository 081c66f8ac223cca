"""One progress bar helper for library loops that may run in the driver or inside a Ray task."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def in_ray_worker() -> bool:
    """True inside a Ray task or actor (not in a driver that merely started Ray)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE)


def progress_bar(iterable: Iterable[T], desc: str | None, total: int | None = None) -> Iterator[T]:
    """``iterable`` with a bar described by ``desc`` (None: no bar). In a Ray worker the bar is Ray's
    tqdm, drawn by the driver: a plain tqdm there would only write lines to the worker's stderr."""
    if desc is None:
        yield from iterable
        return
    if in_ray_worker():
        from ray.experimental import tqdm_ray

        bar = tqdm_ray.tqdm(iterable, desc=desc, total=total)
        try:
            yield from bar
        finally:  # an open bar is drawn again by the driver under every later line
            bar.close()
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, mininterval=2)
