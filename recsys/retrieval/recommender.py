"""The sequential recommender: candidate sources over a stage's users, merged, then ranked.

:func:`run_stage` makes one pass over users in chunks. Per chunk every source scores the whole
catalog once; that matrix gives the source's full-ranking target ranks (baselines, with equal
scores ordered by popularity) and its top-N candidates. Candidates may include history items:
the protocol's metric excludes the history except the target itself, so a repeated target is
ranked among the items the user had not seen, for every method alike; the final lists
(:func:`top_k_lists`, ``target_ranks``) exclude the history. The merged
candidates carry the ranker's features: each source's score of the item (also when another source
proposed it) and its gap to the user's best candidate under that source, its rank in each list,
the transition count from the last item alone, the number of sources proposing it and the
history length.

:func:`ranked_scores` turns ranker scores into a full ranking: candidates first by ranker score,
every other item after them by popularity, so ``target_ranks`` scores the recommender exactly like
the baselines.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from recsys.eval.sequential import full_ranking_ranks
from recsys.metrics.ranking import target_ranks
from recsys.progress import progress_bar
from recsys.retrieval.candidates import CandidateSet, merge, top_n
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.transitions import TransitionKNN


@dataclass
class CandidateConfig:
    n_per_source: int = 100       # each source's list length; the union is what the ranker sees
    chunk_size: int = 1024        # users scored at once (chunk x items float32 per source)


@dataclass
class StageResult:
    candidates: CandidateSet
    labels: np.ndarray | None                       # (M,) int8: is the candidate the target
    ranks: dict[str, np.ndarray] = field(default_factory=dict)   # full-ranking target ranks per source
    recall: dict[str, float] = field(default_factory=dict)       # target among a source's N (and merged)


def _gather(scores: np.ndarray, local: np.ndarray, items: np.ndarray) -> np.ndarray:
    return np.asarray(scores[local, items], dtype=np.float32)


def run_stage(sources: Mapping[str, object], popularity: Popularity, histories: Sequence[np.ndarray],
              targets: np.ndarray | None, config: CandidateConfig, evaluate: bool = False,
              progress: str | None = None) -> StageResult:
    """Candidates (and, with ``evaluate``, each source's full-ranking target ranks) for every user.
    ``sources`` maps names to objects with ``scores(histories, rows)``, ``tie_break(scores, order)``
    and ``valid(scores)`` (items it may propose, None = any)."""
    n_items = len(popularity.counts)
    parts, ranks = [], {name: [] for name in sources}
    transitions = next((s for s in sources.values() if isinstance(s, TransitionKNN)), None)
    for start in progress_bar(range(0, len(histories), config.chunk_size), progress):
        rows = np.arange(start, min(start + config.chunk_size, len(histories)))
        chunk_histories = [histories[r] for r in rows]
        raw, proposals = {}, {}
        for name, source in sources.items():
            raw[name] = source.scores(chunk_histories, rows)
            ranked = source.tie_break(raw[name], popularity.order)
            if evaluate:
                ranks[name].append(target_ranks(ranked, targets[rows], chunk_histories))
            # Not without the history: E3's metric ranks a target the user already had among the
            # items they had not (target_ranks never excludes the target), so the recommender
            # must be able to score it like the baselines do; final lists drop the history.
            proposals[name] = top_n(ranked, config.n_per_source, None, source.valid(raw[name]))
        part = merge(rows, proposals, config.n_per_source, n_items)
        local = part.row - start
        starts = np.r_[0, np.flatnonzero(np.diff(part.row)) + 1]
        for name in sources:
            value = (popularity.feature(part.item) if isinstance(sources[name], Popularity)
                     else _gather(raw[name], local, part.item))
            part.features[f"{name}_score"] = value
            part.features[f"{name}_rank"] = part.rank[name].astype(np.float32)
            if not isinstance(sources[name], Popularity):
                # Distance to the user's best candidate: scores mean different things for
                # different users (a heavy user's transition counts are larger everywhere).
                best = np.maximum.reduceat(value, starts) if len(value) else value
                part.features[f"{name}_gap"] = value - np.repeat(best, np.diff(np.r_[starts, len(value)]))
        if transitions is not None:
            last = transitions.scores(chunk_histories, weights=[1.0])
            part.features["itemknn_last_score"] = _gather(last, local, part.item)
        part.features["n_sources"] = np.sum([part.proposed[n] for n in sources], axis=0).astype(np.float32)
        lengths = np.array([len(h) for h in chunk_histories], dtype=np.float32)
        part.features["history_length"] = np.log1p(lengths[local])
        parts.append(part)
    candidates = CandidateSet.concat(parts)
    result = StageResult(candidates, None)
    if targets is not None:
        hit = candidates.item == targets[candidates.row]
        result.labels = hit.astype(np.int8)
        for name in sources:
            result.recall[name] = float(np.bincount(candidates.row[hit & candidates.proposed[name]],
                                                    minlength=len(targets)).clip(0, 1).mean())
        result.recall["merged"] = float(np.bincount(candidates.row[hit], minlength=len(targets)).clip(0, 1).mean())
    if evaluate:
        result.ranks = {name: np.concatenate(values) for name, values in ranks.items()}
    return result


RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al., 2009)


def reciprocal_rank_fusion(ranks: Mapping[str, np.ndarray], proposed: Mapping[str, np.ndarray],
                           k: int = RRF_K) -> np.ndarray:
    """Each candidate's sum over the sources that proposed it of ``1 / (k + rank)`` (0-based rank in
    that source's list): the untrained order of merged candidate lists, used when no learned ranker
    is served and reported beside the learned ones offline."""
    names = list(ranks)
    if not names:
        return np.zeros(0, dtype=np.float32)
    total = np.zeros(len(ranks[names[0]]), dtype=np.float64)
    for name in names:
        total += np.asarray(proposed[name], dtype=np.float64) / (k + np.asarray(ranks[name], dtype=np.float64))
    return total.astype(np.float32)


def ranked_scores(candidates: CandidateSet, ranker_scores: np.ndarray, popularity: Popularity,
                  rows: np.ndarray) -> np.ndarray:
    """(len(rows), I) full-ranking scores for users ``rows`` (consecutive): their candidates at
    2 + ranker score (ranker scores lie in [0, 1]), everything else at its popularity order (0, 1]."""
    scores = np.broadcast_to(popularity.order, (len(rows), len(popularity.order))).copy()
    lo, hi = np.searchsorted(candidates.row, [rows[0], rows[-1] + 1])
    scores[candidates.row[lo:hi] - rows[0], candidates.item[lo:hi]] = 2.0 + ranker_scores[lo:hi]
    return scores


def recommender_ranks(candidates: CandidateSet, ranker_scores: np.ndarray, popularity: Popularity,
                      histories: Sequence[np.ndarray], targets: np.ndarray, chunk_size: int = 1024,
                      progress: str | None = None) -> np.ndarray:
    """Full-ranking target ranks of the ranked candidates (history excluded), in user chunks."""
    return full_ranking_ranks(lambda rows: ranked_scores(candidates, ranker_scores, popularity, rows),
                              targets, histories, chunk_size, progress)


def top_k_lists(candidates: CandidateSet, ranker_scores: np.ndarray, popularity: Popularity,
                histories: Sequence[np.ndarray], k: int = 10, chunk_size: int = 1024) -> np.ndarray:
    """(U, k) item indices: each user's final list, history excluded."""
    out = []
    for start in range(0, len(histories), chunk_size):
        rows = np.arange(start, min(start + chunk_size, len(histories)))
        scores = ranked_scores(candidates, ranker_scores, popularity, rows)
        out.append(top_n(scores, k, [histories[r] for r in rows])[0])
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)
