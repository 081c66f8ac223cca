"""A ``ray_jobs.train_users`` run (the demo's synthetic stand-in users) read as a profile + purchase log:
the same three canonical tables the H&M adapters give (users, items, interactions), so the persona
protocol (``recsys.eval.persona.prepare_persona_data``) runs on the demo's users unchanged.

- customers: ``users.parquet`` (user_id, the profile columns asked for: ``age`` numeric, ``style``
  categorical; history and context are not profile fields) -> USER_SCHEMA;
- transactions: ``interactions.parquet`` (user_id, item_id, timestamp; no price) -> INTERACTION_SCHEMA;
- articles: the items parquet (a file or a directory of parts in ITEM_SCHEMA; default: the items
  the run's embed run used, ``inputs.items`` of the run's manifest.json) -> item rows.

Every record read is written or quarantined with a reason (``AdapterResult.reconciliation``):
users without an id, duplicate users, non-numeric profile values; interactions without user, item
or timestamp, or whose item is not in the items table; items without an id or repeating one.
A missing file or column raises :class:`AdapterError` naming the file and the field.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.demo_users import PROFILE_CATEGORICAL, PROFILE_NUMERIC, STAND_IN
from recsys.data.interactions import load_interaction_log, users_table
from recsys.data.result import AdapterError, AdapterResult, is_missing, quarantine_table, read_table_file, split_valid
from recsys.data.schema import quarantine_row
from recsys.retrieval.user_model import USERS_FILE

__all__ = ["INTERACTIONS_FILE", "ITEM_COLUMNS", "STAND_IN", "load_users_run", "users_run_items"]

INTERACTIONS_FILE = "interactions.parquet"
ITEM_COLUMNS = ("item_id", "category_path", "category", "std_attributes", "re_attributes", "styles")


def users_run_items(run_dir: str | Path, items: str | Path | None = None) -> Path:
    """``items`` when given, else the items the run's embed run used (its manifest's ``inputs.items``)."""
    if items:
        return Path(items)
    manifest = Path(run_dir) / "manifest.json"
    if not manifest.is_file():
        raise AdapterError(f"{manifest}: no such file (a train_users run's manifest, whose inputs.items names "
                           f"the demo items); give the items parquet explicitly (data.items)")
    found = (json.loads(manifest.read_text()).get("inputs") or {}).get("items")
    if not found:
        raise AdapterError(f"{manifest}: no field inputs.items (the items the run's embed run used); "
                           f"give the items parquet explicitly (data.items)")
    return Path(found)


def load_users_run(run_dir: str | Path, items: str | Path | None = None,
                   numeric: Sequence[str] = PROFILE_NUMERIC,
                   categorical: Sequence[str] = PROFILE_CATEGORICAL) -> dict[str, AdapterResult]:
    """A train_users run -> {"customers", "articles", "transactions"}: the canonical tables
    ``prepare_persona_data`` takes, each with its reconciliation. ``numeric``/``categorical``: the
    profile columns of users.parquet to read (each must exist)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AdapterError(f"{run_dir}: no such directory (expected a ray_jobs.train_users run)")
    articles = _items(users_run_items(run_dir, items))
    known = set(articles.table.column("item_id").to_pylist())
    return {"customers": _users(run_dir / USERS_FILE, list(numeric), list(categorical)),
            "articles": articles, "transactions": _interactions(run_dir / INTERACTIONS_FILE, known)}


def _users(path: Path, numeric: list[str], categorical: list[str]) -> AdapterResult:
    frame = read_table_file(path, ["user_id", *numeric, *categorical],
                            f"a train_users run's user table with profile columns {numeric + categorical}")
    values = {c: pd.to_numeric(frame[c], errors="coerce") for c in numeric}
    checks = {"missing_user": (is_missing(frame["user_id"]), "column 'user_id': expected an id"),
              "duplicate_user": (frame["user_id"].duplicated(keep="first"),
                                 "column 'user_id': duplicate of an earlier row")}
    for c in numeric:
        checks[f"invalid_{c}"] = (values[c].isna() & ~frame[c].isna(), f"column {c!r}: expected a number or empty")
    valid, rejected = split_valid(frame, path, checks)
    table = users_table(valid["user_id"].astype("string").str.strip().tolist(),
                        {c: values[c][valid.index].reset_index(drop=True) for c in numeric},
                        {c: valid[c].reset_index(drop=True) for c in categorical})
    return AdapterResult("users_run_users", table, quarantine_table(rejected), len(frame))


def _interactions(path: Path, known_items: set[str]) -> AdapterResult:
    """The log through the generic adapter, then rows whose item is not in the items table quarantined."""
    result = load_interaction_log(path, order_kind="timestamp")
    table = result.table
    unknown = ~pc.is_in(table.column("item_id"), pa.array(sorted(known_items), pa.string())).to_numpy(zero_copy_only=False)
    rejected = []
    if unknown.any():
        # written rows are the read rows minus the quarantined ones, in file order
        dropped = {int(r.split()[-1]) for r in result.quarantine.column("record").to_pylist()}
        source_rows = [r for r in range(result.records_read) if r not in dropped]
        items = table.column("item_id").to_pylist()
        for row in unknown.nonzero()[0]:
            rejected.append(quarantine_row(str(path), f"row {source_rows[row]}", "row", "unknown_item",
                                           f"{path}: row {source_rows[row]}: column 'item_id': {items[row]!r} is "
                                           f"not in the items table"))
        table = table.filter(pa.array(~unknown))
    quarantine = pa.concat_tables([result.quarantine, quarantine_table(rejected)])
    return AdapterResult("users_run_interactions", table, quarantine, result.records_read)


def _items(path: Path) -> AdapterResult:
    import pyarrow.dataset as ds

    if not path.exists():
        raise AdapterError(f"{path}: no such file or directory (expected the demo items parquet)")
    try:
        dataset = ds.dataset(path, format="parquet")
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise AdapterError(f"{path}: cannot read as parquet (the demo items): {exc}") from exc
    missing = [c for c in ITEM_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise AdapterError(f"{path}: missing column(s) {missing}; the items need {list(ITEM_COLUMNS)} "
                           f"(ITEM_SCHEMA), found {dataset.schema.names}")
    table = dataset.to_table(columns=list(ITEM_COLUMNS))
    ids = pd.Series(table.column("item_id").to_pylist(), dtype="object")
    frame = pd.DataFrame({"item_id": ids})
    valid, rejected = split_valid(frame, path, {
        "missing_item": (is_missing(ids), "column 'item_id': expected an id"),
        "duplicate_item": (ids.duplicated(keep="first"), "column 'item_id': duplicate of an earlier row")})
    table = table.take(pa.array(valid.index.to_numpy()))
    return AdapterResult("users_run_items", table, quarantine_table(rejected), len(frame))
