"""A Ray Train worker process killed mid-epoch (two workers): the fit restarts its worker group from
the last checkpoint (``fit_torch``'s FailureConfig) and finishes with every epoch once, on the
production DeepFM loop. The kill comes from outside (SIGKILL to the worker's process, found through
its process title), as a crashed or pre-empted process would."""
import os
import signal
import threading
import time

import pytest

from recsys.train_loops.rerankers import DeepFMTrainConfig
from tests.ray_jobs.test_two_workers import reranker_data, reranker_fit

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
EPOCHS = 8


def _train_worker_pids() -> list[int]:
    """Live Ray Train worker processes of this session's Ray: children of its raylet that Ray titles
    ``ray::RayTrainWorker...`` (the state API would need the dashboard, which the suite's Ray does not
    start; other sessions' workers on this machine have other raylets)."""
    import psutil
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    pids = []
    for process in psutil.Process(raylet).children():
        try:
            if any("RayTrainWorker" in part for part in process.cmdline()):
                pids.append(process.pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(pids)


def test_a_killed_worker_resumes_from_the_last_checkpoint_and_finishes_every_epoch(idle_ray, tmp_path):
    result, failure = {}, []

    def fit():
        try:
            started = time.perf_counter()
            result["fitted"] = reranker_fit("deepfm", DeepFMTrainConfig(epochs=EPOCHS, batch_lists=2),
                                            reranker_data(1024, length=20), tmp_path)
            result["seconds"] = time.perf_counter() - started
        except Exception as error:  # surfaced by the assertions below
            failure.append(error)

    thread = threading.Thread(target=fit)
    started = time.perf_counter()
    thread.start()
    checkpoints = tmp_path / "deepfm" / "ray_results"
    deadline = time.time() + 240
    # Two checkpoint folders: the first epoch's report has passed every worker (a report is a barrier),
    # so the controller has registered its checkpoint; a kill before that restarts from scratch.
    while len([p for p in checkpoints.rglob("checkpoint_*") if p.is_dir()]) < 2:
        assert thread.is_alive() and time.time() < deadline, f"no checkpoint before the fit ended: {failure}"
        time.sleep(0.1)
    time.sleep(0.5)
    pids = _train_worker_pids()
    assert len(pids) == 2, pids
    killed_at = time.perf_counter()
    os.kill(pids[-1], signal.SIGKILL)                                  # in the second or third epoch
    thread.join(timeout=480)
    assert not thread.is_alive() and not failure, failure
    history = result["fitted"]["history"]
    assert [h["epoch"] for h in history] == list(range(EPOCHS))          # every epoch once, none repeated
    # the first worker group ran from epoch 0 until the kill, a new one took over from the last checkpoint
    starts = [h["started_at_epoch"] for h in history]
    resumed = starts[-1]
    assert 1 <= resumed < EPOCHS and starts == [0] * resumed + [resumed] * (EPOCHS - resumed), starts
    assert pids[-1] not in _train_worker_pids()
    print(f"recovery: killed at {killed_at - started:.1f} s into the fit; a new worker group resumed at epoch "
          f"{resumed} and finished it {history[resumed]['elapsed_s']:.1f} s after its start (an epoch before the "
          f"kill took {history[0]['elapsed_s']:.1f} s); the whole fit took {result['seconds']:.1f} s")
