"""Protocol E3 of EVAL.md: sequential next item, leave-last-out, full ranking over all items.

- :func:`leave_last_out`: per user, order the items by the order column (ties keep file order);
  the last item is the test target, the second-to-last the validation target. Every user's
  sequence stays available as training data; only users with >= ``MIN_INTERACTIONS`` are evaluated.
- :class:`SequenceSplit`: the item vocabulary (every item of the log: full ranking is over all of
  them) and the sequences as item indices, with the histories each stage may see:
  ``history("val")`` = items before the validation target, ``history("test")`` = items before the
  test target, and ``training_sequences(stage)`` = what a model fitted for that stage may learn
  from (evaluated users cut before the stage's target, short users whole).
- :func:`full_ranking_ranks`: 0-based target ranks of any scorer, computed in user chunks with
  the user's history excluded (``recsys.metrics.ranking.target_ranks``), never a dense U x I matrix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from recsys.metrics.ranking import target_ranks

MIN_INTERACTIONS = 3
STAGES = ("val", "test")


@dataclass
class SequenceSplit:
    user_ids: np.ndarray              # (U,) str, every user of the log
    item_ids: np.ndarray              # (I,) str, every item of the log (sorted)
    sequences: list[np.ndarray]       # per user, item indices in order
    evaluated: np.ndarray             # (U,) bool: >= MIN_INTERACTIONS, has val and test targets

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def eval_rows(self) -> np.ndarray:
        return np.flatnonzero(self.evaluated)

    def history(self, stage: str) -> list[np.ndarray]:
        """Per evaluated user: the items the model sees before the stage's target."""
        cut = _cut(stage)
        return [self.sequences[u][:-cut] for u in self.eval_rows]

    def targets(self, stage: str) -> np.ndarray:
        cut = _cut(stage)
        return np.array([self.sequences[u][-cut] for u in self.eval_rows], dtype=np.int64)

    def training_sequences(self, stage: str) -> list[np.ndarray]:
        """Everything a model for ``stage`` may learn from: evaluated users up to (not including)
        the stage's target, users too short to evaluate with their whole sequence."""
        cut = _cut(stage)
        return [seq[:-cut] if ev else seq for seq, ev in zip(self.sequences, self.evaluated)]


def _cut(stage: str) -> int:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return 2 if stage == "val" else 1


def leave_last_out(users: Sequence, items: Sequence, order: Sequence,
                   min_interactions: int = MIN_INTERACTIONS) -> SequenceSplit:
    """Group a log into ordered per-user sequences. ``order`` is a timestamp or a position; equal
    values keep the rows' order in the input (a stable sort), as the interaction adapters do."""
    users = np.asarray(users).astype(str)
    items = np.asarray(items).astype(str)
    order = np.asarray(order)
    if not (len(users) == len(items) == len(order)):
        raise ValueError("users, items and order must have the same length")
    user_ids, user_index = np.unique(users, return_inverse=True)
    item_ids, item_index = np.unique(items, return_inverse=True)
    # lexsort is stable: the last key (user) first, then order, then input position.
    rows = np.lexsort((np.arange(len(users)), order, user_index))
    sorted_items = item_index[rows].astype(np.int64)
    bounds = np.flatnonzero(np.diff(user_index[rows])) + 1
    sequences = np.split(sorted_items, bounds) if len(rows) else []
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    return SequenceSplit(user_ids, item_ids, sequences, lengths >= min_interactions)


def full_ranking_ranks(score_chunk: Callable[[np.ndarray], np.ndarray], targets: np.ndarray,
                       histories: Sequence[np.ndarray], chunk_size: int = 1024,
                       progress: str | None = None) -> np.ndarray:
    """Target ranks of a scorer over all items. ``score_chunk(rows)`` returns the (len(rows), I)
    scores of those users (rows index ``targets``/``histories``); history items are excluded."""
    from tqdm.auto import tqdm

    out = []
    starts = range(0, len(targets), chunk_size)
    for start in tqdm(starts, desc=progress, disable=progress is None, mininterval=2):
        rows = np.arange(start, min(start + chunk_size, len(targets)))
        out.append(target_ranks(score_chunk(rows), targets[rows], [histories[r] for r in rows]))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
