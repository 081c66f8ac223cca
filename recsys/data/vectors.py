"""Vector columns in parquet: one ``item_id`` column and fixed-size float32 list columns.

The one way item vectors (image embeddings, item-tower vectors) are written to and read from
parquet, shared by the jobs that write them and the stages and Serve replicas that read them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """(N, d) -> a fixed-size list<float32> column (d known from the schema, no per-row lengths)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1])


def column_matrix(table: pa.Table, column: str = "vector") -> np.ndarray | None:
    """A list column as an (N, d) float32 matrix (None for an empty table)."""
    if table.num_rows == 0:
        return None
    return np.stack(table[column].to_numpy(zero_copy_only=False)).astype(np.float32)


def read_vectors(path: str | Path, column: str = "vector", where: dict | None = None
                 ) -> tuple[list[str], np.ndarray | None]:
    """(item ids, (N, d) vectors) of a parquet file or folder; rows with a null vector are skipped,
    and ``where`` ({column: value}) keeps rows equal to value where that column exists."""
    table = pq.read_table(path)
    if column in table.column_names:
        table = table.filter(table[column].is_valid())
    for name, value in (where or {}).items():
        if name in table.column_names:
            table = table.filter(pc.equal(table[name], value))
    return table["item_id"].to_pylist(), column_matrix(table, column)
