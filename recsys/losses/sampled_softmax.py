"""Sampled softmax for next-item prediction (the user tower's objective).

InfoNCE of every sequence position's state against its next item, with the batch's unique next
items plus uniformly sampled items as the candidates (unique, so a repeated item is never its own
negative), optionally with the log-Q correction: subtract the log of how often each candidate is
expected among the candidates, since popular items are in-batch negatives far more often than
their share of true preferences.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SampledSoftmaxConfig:
    temperature: float = 0.1

    def build(self) -> "SampledSoftmax":
        return SampledSoftmax(self)


class SampledSoftmax(nn.Module):
    """``forward(queries, positives, item_vectors, n_items, negatives, popularity)``: queries (N, d)
    states, positives (N,) target tokens, ``item_vectors(tokens) -> (M, d)`` the item side,
    ``negatives`` (S,) uniformly sampled tokens of 1..n_items, ``popularity`` ((n_items + 1,)
    probabilities of each token being a target) turns on the log-Q correction: logits minus
    log(expected times sampled) = log(P * p_i) in batch, log(S / n_items) for the uniform samples."""

    def __init__(self, config: SampledSoftmaxConfig | None = None):
        super().__init__()
        self.config = config or SampledSoftmaxConfig()

    def forward(self, queries: torch.Tensor, positives: torch.Tensor,
                item_vectors: Callable[[torch.Tensor], torch.Tensor], n_items: int,
                negatives: torch.Tensor | None = None, popularity: torch.Tensor | None = None) -> torch.Tensor:
        in_batch = torch.unique(positives)                               # sorted
        extra = negatives[~torch.isin(negatives, in_batch)] if negatives is not None else positives[:0]
        candidates = torch.cat([in_batch, extra])
        logits = queries @ item_vectors(candidates).T / self.config.temperature
        if popularity is not None:
            expected_in_batch = torch.log(len(positives) * popularity[in_batch].clamp(min=1e-12))
            expected_extra = torch.full((len(extra),), float(np.log(max(len(negatives), 1) / n_items)),
                                        device=logits.device) if negatives is not None else expected_in_batch[:0]
            logits = logits - torch.cat([expected_in_batch, expected_extra])
        return F.cross_entropy(logits, torch.searchsorted(in_batch, positives))


def sampled_softmax_loss(model, batch, targets: torch.Tensor, negatives: torch.Tensor | None = None,
                         popularity: torch.Tensor | None = None, pad: int = 0) -> torch.Tensor:
    """The user tower's loss over every position with a target (``targets`` (B, L) tokens, ``pad`` =
    none): ``model`` gives ``states(batch)``, ``item_vectors(tokens)``, ``n_items`` and
    ``config.temperature``."""
    states = model.states(batch)
    keep = targets != pad
    loss = SampledSoftmax(SampledSoftmaxConfig(model.config.temperature))
    return loss(states[keep], targets[keep], model.item_vectors, model.n_items, negatives, popularity)
