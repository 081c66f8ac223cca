"""Heavy evaluation steps as Ray tasks (ray_jobs.common.tasks) on the suite's shared local Ray."""
import os
import time
from functools import partial

import numpy as np
import pytest

from ray_jobs.common.tasks import run_task, run_tasks
from recsys.config import ConfigError
from recsys.progress import in_ray_worker
from recsys.train_loops.scaling import TaskResources

pytestmark = pytest.mark.ray


def _sleep_then(seconds: float, value):
    started = time.time()
    time.sleep(seconds)
    return value, in_ray_worker(), (started, time.time())


def test_tasks_run_outside_the_driver_side_by_side_with_the_declared_resources(idle_ray):
    seconds, placements = {}, {}
    # two 1.5 s tasks with 1 CPU each on a 4-CPU Ray: both run at once
    results = run_tasks({"a": partial(_sleep_then, 1.5, np.arange(3)), "b": partial(_sleep_then, 1.5, "b")},
                        TaskResources(num_cpus=1), "tasks.test", seconds, placements, progress=None)
    assert results["a"][0].tolist() == [0, 1, 2] and results["b"][:2] == ("b", True)
    (start_a, end_a), (start_b, end_b) = results["a"][2], results["b"][2]
    assert max(start_a, start_b) < min(end_a, end_b)   # their sleeps overlapped
    assert not in_ray_worker()  # the driver
    assert set(placements) == {"a", "b"}
    assert all(p["pid"] != os.getpid() for p in placements.values())
    assert placements["a"]["pid"] != placements["b"]["pid"]
    assert all(p["resources"] == {"CPU": 1.0} and p["seconds"] >= 1.5 for p in placements.values())
    assert seconds["a+b"] >= 1.5
    assert run_task("c", partial(_sleep_then, 0, 7), TaskResources(num_cpus=2), "tasks.test")[0] == 7


def test_a_task_no_node_can_hold_fails_at_once_naming_the_setting(idle_ray):
    with pytest.raises(ConfigError, match=r"tasks\.ranker: .*fits on no node"):
        run_task("never", partial(_sleep_then, 0, 1), TaskResources(num_cpus=64), "tasks.ranker")


def _bad_input():
    raise ConfigError("items.csv: column 'sku' missing")


def test_a_failing_task_raises_in_the_driver_and_bad_input_keeps_its_one_line(idle_ray):
    started = time.time()
    with pytest.raises(Exception, match="boom"):  # at once, not after the slow task
        run_tasks({"bad": partial(int, "boom"), "slow": partial(_sleep_then, 20, 0)}, TaskResources(), "tasks.test",
                  progress="steps")
    assert time.time() - started < 15
    with pytest.raises(ConfigError) as error:
        run_task("input", _bad_input, TaskResources(), "tasks.test")
    assert str(error.value) == "items.csv: column 'sku' missing"   # not Ray's traceback


def test_resources_are_validated_and_become_ray_options():
    assert TaskResources().ray_options() == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert TaskResources(num_cpus=2, num_gpus=1, memory_gb=0.5).ray_options() == {
        "num_cpus": 2, "num_gpus": 1, "memory": 2**29}
    with pytest.raises(ConfigError, match="num_cpus: -1"):
        TaskResources(num_cpus=-1)
