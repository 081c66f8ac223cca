"""The heavy steps of an evaluation command (text vectors, each stage's candidates, the ranker's fit)
as Ray tasks with declared resources, so that on a cluster they run on worker nodes, not in the
driver on the head (``cluster.yaml`` gives the head 0 CPUs), and independent steps run side by side.

Each call is a zero-argument callable (a ``functools.partial`` of a library function): Ray pickles
it with its arguments (large arrays go through the object store) and returns the function's result.
A task whose worker dies is retried (Ray's default for tasks): the steps write nothing but caches
keyed by their content (MiniLM's vectors), so a retry is safe.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

from recsys.data.result import AdapterError
from recsys.config import ConfigError
from recsys.progress import progress_bar
from recsys.train_loops.scaling import TaskResources


def _call(function: Callable[[], Any]) -> tuple[Any, dict]:
    """The result, and where the task ran and what Ray gave it (for the command's report)."""
    import ray

    started = time.perf_counter()
    result = function()
    context = ray.get_runtime_context()
    return result, {"node_id": context.get_node_id(), "pid": os.getpid(),
                    "resources": context.get_assigned_resources(), "seconds": round(time.perf_counter() - started, 2)}


def _check_feasible(resources: TaskResources, setting: str) -> None:
    """A private local Ray has no autoscaler: a task no node can hold would wait for ever."""
    import ray

    if os.environ.get("RAY_ADDRESS"):  # a cluster may add the node later (autoscaler)
        return
    wanted = {"CPU": resources.num_cpus, "GPU": resources.num_gpus, "memory": resources.memory_gb * 2**30}
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    if not any(all(have.get(key, 0) >= amount for key, amount in wanted.items() if amount > 0) for have in nodes):
        largest = max(({k: v for k, v in have.items() if k in wanted} for have in nodes), key=lambda h: h.get("CPU", 0),
                       default={})
        raise ConfigError(f"{setting}: {resources} fits on no node of this Ray (largest: {largest}); "
                          f"lower {setting}.num_cpus / num_gpus / memory_gb")


def run_tasks(calls: Mapping[str, Callable[[], Any]], resources: TaskResources, setting: str,
              seconds: dict | None = None, placements: dict | None = None, progress: str | None = None,
              timing_key: str | None = None) -> dict[str, Any]:
    """Run every call as a Ray task named by its key (seen in Ray's state API and dashboard), all
    submitted at once, and return their results by key. ``seconds`` gets the wall time until all
    finished under ``timing_key`` (default ``"+".join(keys)``); ``placements`` gets, per key, the node
    and process the task ran in, the resources Ray assigned and its own seconds; ``progress``: one bar
    over the finished tasks; ``setting`` names the config key of ``resources`` in errors."""
    import ray

    _check_feasible(resources, setting)
    started = time.perf_counter()
    remote = ray.remote(_call)
    refs = {name: remote.options(name=name, **resources.ray_options()).remote(call) for name, call in calls.items()}
    pending = list(refs.values())
    try:
        for _ in progress_bar(range(len(pending)), progress):
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)  # the first failure ends the wait at once
        done = dict(zip(refs, ray.get(list(refs.values()))))
    except ray.exceptions.RayTaskError as error:
        for ref in pending:
            ray.cancel(ref)
        if isinstance(error.cause, (ConfigError, AdapterError)):  # bad input: its one clear line, not Ray's traceback
            raise error.cause from None
        raise
    if seconds is not None:
        seconds[timing_key or "+".join(calls)] = round(time.perf_counter() - started, 2)
    if placements is not None:
        placements.update({name: where for name, (_, where) in done.items()})
    return {name: result for name, (result, _) in done.items()}


def run_task(name: str, call: Callable[[], Any], resources: TaskResources, setting: str,
             seconds: dict | None = None, placements: dict | None = None) -> Any:
    return run_tasks({name: call}, resources, setting, seconds, placements)[name]
