"""What every adapter returns, and the bookkeeping that proves nothing was lost."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa

from recsys.data.schema import QUARANTINE_SCHEMA, quarantine_row, table_from_rows


class AdapterError(ValueError):
    """Input that cannot be read at all (missing file, missing column); names file and field."""


@dataclass
class AdapterResult:
    """Rows in a canonical schema plus the rejected records, with the reason for each."""
    source: str
    table: pa.Table
    quarantine: pa.Table
    records_read: int

    def reconciliation(self) -> dict:
        written, quarantined = self.table.num_rows, self.quarantine.num_rows
        return {"source": self.source, "read": self.records_read, "written": written,
                "quarantined": quarantined, "reconciles": self.records_read == written + quarantined,
                "quarantine_reasons": reason_counts(self.quarantine)}


def reason_counts(quarantine: pa.Table) -> dict[str, int]:
    if quarantine.num_rows == 0:
        return {}
    return {k: int(v) for k, v in pd.Series(quarantine.column("reason").to_pylist()).value_counts().items()}


def read_table_file(path: str | Path, required: Sequence[str], what: str, **csv_kwargs) -> pd.DataFrame:
    """Read a CSV or parquet file into pandas and check that ``required`` columns exist."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"{path}: no such file (expected {what})")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", **csv_kwargs)
        else:
            raise AdapterError(f"{path}: unsupported file type {suffix!r}; expected .parquet, .csv or .tsv ({what})")
    except AdapterError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise AdapterError(f"{path}: cannot read as {suffix[1:]} ({what}): {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise AdapterError(f"{path}: missing column(s) {missing}; {what} needs {list(required)}, "
                           f"found {list(frame.columns)}")
    return frame


def split_valid(frame: pd.DataFrame, path: str | Path,
                checks: dict[str, tuple[pd.Series, str]]) -> tuple[pd.DataFrame, list[dict]]:
    """Drop rows failing any check, quarantining each row once.

    ``checks`` maps a reason code to (bool Series marking bad rows, what was expected). The first
    failing check gives the row's reason; the detail names the file, the row and the expectation.
    """
    bad_any = pd.Series(False, index=frame.index)
    rejected = []
    for reason, (bad, expected) in checks.items():
        bad = bad.fillna(True).astype(bool)
        new = bad & ~bad_any
        for row in frame.index[new]:
            rejected.append(quarantine_row(str(path), f"row {row}", "row", reason,
                                           f"{path}: row {row}: {expected}"))
        bad_any |= bad
    return frame[~bad_any], rejected


def quarantine_table(rows: list[dict]) -> pa.Table:
    return table_from_rows(rows, QUARANTINE_SCHEMA)


def is_missing(series: pd.Series) -> pd.Series:
    """Null or empty/whitespace text."""
    return series.isna() | series.astype("string").str.strip().fillna("").eq("")
