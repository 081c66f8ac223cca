"""Metric-learning losses from class labels: pytorch-metric-learning's triplet margin loss and its
miner over one shared distance (the item towers' stage-2 metric adapter).

Use as ``loss_fn(emb, labels, miner(emb, labels))`` (PML's composition of loss and miner);
"semihard" (negatives farther than the positive but inside the margin) is the stable default,
"hard" mines negatives closer than the positive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import TripletMarginMiner

TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


def triplet_components(margin: float = 0.2, type_of_triplets: str = "semihard"
                       ) -> tuple[TripletMarginLoss, TripletMarginMiner]:
    """PML triplet loss and its miner over one shared distance (L2 on normalised embeddings)."""
    # Imported here: every loss module loads with ``recsys.losses``, and plain-torch machines (the GPU
    # check's) may lack pytorch-metric-learning while needing none of this.
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import TripletMarginMiner

    if type_of_triplets not in TRIPLET_TYPES:
        raise ValueError(f"type_of_triplets must be one of {TRIPLET_TYPES}, got {type_of_triplets!r}")
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    distance = LpDistance(normalize_embeddings=True, p=2)
    return (TripletMarginLoss(margin=margin, distance=distance),
            TripletMarginMiner(margin=margin, type_of_triplets=type_of_triplets, distance=distance))


@dataclass
class TripletConfig:
    """Triplet margin loss + miner (``triplets``: the miner's triplet type)."""
    margin: float = 0.2
    triplets: str = "semihard"

    def build(self) -> tuple[TripletMarginLoss, TripletMarginMiner]:
        return triplet_components(self.margin, self.triplets)
