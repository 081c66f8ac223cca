"""One builder for the candidate sources, from config: E3 (``recsys.eval.sequential``), E2
(``recsys.eval.next_purchase``), the demo users' training job and serving all call
:func:`build_sources`.

A stage describes what its sources may learn from (:class:`SourceInputs`: the users' training
sequences, and where present user/item vectors, baskets, content vectors); :class:`SourcesConfig`
names the sources in order and holds their settings. A source whose input is missing (no vectors,
no baskets, no content) or that is disabled is left out. :func:`recsys.retrieval.recommender.run_stage`
then scores, merges and labels their candidates (``sources["mostpop"]`` breaks ties).

Adding a source: its class in ``recsys/retrieval/<name>.py`` (``scores``, ``tie_break``, ``valid``),
one line in :data:`BUILDERS`, its name (and settings) in the stage's config, and a test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from recsys.retrieval.baskets import BasketConfig, BasketKNN
from recsys.retrieval.content import ContentConfig, ContentSource
from recsys.retrieval.dense import DenseSource
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.transitions import TransitionConfig, TransitionKNN


@dataclass
class SourcesConfig:
    """Which candidate sources, in order (popularity last: it breaks the others' ties), and their settings."""
    sources: list[str] = field(default_factory=lambda: ["user_tower", "itemknn", "basket", "content", "mostpop"])
    itemknn: TransitionConfig = field(default_factory=TransitionConfig)
    baskets: BasketConfig = field(default_factory=BasketConfig)
    content: ContentConfig = field(default_factory=ContentConfig)

    def __post_init__(self):
        unknown = [name for name in self.sources if name not in BUILDERS]
        if unknown:
            raise ValueError(f"unknown candidate source(s) {unknown}; known: {sorted(BUILDERS)}")


@dataclass
class SourceInputs:
    """What a stage's sources may learn from; rows of the per-user inputs = the stage's users."""
    sequences: Sequence[np.ndarray]                    # training sequences (item indices, oldest first)
    n_items: int
    user_vectors: np.ndarray | None = None             # (U, d) dense source: users ...
    item_vectors: np.ndarray | None = None             # (I, d) ... against items
    train_baskets: Sequence[np.ndarray] | None = None  # basket ids aligned with ``sequences``
    history_baskets: Sequence[np.ndarray] | None = None  # basket ids aligned with the users' histories
    content_vectors: object | None = None              # (I, k) dense or sparse item vectors of the content source


def _dense(cfg: SourcesConfig, inputs: SourceInputs):
    if inputs.user_vectors is None or inputs.item_vectors is None:
        return None
    return DenseSource(inputs.user_vectors, inputs.item_vectors)


def _transitions(cfg: SourcesConfig, inputs: SourceInputs):
    return TransitionKNN.fit(inputs.sequences, inputs.n_items, cfg.itemknn)


def _baskets(cfg: SourcesConfig, inputs: SourceInputs):
    if not cfg.baskets.enabled or inputs.train_baskets is None or inputs.history_baskets is None:
        return None
    return BasketKNN.fit_baskets(inputs.sequences, inputs.train_baskets, inputs.n_items, inputs.history_baskets,
                                 cfg.baskets)


def _content(cfg: SourcesConfig, inputs: SourceInputs):
    if not cfg.content.enabled or inputs.content_vectors is None:
        return None
    return ContentSource(inputs.content_vectors, cfg.content.weights)


def _popularity(cfg: SourcesConfig, inputs: SourceInputs):
    return Popularity.fit(inputs.sequences, inputs.n_items)


# name -> builder(config, inputs) -> fitted source, or None when the stage lacks its input
BUILDERS: dict[str, Callable[[SourcesConfig, SourceInputs], object | None]] = {
    "user_tower": _dense,
    "itemknn": _transitions,
    "basket": _baskets,
    "content": _content,
    "mostpop": _popularity,
}


def build_sources(cfg: SourcesConfig, inputs: SourceInputs, fitted: Mapping[str, object] | None = None
                  ) -> dict[str, object]:
    """The configured sources fitted on ``inputs``, in ``cfg.sources`` order; sources in ``fitted``
    are reused as they are (serving fits the history-based ones once and adds each request's
    user vector)."""
    fitted = fitted or {}
    out = {}
    for name in cfg.sources:
        source = fitted[name] if name in fitted else BUILDERS[name](cfg, inputs)
        if source is not None:
            out[name] = source
    return out
