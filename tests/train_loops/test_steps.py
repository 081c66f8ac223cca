"""Equal step counts across real worker processes (torch.distributed, gloo, DDP): a worker with fewer
batches repeats its own until it has as many as the worker with the most; a worker with none makes
every worker fail with the same error. The control shows the hang that the equal counts prevent."""
import datetime
import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from recsys.train_loops.steps import equal_steps, step_counts
from bench.ports import free_port

pytestmark = pytest.mark.timeout(180)
OWN_BATCHES = {0: 5, 1: 2}   # rank -> batches of its own (a skewed split)


def _worker(rank: int, port: int, out_dir: str, own: dict, equalise: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # a short collective timeout turns the control's hang into an error within seconds
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=5))
    result = {}
    try:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(nn.Linear(4, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        batches = [np.array([rank * 100 + b]) for b in range(own[rank])]
        try:
            if equalise:
                batches, counts = equal_steps(batches, "[test]")
                result.update(step_counts(counts))
            result["optimizer_steps"] = 0
            for rows in batches:
                loss = model(torch.full((len(rows), 4), float(rows[0] % 7))).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()                 # DDP all-reduces the gradients: every worker must take part
                optimizer.step()
                result["optimizer_steps"] += 1
            result["batches"] = [int(b[0]) for b in batches]
        except RuntimeError as error:
            result["error"] = str(error)
        if not equalise and rank == 1:
            time.sleep(8)                       # alive but done: what a Ray Train worker at its next barrier looks like
    finally:
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.destroy_process_group()


def _run(tmp_path, own: dict, equalise: bool = True) -> list[dict]:
    mp.spawn(_worker, args=(free_port(), str(tmp_path), own, equalise), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


def test_the_worker_with_fewer_batches_repeats_its_own_and_both_finish(tmp_path):
    first, second = _run(tmp_path, OWN_BATCHES)
    assert first["batches"] == [0, 1, 2, 3, 4]
    assert second["batches"] == [100, 101, 100, 101, 100]            # its own two, cycled to five
    assert first["steps"] == second["steps"] == 5 and first["fewest_own_batches"] == second["fewest_own_batches"] == 2
    assert first["optimizer_steps"] == second["optimizer_steps"] == 5  # every step's all-reduce completed


def test_a_worker_without_batches_fails_every_worker_with_the_counts(tmp_path):
    results = _run(tmp_path, {0: 3, 1: 0})
    for result in results:
        assert "workers [1] have no training batch" in result["error"] and "[3, 0]" in result["error"]


def test_control_without_equal_steps_the_worker_with_more_batches_is_stuck(tmp_path):
    first, second = _run(tmp_path, OWN_BATCHES, equalise=False)
    assert second["batches"] == [100, 101]
    assert "error" in first and "batches" not in first                # rank 0 waited at step 3 until the timeout
    assert first["optimizer_steps"] == 2 and second["optimizer_steps"] == 2


def test_outside_a_distributed_fit_the_batches_are_unchanged():
    batches = [np.arange(2), np.arange(2, 4)]
    same, counts = equal_steps(batches, "[test]")
    assert same == batches and counts == [2] and step_counts(counts) == {"steps": 2, "fewest_own_batches": 2}


def test_scaling_names_a_placement_strategy_ray_knows():
    from recsys.config import ConfigError
    from recsys.train_loops.scaling import ScalingSettings

    assert ScalingSettings(num_workers=2, placement_strategy="SPREAD").placement_strategy == "SPREAD"
    with pytest.raises(ConfigError, match="scaling.placement_strategy: 'spread'"):
        ScalingSettings(placement_strategy="spread")
