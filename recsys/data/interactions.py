"""Interaction logs and user profiles -> canonical interaction and user tables.

- :func:`load_interaction_log`: any parquet/CSV log with a user column, an item column and an
  order column (a timestamp, or an integer position).
- :func:`load_hm_transactions` / :func:`load_hm_customers`: the H&M competition files.

Rows are never dropped silently: a row without user, item or a usable order value goes to
quarantine with the column named. Duplicates are kept (H&M repeats a row per unit bought);
deduplication belongs to the evaluation protocol that needs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa

from recsys.data.result import AdapterError, AdapterResult, is_missing, quarantine_table, read_table_file, split_valid
from recsys.data.schema import INTERACTION_SCHEMA, USER_SCHEMA

ORDER_KINDS = ("auto", "timestamp", "position")


def _order_values(series: pd.Series, kind: str, path: Path, column: str) -> tuple[str, pd.Series]:
    """Decide whether ``column`` is a timestamp or a position and convert it (NaT/NaN = invalid)."""
    if kind not in ORDER_KINDS:
        raise AdapterError(f"{path}: order kind {kind!r} for column {column!r}; expected one of {ORDER_KINDS}")
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if kind == "position" or (kind == "auto" and numeric):
        return "position", pd.to_numeric(series, errors="coerce")
    if pd.api.types.is_datetime64_any_dtype(series):
        return "timestamp", series.dt.tz_localize(None) if series.dt.tz is not None else series
    return "timestamp", pd.to_datetime(series, errors="coerce", format="mixed")


def interactions_table(frame: pd.DataFrame) -> pa.Table:
    """A frame with the canonical column names (missing optional ones allowed) -> INTERACTION_SCHEMA."""
    columns = {}
    for field in INTERACTION_SCHEMA:
        if field.name in frame:
            values = frame[field.name]
            if field.name == "timestamp":
                values = values.astype("datetime64[ms]")
            columns[field.name] = pa.Array.from_pandas(values, type=field.type)
        else:
            columns[field.name] = pa.nulls(len(frame), type=field.type)
    return pa.table(columns, schema=INTERACTION_SCHEMA)


def load_interaction_log(path: str | Path, user_col: str = "user_id", item_col: str = "item_id",
                         order_col: str = "timestamp", order_kind: str = "auto",
                         price_col: str | None = None, channel_col: str | None = None) -> AdapterResult:
    """Generic log -> interactions. ``order_kind='auto'``: numbers are positions, dates/text are
    timestamps. ``position`` is always filled: the row's rank within its user by the order column
    (ties keep file order), so sequence models can rely on it."""
    path = Path(path)
    optional = [c for c in (price_col, channel_col) if c]
    frame = read_table_file(path, [user_col, item_col, order_col, *optional],
                            f"an interaction log with user column {user_col!r}, item column "
                            f"{item_col!r} and order column {order_col!r}")
    kind, order = _order_values(frame[order_col], order_kind, path, order_col)
    frame = frame.assign(_order=order)
    expected_order = "a timestamp" if kind == "timestamp" else "a number (position)"
    checks = {
        "missing_user": (is_missing(frame[user_col]), f"column {user_col!r}: expected a user id"),
        "missing_item": (is_missing(frame[item_col]), f"column {item_col!r}: expected an item id"),
        "invalid_order": (frame["_order"].isna(), f"column {order_col!r}: expected {expected_order}, "
                          f"found an empty or unparseable value"),
    }
    if price_col:
        price = pd.to_numeric(frame[price_col], errors="coerce")
        checks["invalid_price"] = (price.isna() & ~frame[price_col].isna(),
                                   f"column {price_col!r}: expected a number or empty")
        frame = frame.assign(_price=price)
    valid, rejected = split_valid(frame, path, checks)

    out = pd.DataFrame({"user_id": _id_text(valid[user_col]), "item_id": _id_text(valid[item_col])})
    if kind == "timestamp":
        out["timestamp"] = valid["_order"].values
    out["_key"] = valid["_order"].values
    out["_row"] = range(len(out))
    out["position"] = (out.sort_values(["_key", "_row"]).groupby("user_id", sort=False).cumcount()
                       .reindex(out.index))
    if price_col:
        out["price"] = valid["_price"].astype(float).values
    if channel_col:
        out["channel"] = valid[channel_col].astype("string").values
    out = out.drop(columns=["_key", "_row"])
    return AdapterResult("interactions", interactions_table(out), quarantine_table(rejected), len(frame))


def _id_text(series: pd.Series) -> pd.Series:
    """Ids are strings everywhere; floats read from CSV ('123.0') become '123'."""
    if pd.api.types.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        series = series.astype("Int64")
    return series.astype("string").str.strip().reset_index(drop=True)


def load_hm_transactions(path: str | Path) -> AdapterResult:
    result = load_interaction_log(path, user_col="customer_id", item_col="article_id", order_col="t_dat",
                                  order_kind="timestamp", price_col="price", channel_col="sales_channel_id")
    result.source = "hm_transactions"
    return result


def users_table(user_ids: Sequence[str], numeric: dict[str, pd.Series],
                categorical: dict[str, pd.Series]) -> pa.Table:
    """Build USER_SCHEMA rows; NaN numeric and empty categorical values are left out (absent)."""
    rows_numeric = [[] for _ in user_ids]
    rows_categorical = [[] for _ in user_ids]
    for field, series in numeric.items():
        for i, value in enumerate(series):
            if pd.notna(value):
                rows_numeric[i].append({"field": field, "value": float(value)})
    for field, series in categorical.items():
        for i, value in enumerate(series):
            if pd.notna(value) and str(value).strip():
                rows_categorical[i].append({"field": field, "value": str(value).strip()})
    return pa.table({"user_id": pa.array(list(user_ids), pa.string()),
                     "numeric": pa.array(rows_numeric, USER_SCHEMA.field("numeric").type),
                     "categorical": pa.array(rows_categorical, USER_SCHEMA.field("categorical").type)},
                    schema=USER_SCHEMA)


HM_NUMERIC = ("age", "FN", "Active")
HM_CATEGORICAL = ("club_member_status", "fashion_news_frequency", "postal_code")


def load_hm_customers(path: str | Path) -> AdapterResult:
    """H&M customers -> users. FN/Active are 1-or-empty flags in the source: empty means 0."""
    path = Path(path)
    frame = read_table_file(path, ("customer_id",) + HM_NUMERIC + HM_CATEGORICAL, "an H&M customers table")
    numeric_values = {c: pd.to_numeric(frame[c], errors="coerce") for c in HM_NUMERIC}
    checks = {
        "missing_user": (is_missing(frame["customer_id"]), "column 'customer_id': expected an id"),
        "duplicate_user": (frame["customer_id"].duplicated(keep="first"),
                           "column 'customer_id': duplicate of an earlier row"),
        "invalid_age": (numeric_values["age"].isna() & ~frame["age"].isna(),
                        "column 'age': expected a number or empty"),
    }
    valid, rejected = split_valid(frame, path, checks)
    numeric = {c: numeric_values[c][valid.index].reset_index(drop=True) for c in HM_NUMERIC}
    for flag in ("FN", "Active"):
        numeric[flag] = numeric[flag].fillna(0.0)
    categorical = {c: valid[c].reset_index(drop=True) for c in HM_CATEGORICAL}
    table = users_table(_id_text(valid["customer_id"]).tolist(), numeric, categorical)
    return AdapterResult("hm_customers", table, quarantine_table(rejected), len(frame))
