"""Contrastive losses.

``InfoNCE`` aligns queries (e.g. JSON-encoder outputs) to frozen targets (image or title
embeddings): query i's positive is target i and every other target in the batch is a negative;
both directions are averaged (the CLIP objective). Rows whose targets share a label (identical
titles) are left out of each other's denominators instead of being pushed apart as false negatives.

Written on ``F.cross_entropy`` over the B x B similarity matrix rather than with
pytorch-metric-learning's ``NTXentLoss`` (which computes the same value for distinct labels, see
tests/test_losses.py): PML's pair-based form builds a (positives x negatives) matrix, O(B^3), which
made a batch of 256 several hundred times slower on CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        loss = self._one_way(queries, targets, labels)
        if self.symmetric:
            loss = 0.5 * (loss + self._one_way(targets, queries, labels))
        return loss
