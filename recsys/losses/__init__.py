"""Every training objective of the library, one module per family.

A loop receives its loss as a small config object (``cfg.loss``) and builds it with ``.build()``,
as pytorch-metric-learning composes a loss with its miner; ``LOSSES`` names each config so a new
objective is one module here, one line in ``LOSSES`` and its test (tests/losses/).

- contrastive: ``InfoNCE`` (JSON encoder <-> images/titles, duplicate-aware), ``NTXent`` (SimCSE views)
- metric: PML triplet margin loss + miner (item-tower metric adapter)
- persona: explicit (customer, bought, not bought) triplets across two towers
- sampled_softmax: next-item loss of the user tower (sampled negatives, log-Q correction)
- ranking: pointwise BCE and listwise softmax (+ diversity term) of the rerankers
"""
from recsys.losses.contrastive import InfoNCE, InfoNCEConfig, NTXent, NTXentConfig, nt_xent
from recsys.losses.metric import TRIPLET_TYPES, TripletConfig, triplet_components
from recsys.losses.persona import PersonaLossConfig, triplet_loss
from recsys.losses.ranking import ListwiseLoss, ListwiseLossConfig, listwise_loss, pointwise_loss
from recsys.losses.sampled_softmax import SampledSoftmax, SampledSoftmaxConfig, sampled_softmax_loss

LOSSES = {
    "infonce": InfoNCEConfig,
    "nt_xent": NTXentConfig,
    "triplet": TripletConfig,
    "persona_triplet": PersonaLossConfig,
    "listwise": ListwiseLossConfig,
    "sampled_softmax": SampledSoftmaxConfig,
}


def loss_config(name: str, **settings):
    """The config object of the loss called ``name`` (a key of ``LOSSES``) with ``settings``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name](**settings)


__all__ = ["LOSSES", "loss_config", "InfoNCE", "InfoNCEConfig", "NTXent", "NTXentConfig", "nt_xent", "TRIPLET_TYPES",
           "TripletConfig", "triplet_components", "PersonaLossConfig", "triplet_loss", "ListwiseLoss",
           "ListwiseLossConfig", "listwise_loss", "pointwise_loss", "SampledSoftmax", "SampledSoftmaxConfig",
           "sampled_softmax_loss"]
