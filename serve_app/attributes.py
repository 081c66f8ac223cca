"""Attribute-JSON queries: validation against the served encoder's fields and vocabulary.

A query is ``{field: value | [values]}`` over the fields the JSON encoder was trained on. Unknown
fields and wrong types are errors naming the field and what is expected; values the vocabulary
has never seen are allowed (they encode as UNKNOWN, as in training) and reported back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from recsys.vocab import AttributeVocabulary
from serve_app.errors import InputError

if TYPE_CHECKING:  # torch stays out of the processes that only validate
    from recsys.models.json_encoder import JsonEncoderConfig

MAX_VALUE_CHARS = 200


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def validate_attributes(attributes: Any, encoder: "JsonEncoderConfig", vocab: AttributeVocabulary
                        ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """-> (record ``{field: [values]}``, unknown values per STD field). Raises :class:`InputError`."""
    if not isinstance(attributes, Mapping):
        raise InputError(f"attributes: expected an object {{field: value}}, got {_type_name(attributes)}",
                         field="attributes")
    fields = list(encoder.fields)
    unknown_fields = sorted(set(attributes) - set(fields))
    if unknown_fields:
        raise InputError(f"attributes: unknown field(s) {unknown_fields}; this model reads {fields} "
                         f"(multi-valued: {list(encoder.multi_fields)})",
                         field=f"attributes.{unknown_fields[0]}", code="unknown_field")
    record, unknown = {}, {}
    for name, value in attributes.items():
        where = f"attributes.{name}"
        multi = name in encoder.multi_fields
        expected = "a string or an array of strings" if multi else "a string"
        if isinstance(value, str):
            values = [value]
        elif isinstance(value, list):
            bad = [v for v in value if not isinstance(v, str)]
            if bad:
                raise InputError(f"{where}: expected {expected}, got an array holding {_type_name(bad[0])} "
                                 f"{bad[0]!r}", field=where, code="wrong_type")
            values = list(value)
            if not multi and len(values) > 1:
                raise InputError(f"{where}: takes one value (a string), got {len(values)} values", field=where,
                                 code="wrong_type")
            if len(values) > encoder.max_values:
                raise InputError(f"{where}: at most {encoder.max_values} values, got {len(values)}", field=where)
        else:
            raise InputError(f"{where}: expected {expected}, got {_type_name(value)} {value!r}", field=where,
                             code="wrong_type")
        values = [v.strip() for v in values]
        if any(not v for v in values):
            raise InputError(f"{where}: empty string value", field=where)
        if any(len(v) > MAX_VALUE_CHARS for v in values):
            raise InputError(f"{where}: a value is longer than {MAX_VALUE_CHARS} characters", field=where)
        record[name] = values
        if name in vocab.std_fields:
            missing = [v for v in values if v not in vocab.std.tokens.get(name, {})]
            if missing:
                unknown[name] = missing
    return record, unknown


def describe(encoder: "JsonEncoderConfig", vocab: AttributeVocabulary) -> dict:
    """Fields a query may use and the known values of the finite ones (for forms and docs)."""
    return {"fields": list(encoder.fields), "multi_valued": list(encoder.multi_fields),
            "max_values": encoder.max_values,
            "finite_fields": {f: sorted(vocab.std.tokens.get(f, {})) for f in vocab.std_fields},
            "open_fields": list(vocab.re_fields),
            "note": "finite fields map values they have never seen to UNKNOWN (reported as unknown_values); "
                    "open fields are hashed, so any value is read"}
