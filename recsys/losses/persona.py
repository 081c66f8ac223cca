"""The persona two-tower's loss: torch's ``nn.TripletMarginLoss`` on explicit (customer, bought
product, not-bought product) triplets.

Not pytorch-metric-learning's: that one derives triplets from class labels inside one embedding
batch, while here anchor and positive come from different towers and "bought" is a many-to-many
relation, not a class. Euclidean distance on unit vectors (0..2), margin 1.0.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def triplet_loss(margin: float = 1.0) -> nn.Module:
    """``loss(anchor, positive, negative)`` over rows of explicit triplets."""
    return nn.TripletMarginLoss(margin=margin, p=2)


@dataclass
class PersonaLossConfig:
    margin: float = 1.0

    def build(self) -> nn.Module:
        return triplet_loss(self.margin)
