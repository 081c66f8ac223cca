"""Canonical tables every adapter writes and every later stage reads.

One pyarrow schema per table, defined here and nowhere else. Field-by-field documentation is in
``docs/data.md``; the ``metadata`` of each field carries a one-line description too, so the parquet
files describe themselves.

Attribute fields are stored as ``list<struct<field, values>>`` rather than one column per field:
catalogs differ in which attributes they have (K-Fashion's 소재/프린트, Myntra's articleAttributes,
H&M's colour groups), and later stages decide per catalog which fields are standard (STD, finite
vocabulary) and which are reinforced (RE, hashed free text). Adapters put each field in the column
that matches its default kind.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pyarrow as pa


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


ATTRIBUTE_LIST = pa.list_(pa.struct([("field", pa.string()), ("values", pa.list_(pa.string()))]))
BBOX = pa.struct([("x", pa.float64()), ("y", pa.float64()), ("width", pa.float64()),
                  ("height", pa.float64())])

ITEM_SCHEMA = pa.schema([
    _f("item_id", pa.string(), "Unique item id; K-Fashion '<image id>-<slot>', catalogs' own ids.", False),
    _f("source", pa.string(), "Adapter that produced the row: kfashion, fashion_product_images, hm, ...", False),
    _f("category_path", pa.list_(pa.string()), "Category hierarchy, coarse to fine "
       "(K-Fashion slot > category; Myntra master > sub > articleType; H&M group > type)."),
    _f("category", pa.string(), "Finest category level (last element of category_path)."),
    _f("std_attributes", ATTRIBUTE_LIST, "Standard attributes: finite-vocabulary fields, "
       "each {field, values}; single-valued fields hold one value."),
    _f("re_attributes", ATTRIBUTE_LIST, "Reinforced attributes: open-vocabulary/free-text "
       "fields (materials, details, attribute phrases), hashed downstream."),
    _f("styles", pa.list_(pa.string()), "Style labels (K-Fashion 스타일; empty elsewhere)."),
    _f("sub_styles", pa.list_(pa.string()), "Secondary style labels (K-Fashion 서브스타일)."),
    _f("title", pa.string(), "Short display title (productDisplayName, prod_name)."),
    _f("description", pa.string(), "Long description text."),
    _f("image_path", pa.string(), "Absolute path of the full source image, if any."),
    _f("crop_path", pa.string(), "Absolute path of the garment crop written by preprocessing."),
    _f("bbox", BBOX, "Garment box in source-image pixels (from the polygon, else the rectangle)."),
    _f("image_width", pa.int32(), "Source image width in pixels."),
    _f("image_height", pa.int32(), "Source image height in pixels."),
    _f("price", pa.float64(), "Price in the catalog's unit, if known."),
    _f("source_file", pa.string(), "File the row was read from, for tracing back."),
])

INTERACTION_SCHEMA = pa.schema([
    _f("user_id", pa.string(), "User/customer id.", False),
    _f("item_id", pa.string(), "Item id (same id space as the item table).", False),
    _f("timestamp", pa.timestamp("ms"), "Event time; null when the log is ordered by position."),
    _f("position", pa.int64(), "Rank of the event within its user's log (0, 1, ...), by "
       "the order column with file order breaking ties; always filled by the adapters."),
    _f("price", pa.float64(), "Price paid, if known."),
    _f("channel", pa.string(), "Sales channel / surface, if known."),
])

FEATURE_LIST_NUMERIC = pa.list_(pa.struct([("field", pa.string()), ("value", pa.float64())]))
FEATURE_LIST_CATEGORICAL = pa.list_(pa.struct([("field", pa.string()), ("value", pa.string())]))

USER_SCHEMA = pa.schema([
    _f("user_id", pa.string(), "User/customer id.", False),
    _f("numeric", FEATURE_LIST_NUMERIC, "Numeric profile fields {field, value} (age, height, ...); "
       "raw values, z-scored by the model with stored statistics."),
    _f("categorical", FEATURE_LIST_CATEGORICAL, "Categorical profile fields {field, value}."),
])

QUARANTINE_SCHEMA = pa.schema([
    _f("source_file", pa.string(), "File the rejected record came from.", False),
    _f("record", pa.string(), "Which record in the file: a row number, a garment slot, or '*' "
       "for the whole file.", False),
    _f("level", pa.string(), "'file' (the whole record file was rejected) or 'garment'/'row'.", False),
    _f("reason", pa.string(), "Machine-readable reason code (corrupt_json, missing_image, ...).", False),
    _f("detail", pa.string(), "Human-readable explanation naming the field and what was expected."),
])


def attributes(mapping: Mapping[str, object]) -> list[dict]:
    """``{"color": "white", "material": ["lace", "woven"]}`` -> the ``ATTRIBUTE_LIST`` value.

    Empty values (None, "", []) are dropped so "absent" has one representation.
    """
    out = []
    for field, value in mapping.items():
        if value is None:
            continue
        values = [value] if isinstance(value, str) else [str(v) for v in value]
        values = [v for v in values if v != ""]
        if values:
            out.append({"field": field, "values": values})
    return out


def attributes_to_dict(attribute_list: Iterable[Mapping] | None) -> dict[str, list[str]]:
    """Inverse of :func:`attributes`: the stored list back to ``{field: [values]}``."""
    return {a["field"]: list(a["values"]) for a in (attribute_list or [])}


def table_from_rows(rows: Sequence[Mapping], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema`` from dict rows; missing keys become null.

    Raises ValueError naming the offending field when a value has the wrong type, so adapter bugs
    surface at the adapter and not three stages later.
    """
    columns = {}
    for field in schema:
        values = [row.get(field.name) for row in rows]
        try:
            columns[field.name] = pa.array(values, type=field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise ValueError(f"field {field.name!r}: cannot store values as {field.type}: {exc}") from exc
        if not field.nullable and columns[field.name].null_count:
            raise ValueError(f"field {field.name!r} is required but {columns[field.name].null_count} "
                             "rows have no value")
    return pa.table(columns, schema=schema)


def quarantine_row(source_file: str, record: str, level: str, reason: str, detail: str) -> dict:
    return {"source_file": str(source_file), "record": str(record), "level": level,
            "reason": reason, "detail": detail}


def schema_markdown(schema: pa.Schema) -> str:
    """The field-by-field table used in docs/data.md (a test keeps the doc in sync)."""
    lines = ["| field | type | required | meaning |", "|---|---|---|---|"]
    for field in schema:
        doc = field.metadata[b"doc"].decode() if field.metadata else ""
        doc = doc.replace("|", "/")
        lines.append(f"| `{field.name}` | `{field.type}` | {'yes' if not field.nullable else 'no'} | {doc} |")
    return "\n".join(lines)


SCHEMAS = {"items": ITEM_SCHEMA, "interactions": INTERACTION_SCHEMA, "users": USER_SCHEMA,
           "quarantine": QUARANTINE_SCHEMA}
