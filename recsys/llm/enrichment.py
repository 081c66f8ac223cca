"""Per-item LLM enrichment as pure functions: prompt, schema from the STD vocabulary, validation.

The answer schema has one nullable ``enum`` field per STD field (its values: the catalog's
vocabulary) and one nullable free-text field per RE field, every field required and nothing else
allowed (what OpenAI's strict structured outputs and vLLM's guided decoding accept).
``validate_answer`` maps an STD value written differently ("navy-blue", "TSHIRTS") onto the known
one and rejects a value that maps to none, so a model can never add a value to the vocabulary.
The Ray Data job (``ray_jobs.enrich``) calls these per row; they need neither Ray nor a model.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

from recsys.llm.errors import LLMError, LLMSchemaViolation, reason
from recsys.llm.protocol import BACKEND_KEY, parse_json_object, validate_json
from recsys.llm.rules import normalise

SYSTEM_PROMPT = (
    "You extract product attributes from retail catalog text. Answer with one JSON object and nothing "
    "else. For each standard (STD) field use exactly one of its allowed values, or null when the text "
    "does not say; never invent a value. For each detail (RE) field write a short phrase taken from the "
    "text (materials, fit, construction, styling details), or null.")


def vocabulary_from(std_vocab) -> dict[str, list[str]]:
    """``{field: [values]}`` from a mapping or a fitted ``recsys.vocab.StdVocabulary``."""
    tokens = getattr(std_vocab, "tokens", std_vocab)
    return {f: sorted(str(v) for v in values) for f, values in tokens.items()}


def build_schema(std_vocab: Mapping[str, Sequence[str]], re_fields: Sequence[str],
                 re_max_length: int = 300) -> dict:
    std = vocabulary_from(std_vocab)
    overlap = sorted(set(std) & set(re_fields))
    if overlap:
        raise ValueError(f"fields {overlap} are listed both as STD and as RE fields")
    empty = sorted(f for f, values in std.items() if not values)
    if empty:
        raise ValueError(f"STD fields {empty} have an empty vocabulary; fit it on the catalog first")
    properties = {f: {"type": ["string", "null"], "enum": [*values, None]} for f, values in std.items()}
    properties.update({f: {"type": ["string", "null"], "maxLength": re_max_length} for f in re_fields})
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def std_fields(schema: Mapping) -> dict[str, list[str]]:
    """The STD fields of a schema built by ``build_schema`` and their vocabularies."""
    return {f: [v for v in p["enum"] if v is not None] for f, p in schema["properties"].items() if "enum" in p}


def item_text(item: Mapping, text_fields: Sequence[str]) -> str:
    """``field: value`` lines of the item's non-empty raw text fields (block markers defused)."""
    lines = []
    for field in text_fields:
        value = item.get(field)
        if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
            continue
        clean = str(value).replace("<item>", "(item)").replace("</item>", "(/item)")
        lines.append(f"{field}: {clean.strip()}")
    return "\n".join(lines)


def instructions(schema: Mapping) -> str:
    """The part of the user message every item shares: the allowed STD values and the RE fields
    (listed for servers without schema-constrained decoding). Build it once per job, not per item."""
    allowed = "\n".join(f"- {f}: {json.dumps(values, ensure_ascii=False)}" for f, values in std_fields(schema).items())
    re_names = [f for f, p in schema["properties"].items() if "enum" not in p]
    return (f"STD fields and their allowed values:\n{allowed}\nRE (free-text detail) fields: {', '.join(re_names)}\n"
            f"Answer keys: {', '.join(schema['properties'])}.")


def messages_for_text(text: str, schema: Mapping, header: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one item's text (``item_text``); ``header`` = ``instructions(schema)``."""
    user = f"{header if header is not None else instructions(schema)}\n<item>\n{text}\n</item>"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def build_messages(item: Mapping, text_fields: Sequence[str], schema: Mapping) -> list[dict[str, str]]:
    """Chat messages for one item. The allowed values are listed in the prompt too, for servers
    without schema-constrained decoding; the item's text sits alone in an ``<item>`` block."""
    return messages_for_text(item_text(item, text_fields), schema)


def normalise_std(value: str, vocabulary: Sequence[str]) -> str | None:
    """The vocabulary value ``value`` denotes, ignoring case, punctuation and spacing; None if none."""
    if value in vocabulary:
        return value
    key = normalise(value).replace(" ", "")
    matches = [v for v in vocabulary if normalise(v).replace(" ", "") == key]
    return matches[0] if len(matches) == 1 else None


def validate_answer(answer: str | Mapping, schema: Mapping,
                    unknown_std: str = "reject") -> tuple[dict | None, str | None]:
    """``(record, None)`` for a valid answer, ``(None, reason)`` for one to quarantine.

    ``answer`` is the model's text or an already parsed object; STD values are mapped onto the
    vocabulary first (``normalise_std``). A value outside it rejects the answer
    (``unknown_std="reject"``) or becomes null (``"null"``: keep the item's other fields).
    The record carries ``backend`` (who answered) when the answer said so.
    """
    if unknown_std not in ("reject", "null"):
        raise ValueError(f"unknown_std must be 'reject' or 'null', got {unknown_std!r}")
    try:
        record = dict(parse_json_object(answer) if isinstance(answer, str) else answer)
        backend = record.pop(BACKEND_KEY, None)
        for field, vocabulary in std_fields(schema).items():
            value = record.get(field)
            if not isinstance(value, str):
                continue
            known = normalise_std(value, vocabulary)
            if known is None and unknown_std == "reject":
                raise LLMSchemaViolation(f"field {field!r}: {value[:80]!r} is not in the STD vocabulary "
                                         f"({len(vocabulary)} values) and maps to none of them", field=field)
            record[field] = known
        validate_json(record, schema)
    except LLMError as exc:
        return None, reason(exc)
    if backend is not None:
        record["backend"] = backend
    return record, None
