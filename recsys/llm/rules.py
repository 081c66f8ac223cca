"""The offline default backend: a deterministic stand-in that needs no model.

- With a JSON schema (enrichment): every ``enum`` field gets the vocabulary value found in the
  item text (whole-phrase, case- and punctuation-insensitive; the longest match wins, so "Navy
  Blue" beats "Blue"); nothing found gives ``null``, never a guess. Free-text string fields get
  phrases of the text (clauses of 2-12 words), filtered by the field's name unless it is a generic
  detail field. The answer is validated against the schema like any model's.
- Without a schema (messages): a template writer fills a fixed template per tone with the facts
  given in the prompt.

It is a stand-in: every answer says so (``_backend`` in dicts, a prefix in texts), and numbers
measured with it say nothing about an LLM's quality.
"""
from __future__ import annotations

import html
import re
from functools import lru_cache
from typing import Any, Mapping, Sequence

from recsys.llm.errors import LLMSchemaViolation
from recsys.llm.protocol import BACKEND_KEY, validate_json

STAND_IN = "rules (stand-in, no LLM)"
STAND_IN_LABEL = f"backend: {STAND_IN}"
GENERIC_DETAIL_FIELDS = {"detail", "details", "description", "re", "reinforced", "reinforced_feature_value",
                         "features", "phrases", "notes"}
_BLOCK = "<{tag}>(.*?)</{tag}>"
_TAG = re.compile(r"<[^>]+>")
_CLAUSE_SPLIT = re.compile(r"[.;,:\n|()\[\]{}!?]+|\s+-\s+")
_TONE_OPENERS = {"friendly": "Hi there! Picked just for you:", "professional": "We are pleased to recommend:",
                 "trendy": "New season, new look:"}


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: the form vocabulary matching compares."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", html.unescape(text).lower()).split())


def block(text: str, tag: str) -> str | None:
    match = re.search(_BLOCK.format(tag=tag), text, re.DOTALL)
    return match.group(1).strip() if match else None


@lru_cache(maxsize=256)
def _normalised(vocabulary: tuple) -> tuple[tuple[str, str], ...]:
    """``(value, " normalised ")`` per matchable value; cached, as a job asks with one vocabulary per
    field for every item (normalising a 400-brand vocabulary per item was most of the time)."""
    pairs = ((v, normalise(v)) for v in vocabulary if isinstance(v, str))
    return tuple((v, f" {key} ") for v, key in pairs if key)


def find_vocabulary(text: str, vocabulary: Sequence[str]) -> list[str]:
    """Vocabulary values present in ``text`` as whole phrases, longest (most specific) first."""
    padded = f" {normalise(text)} "
    found = [(v, key) for v, key in _normalised(tuple(vocabulary)) if key in padded]
    return [v for v, key in sorted(found, key=lambda p: (-len(p[1]), padded.index(p[1]), p[0]))]


def phrases(text: str, min_words: int = 2, max_words: int = 12) -> list[str]:
    """Distinct clauses of the text (HTML stripped), in order: the RE detail candidates."""
    seen, out = set(), []
    for clause in _CLAUSE_SPLIT.split(_TAG.sub("\n", html.unescape(text))):   # a tag ends a clause
        clause = " ".join(clause.split())
        key = normalise(clause)
        if min_words <= len(key.split()) <= max_words and key not in seen:
            seen.add(key)
            out.append(clause)
    return out


def _types(prop: Mapping) -> set[str]:
    kind = prop.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def _field_value(name: str, prop: Mapping, text: str, clauses: list[str]) -> Any:
    types = _types(prop)
    if "array" in types:
        items = prop.get("items", {})
        if "enum" in items:
            values = find_vocabulary(text, items["enum"])
        else:
            values = _relevant(name, clauses)
        return values[: prop.get("maxItems", len(values))]
    if "enum" in prop:
        found = find_vocabulary(text, prop["enum"])
        return found[0] if found else None
    if "string" in types:
        joined = "; ".join(_relevant(name, clauses))
        limit = prop.get("maxLength")
        if limit is not None and len(joined) > limit:
            joined = joined[:limit].rsplit(";", 1)[0] if ";" in joined[:limit] else joined[:limit]
        return joined or (None if "null" in types else "")
    return None


def _relevant(name: str, clauses: list[str]) -> list[str]:
    if name.lower() in GENERIC_DETAIL_FIELDS:
        return clauses
    words = [w for w in normalise(name.replace("_", " ")).split() if len(w) > 2]
    # Prefix match: field "sleeve" takes "long sleeves" and "sleeveless".
    return [c for c in clauses if any(cw.startswith(w) for w in words for cw in normalise(c).split())]


def extract(text: str, json_schema: Mapping) -> dict:
    """The stand-in answer for ``json_schema`` from ``text``, validated (no ``_backend`` yet)."""
    clauses = phrases(text)
    props = json_schema.get("properties", {})
    required = set(json_schema.get("required", []))
    answer = {}
    for name, prop in props.items():
        value = _field_value(name, prop, text, clauses)
        if value is None and "null" not in _types(prop) and None not in prop.get("enum", []):
            if name in required:
                raise LLMSchemaViolation(f"field {name!r}: the rules stand-in found no value in the text and "
                                         "the schema does not allow null", field=name)
            continue
        answer[name] = value
    validate_json(answer, json_schema)
    return answer


def write_message(prompt: str) -> str:
    """Template message: ``tone: <friendly|professional|trendy>`` and the lines of a ``<facts>`` block
    (else of ``<item>``, else the whole prompt) become one opener plus the facts."""
    tone_match = re.search(r"tone:\s*(\w+)", prompt, re.IGNORECASE)
    tone = tone_match.group(1).lower() if tone_match else "friendly"
    facts_text = block(prompt, "facts") or block(prompt, "item") or prompt
    facts = [line.strip(" -*") for line in facts_text.splitlines() if line.strip(" -*")]
    opener = _TONE_OPENERS.get(tone, _TONE_OPENERS["friendly"])
    return f"[{STAND_IN_LABEL}] {opener} " + " / ".join(facts)


class RulesClient:
    """``LLMClient`` with no model behind it (see the module docstring)."""
    backend_label = STAND_IN

    def __init__(self, config=None):
        self.config = config

    def complete(self, messages: Sequence[Mapping[str, str]], json_schema: Mapping | None = None) -> str | dict:
        user = [str(m["content"]) for m in messages if m.get("role") == "user"]
        prompt = user[-1] if user else ""
        if json_schema is None:
            return write_message(prompt)
        # Only the item block is evidence: the instructions around it may list the whole vocabulary.
        answer = extract(block(prompt, "item") or prompt, json_schema)
        answer[BACKEND_KEY] = STAND_IN
        return answer
