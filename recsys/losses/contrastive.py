"""Contrastive losses.

``InfoNCE`` aligns queries (e.g. JSON-encoder outputs) to frozen targets (image or title
embeddings): query i's positive is target i and every other target in the batch is a negative;
both directions are averaged (the CLIP objective). Rows whose targets share a label (identical
titles) are left out of each other's denominators instead of being pushed apart as false negatives.

``NTXent`` (SimCSE, the item towers' stage 1): two views of one batch, row i of each the only
positive pair of the other. Each loss has a small config (``InfoNCEConfig``, ``NTXentConfig``)
whose ``build()`` gives the module a loop calls.

Across several workers (DDP), both losses first gather every worker's rows (``gather_rows``), so
each query sees the whole global batch's negatives and 2 workers x B/2 rows give the loss and the
gradients of 1 worker x B rows (tests/losses/test_distributed.py runs real gloo processes). The
gather keeps gradients (``torch.distributed.nn.functional.all_gather``, as open_clip's
``gather_features``): its backward sums each row's gradient over the ranks, W times the
one-worker gradient, which DDP's averaging divides by W again. Every worker must bring the same
number of rows (the loops drop the last partial batch and give every worker the same batch count).

Written on ``F.cross_entropy`` over the B x B similarity matrix rather than with
pytorch-metric-learning's ``NTXentLoss`` (which computes the same value for distinct labels, see
tests/test_losses.py): PML's pair-based form builds a (positives x negatives) matrix, O(B^3), which
made a batch of 256 several hundred times slower on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_available() and \
        torch.distributed.is_initialized() else 1


def gather_rows(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Every worker's rows of each tensor, concatenated in rank order; a tensor that needs gradients
    keeps them (this worker's rows receive the gradient of every worker's loss). One process, a
    ``None``, or no gradient recording (validation: each worker scores its own shard, whose size may
    differ, so a collective there could wait forever): returned as given."""
    if _world_size() == 1 or not torch.is_grad_enabled():
        return tensors
    from torch.distributed.nn.functional import all_gather

    gathered = []
    for tensor in tensors:
        if tensor is None:
            gathered.append(None)
        elif tensor.requires_grad:
            gathered.append(torch.cat(all_gather(tensor)))
        else:
            parts = [torch.empty_like(tensor) for _ in range(_world_size())]
            torch.distributed.all_gather(parts, tensor.contiguous())
            gathered.append(torch.cat(parts))
    return tuple(gathered)


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.07, symmetric: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.symmetric = symmetric

    def _one_way(self, queries: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logits = F.normalize(queries, dim=-1) @ F.normalize(targets, dim=-1).T / self.temperature
        if labels is not None:
            same = labels[:, None] == labels[None, :]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device))

    def forward(self, queries: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The loss over the global batch (every worker's rows; see ``gather_rows``)."""
        queries, targets, labels = gather_rows(queries, targets, labels)
        loss = self._one_way(queries, targets, labels)
        if self.symmetric:
            loss = 0.5 * (loss + self._one_way(targets, queries, labels))
        return loss


@dataclass
class InfoNCEConfig:
    """InfoNCE of queries against targets (the JSON encoder's objective)."""
    temperature: float = 0.07
    symmetric: bool = True

    def build(self) -> InfoNCE:
        return InfoNCE(self.temperature, self.symmetric)


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """NT-Xent over two views: row i of ``z_a`` and row i of ``z_b`` are the only positive pair.

    Cross-entropy over the 2B x 2B similarity matrix without its diagonal: the same value as
    pytorch-metric-learning's ``NTXentLoss`` with labels ``arange(B)`` twice (tests check this),
    which we do not call in training because its pair-based form builds an O(B^3) tensor (2.9 s
    per step at B = 256 on a 2-core CPU, milliseconds here).
    """
    z = torch.cat([z_a, z_b])
    scores = (z @ z.T) / temperature
    scores = scores.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = len(z_a)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(scores, targets)


class NTXent(nn.Module):
    """:func:`nt_xent` as a module: ``loss(z_a, z_b)`` for two views of one batch (SimCSE)."""

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return nt_xent(*gather_rows(z_a, z_b), self.temperature)  # the global batch, as InfoNCE


@dataclass
class NTXentConfig:
    """NT-Xent over two views of one batch (the item towers' SimCSE stage)."""
    temperature: float = 0.05

    def build(self) -> NTXent:
        return NTXent(self.temperature)
