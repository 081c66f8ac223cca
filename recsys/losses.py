"""Contrastive losses, built on pytorch-metric-learning.

``InfoNCE`` aligns queries (e.g. JSON-encoder outputs) to frozen targets (image or title embeddings):
query i's positive is target i, every other target in the batch is a negative. It is PML's
``NTXentLoss`` used across two sets (``ref_emb``), in both directions and averaged, which is the
CLIP objective. Optional ``labels`` mark pairs that share a target (identical titles) as
positives instead of false negatives.
"""
from __future__ import annotations

import torch
from pytorch_metric_learning.losses import NTXentLoss
from torch import nn


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.07, symmetric: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.symmetric = symmetric
        self.ntxent = NTXentLoss(temperature=temperature)

    def forward(self, queries: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            labels = torch.arange(len(queries), device=queries.device)
        # A copy, not the same tensor: PML drops the diagonal (self-pairs) when ref_labels *is* labels,
        # which across two sets would throw away every positive pair.
        ref_labels = labels.clone()
        loss = self.ntxent(queries, labels, ref_emb=targets, ref_labels=ref_labels)
        if self.symmetric:
            loss = 0.5 * (loss + self.ntxent(targets, labels, ref_emb=queries, ref_labels=ref_labels))
        return loss
