"""The same number of optimizer steps on every worker of a distributed fit, whatever the data.

Why: DDP all-reduces gradients at every backward, and the contrastive losses all-gather rows
(``recsys.losses.contrastive.gather_rows``): a worker with fewer batches than the others leaves
them waiting in a collective for ever (a hang, not an error). Shards can differ in size whatever
Ray Data's split does, because the loops filter and bucket their own rows (DeepFM keeps only lists
with a listed target, the user tower buckets sequences by length). So every epoch the workers
exchange their batch counts and each runs as many steps as the worker with the most; a worker
with fewer repeats its own batches from the start (its rows weigh a little more this epoch, no row
is dropped). A worker with no batch at all while others have some cannot take part: every worker
raises the same error naming the counts (a failed fit, never a hang).
"""
from __future__ import annotations

from typing import Sequence, TypeVar

Batch = TypeVar("Batch")


def batch_counts(n_local: int) -> list[int]:
    """Every worker's ``n_local`` in rank order ([n_local] outside a distributed fit)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [int(n_local)]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, torch.tensor([int(n_local)], dtype=torch.int64, device=device))
    return [int(t.item()) for t in gathered]


def equal_steps(batches: Sequence[Batch], stage: str) -> tuple[list[Batch], list[int]]:
    """(this worker's batches for the epoch, every worker's own batch count): as many batches as
    the worker with the most, cycling through this worker's own from the start."""
    counts = batch_counts(len(batches))
    most = max(counts)
    if most and min(counts) == 0:
        raise RuntimeError(f"{stage}: workers {[r for r, c in enumerate(counts) if c == 0]} have no training batch "
                           f"this epoch while others have (batches per worker {counts}): too little training data "
                           f"for {len(counts)} workers; use fewer workers or more data")
    return [batches[i % len(batches)] for i in range(most)], counts


def step_counts(counts: Sequence[int]) -> dict[str, int]:
    """An epoch's metrics: steps every worker ran, and the fewest batches a worker had of its own
    (below ``steps``: that worker repeated some of its batches)."""
    return {"steps": int(max(counts)), "fewest_own_batches": int(min(counts))}


def rank_zero_decides(flag: bool) -> bool:
    """Rank 0's ``flag`` on every worker (the flag itself outside a distributed fit). Why: a decision
    each rank takes from its own numbers (early stopping on its validation metrics) could differ by
    rounding between devices, and a rank that leaves the loop alone leaves the others in a collective."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return bool(flag)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([int(bool(flag))], dtype=torch.int64, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())
