"""The contrastive losses across real worker processes (torch.distributed, gloo on CPU, DDP):
2 workers x B/2 rows give the loss and the parameter gradients of 1 worker x B rows, because the
loss gathers every worker's rows (with gradients) before scoring. Without the gather each worker
would only see its own negatives and both numbers would change with the worker count."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from recsys.losses.contrastive import InfoNCE, NTXent
from bench.ports import free_port

pytestmark = pytest.mark.timeout(180)
BATCH, DIM = 16, 8


def _model() -> nn.Module:
    torch.manual_seed(0)  # the same weights in every process, as DDP broadcasts them
    return nn.Sequential(nn.Linear(DIM, 32), nn.Tanh(), nn.Linear(32, DIM))


def _batch():
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(BATCH, DIM, generator=generator)
    targets = torch.randn(BATCH, DIM, generator=generator)
    labels = torch.arange(BATCH)
    labels[3] = labels[7] = 100  # two rows with one label: kept out of each other's denominators
    return inputs, targets, labels


def _losses(model: nn.Module, rows: slice) -> dict[str, torch.Tensor]:
    inputs, targets, labels = _batch()
    x, y, label = inputs[rows], targets[rows], labels[rows]
    out = {}
    for name, compute in {"infonce": lambda: InfoNCE(0.1)(model(x), y, label),
                          "ntxent": lambda: NTXent(0.1)(model(x), model(x + 0.05 * y))}.items():
        model.zero_grad()
        loss = compute()
        loss.backward()
        out[name] = torch.cat([loss.detach().view(1)] + [p.grad.detach().clone().view(-1) for p in model.parameters()])
    return out


def _worker(rank: int, world: int, port: int, out_dir: str, gather: bool = True) -> None:
    if not gather:  # the control: each worker scores only its own rows, as before the gather existed
        import recsys.losses.contrastive as contrastive
        contrastive.gather_rows = lambda *tensors: tensors
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(_model())  # averages gradients, as Ray Train's prepare_model
        per = BATCH // world
        result = _losses(model, slice(rank * per, (rank + 1) * per))
        # every rank computed the same global loss; its DDP-averaged gradients are the model's
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_workers_with_half_batches_equal_one_worker_with_the_whole_batch(tmp_path):
    single = _losses(_model(), slice(0, BATCH))
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        distributed = torch.load(tmp_path / f"rank{rank}.pt")
        for name in ("infonce", "ntxent"):
            assert torch.allclose(distributed[name][0], single[name][0], atol=1e-6), (name, "loss")
            assert torch.allclose(distributed[name][1:], single[name][1:], atol=1e-6), (name, "gradients")


def test_without_the_gather_two_workers_give_another_loss_and_other_gradients(tmp_path):
    """Control: the same two processes with the gather switched off (each worker's own negatives only)."""
    single = _losses(_model(), slice(0, BATCH))
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path), False), nprocs=2, join=True)
    for rank in range(2):
        local = torch.load(tmp_path / f"rank{rank}.pt")
        for name in ("infonce", "ntxent"):
            assert not torch.allclose(local[name][0], single[name][0], atol=1e-3), (name, "loss")
            assert not torch.allclose(local[name][1:], single[name][1:], atol=1e-4), (name, "gradients")
