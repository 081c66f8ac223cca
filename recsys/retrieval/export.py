"""The files another stage (the reranker) reads: merged candidates and the sequences behind them.

``candidates.parquet``: one row per (user, candidate item, split) with
``user_id`` (string), ``item_id`` (string), ``split`` ("val" | "test"), ``label`` (int8: 1 if the
item is that split's target), ``score_<source>`` (float32, 0 when the source did not propose the
item), ``rank_fusion`` (float32: the sources' reciprocal-rank fusion,
``recsys.retrieval.recommender.reciprocal_rank_fusion``, the order Serve falls back to without a
learned reranker) and ``ranker_score`` (float32; on "val" the ranker was trained on these very rows).
``sequences.parquet``: ``user_id``, ``history_val`` / ``history_test`` (list<string>: the items
before the validation / test target, in order), ``target_val``, ``target_test``.
Written in slices so millions of candidate rows never sit in memory as Python strings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.retrieval.candidates import CandidateSet


def candidate_table(candidates: CandidateSet, labels: np.ndarray, ranker_scores: np.ndarray, split: str,
                    user_ids: pa.Array, item_ids: pa.Array, rows: slice | None = None) -> pa.Table:
    """Rows ``rows`` of a stage's candidates in the contract's columns (``user_ids`` index by
    candidate row, ``item_ids`` by item index)."""
    rows = rows or slice(0, len(candidates))
    columns = {"user_id": user_ids.take(pa.array(candidates.row[rows])),
               "item_id": item_ids.take(pa.array(candidates.item[rows])),
               "split": pa.array(np.full(len(candidates.row[rows]), split)),
               "label": pa.array(np.asarray(labels[rows], dtype=np.int8))}
    for name, values in candidates.score.items():
        columns[f"score_{name}"] = pa.array(np.asarray(values[rows], dtype=np.float32))
    if candidates.rank:
        from recsys.retrieval.recommender import reciprocal_rank_fusion

        columns["rank_fusion"] = pa.array(reciprocal_rank_fusion({n: r[rows] for n, r in candidates.rank.items()},
                                                                 {n: p[rows] for n, p in candidates.proposed.items()}))
    columns["ranker_score"] = pa.array(np.asarray(ranker_scores[rows], dtype=np.float32))
    return pa.table(columns)


def write_candidates(path: str | Path, stages: Sequence[tuple[str, CandidateSet, np.ndarray, np.ndarray]],
                     user_ids: Sequence[str], item_ids: Sequence[str], slice_rows: int = 2_000_000) -> int:
    """``stages``: (split, candidates, labels, ranker scores) each. Returns the rows written."""
    users, items = pa.array(np.asarray(user_ids, dtype=str)), pa.array(np.asarray(item_ids, dtype=str))
    writer, written = None, 0
    try:
        for split, candidates, labels, scores in stages:
            for start in range(0, len(candidates), slice_rows):
                table = candidate_table(candidates, labels, scores, split, users, items,
                                        slice(start, start + slice_rows))
                writer = writer or pq.ParquetWriter(str(path), table.schema)
                writer.write_table(table)
                written += table.num_rows
    finally:
        if writer:
            writer.close()
    return written


def _list_column(sequences: Sequence[np.ndarray], item_ids: pa.Array) -> pa.ListArray:
    offsets = np.r_[0, np.cumsum([len(s) for s in sequences])].astype(np.int32)
    flat = np.concatenate(sequences) if len(sequences) else np.zeros(0, np.int64)
    return pa.ListArray.from_arrays(pa.array(offsets), item_ids.take(pa.array(flat.astype(np.int64))))


def write_sequences(path: str | Path, user_ids: Sequence[str], history_val: Sequence[np.ndarray],
                    history_test: Sequence[np.ndarray], target_val: np.ndarray, target_test: np.ndarray,
                    item_ids: Sequence[str]) -> None:
    items = pa.array(np.asarray(item_ids, dtype=str))
    pq.write_table(pa.table({"user_id": pa.array(np.asarray(user_ids, dtype=str)),
                             "history_val": _list_column(history_val, items),
                             "history_test": _list_column(history_test, items),
                             "target_val": items.take(pa.array(np.asarray(target_val, np.int64))),
                             "target_test": items.take(pa.array(np.asarray(target_test, np.int64)))}), str(path))
