"""Reranker losses over padded candidate lists (scores, labels, mask all (B, L)).

- :func:`pointwise_loss`: binary cross-entropy of every valid candidate (DeepFM).
- :class:`ListwiseLoss` / :func:`listwise_loss`: per-list softmax cross-entropy of the target
  plus ``diversity_weight`` x the expected pairwise similarity of two different candidates under
  the (sharpened) score softmax, so probability mass on near-duplicates costs (the listwise model).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def pointwise_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the valid candidates."""
    mask = mask.bool()
    return F.binary_cross_entropy_with_logits(logits[mask], labels[mask])


def listwise_softmax_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-list softmax cross-entropy of the positive(s) (B,); lists without a positive give 0."""
    logp = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    positive = (labels > 0) & mask
    n_pos = positive.sum(dim=-1)
    loss = -(logp.masked_fill(~positive, 0.0)).sum(dim=-1) / n_pos.clamp(min=1)
    return torch.where(n_pos > 0, loss, torch.zeros_like(loss))


def expected_pairwise_similarity(scores: torch.Tensor, similarity: torch.Tensor, mask: torch.Tensor,
                                 temperature: float = 1.0) -> torch.Tensor:
    """Expected similarity of two different candidates drawn from p = softmax(scores / temperature)
    over the valid candidates: sum_{i != j} p_i p_j S_ij / sum_{i != j} p_i p_j (B,).

    The normaliser keeps it a similarity (in [-1, 1]) however peaked p is; without it the term
    would be minimised by putting all mass on one item, which the relevance loss already wants,
    and it would say nothing about the rest of the top. A lower temperature focuses it on the top
    of the list."""
    p = torch.softmax(scores.masked_fill(~mask, float("-inf")) / temperature, dim=-1)
    off_diagonal = 1 - torch.eye(similarity.shape[-1], device=similarity.device)
    pairs = torch.einsum("bi,ij,bj->b", p, off_diagonal, p)  # = 1 - sum_i p_i^2
    return torch.einsum("bi,bij,bj->b", p, similarity * off_diagonal, p) / pairs.clamp(min=1e-6)


def list_similarity(vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, d) item vectors -> (B, L, L) cosine similarities, 0 where either side is padding."""
    unit = F.normalize(vectors, dim=-1) * mask.unsqueeze(-1)
    return unit @ unit.transpose(1, 2)


def listwise_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                  similarity: torch.Tensor | None = None, diversity_weight: float = 0.0,
                  temperature: float = 1.0) -> torch.Tensor:
    """Mean over lists of softmax CE (lists with a positive) + weight x expected pairwise similarity
    (every list: diversity needs no label)."""
    mask = mask.bool()
    has_positive = ((labels > 0) & mask).any(dim=-1)
    relevance = listwise_softmax_loss(scores, labels, mask).sum() / has_positive.sum().clamp(min=1)
    if similarity is None or diversity_weight <= 0:
        return relevance
    return relevance + diversity_weight * expected_pairwise_similarity(scores, similarity, mask, temperature).mean()


@dataclass
class ListwiseLossConfig:
    diversity_weight: float = 0.0      # 0: relevance only
    temperature: float = 1.0           # of the diversity term's softmax; < 1 focuses it on the top

    def build(self) -> "ListwiseLoss":
        return ListwiseLoss(self)


class ListwiseLoss(nn.Module):
    """:func:`listwise_loss` with its settings; ``item_vectors`` (B, L, d) give the diversity term's
    similarities (needed only when ``diversity_weight`` > 0)."""

    def __init__(self, config: ListwiseLossConfig | None = None):
        super().__init__()
        self.config = config or ListwiseLossConfig()

    @property
    def needs_vectors(self) -> bool:
        return self.config.diversity_weight > 0

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        mask = mask.bool()
        similarity = list_similarity(item_vectors, mask) if self.needs_vectors and item_vectors is not None else None
        return listwise_loss(scores, labels, mask, similarity, self.config.diversity_weight, self.config.temperature)
