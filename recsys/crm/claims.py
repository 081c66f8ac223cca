"""Claim checker: what a message states that its retrieved sources do not support.

The catalog vocabulary (every product's id and title, every attribute value, style and category
name seen in the catalog) is what a message can make a checkable claim with. Found in a message:

- ``foreign_product``: a product id or exact title of a product that is not among the chosen ones;
- ``unsupported_value``: a vocabulary value that appears in none of the chosen products' snippets
  (e.g. "화이트" when the skirt's snippets say "color: 블랙").

Matching is case-insensitive on whole phrases: a value needs a non-word character (or the start)
before it, and when it ends in a Latin letter or digit also after it ("red" is not in "bored");
Korean values may be followed by particles ("블랙이에요"). Longer values win over values inside
them ("오프화이트" is one value, not "화이트"). Free text outside the vocabulary is not checked:
the checker catches wrong catalog facts, not every possible invention.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping, Sequence

from recsys.crm.facts import Snippet, rows_of


def norm(text: str) -> str:
    return unicodedata.normalize("NFC", str(text)).lower()


def _pattern(values: Iterable[str]) -> re.Pattern | None:
    alternatives = []
    for value in sorted({norm(v).strip() for v in values if str(v).strip()}, key=lambda v: (-len(v), v)):
        tail = "(?![0-9a-z])" if value[-1].isascii() and value[-1].isalnum() else ""
        alternatives.append(re.escape(value) + tail)
    # Longest first: at one position the regex takes the first alternative that matches.
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + ")") if alternatives else None


def spans(pattern: re.Pattern | None, text: str) -> list[tuple[int, int, str]]:
    """(start, end, normalised match) of every match in ``norm(text)``, in order."""
    return [] if pattern is None else [(m.start(), m.end(), m.group(0)) for m in pattern.finditer(norm(text))]


def find(pattern: re.Pattern | None, text: str) -> list[str]:
    """Distinct matches in order of appearance (normalised form)."""
    return list(dict.fromkeys(match for _, _, match in spans(pattern, text)))


def supported_values(allowed: Mapping[str, Sequence[Snippet]], vocabulary: "Vocabulary") -> set[str]:
    """The vocabulary values (normalised) the allowed snippets state."""
    return set(find(vocabulary.value_pattern, "\n".join(s.text for ss in allowed.values() for s in ss)))


@dataclass
class Vocabulary:
    """What claims can be checked against: product names and the values of each field."""
    product_names: dict[str, set[str]]             # normalised id or title -> item ids it names
    field_values: dict[str, list[str]]             # field -> its distinct values (display form)
    titles: dict[str, str] = field(default_factory=dict)   # item id -> title (display form)

    @classmethod
    def from_rows(cls, items) -> "Vocabulary":
        names: dict[str, set[str]] = {}
        fields: dict[str, dict[str, None]] = {}
        titles: dict[str, str] = {}
        for row in rows_of(items):
            item = str(row["item_id"])
            if row.get("title") and str(row["title"]).strip():
                titles[item] = str(row["title"]).strip()
            for name in (item, row.get("title")):
                if name and str(name).strip():
                    names.setdefault(norm(name).strip(), set()).add(item)
            for kind in ("std_attributes", "re_attributes"):
                for attr in row.get(kind) or []:
                    for v in attr.get("values") or []:
                        fields.setdefault(str(attr["field"]), {})[str(v)] = None
            for v in row.get("styles") or []:
                fields.setdefault("styles", {})[str(v)] = None
            for v in row.get("category_path") or [row.get("category")]:
                if v:
                    fields.setdefault("category", {})[str(v)] = None
        return cls(names, {f: list(vs) for f, vs in fields.items()}, titles)

    @cached_property
    def fields_of_value(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for f, values in self.field_values.items():
            for v in values:
                out.setdefault(norm(v).strip(), set()).add(f)
        return out

    @cached_property
    def value_pattern(self) -> re.Pattern | None:
        return _pattern(v for values in self.field_values.values() for v in values)

    @cached_property
    def name_pattern(self) -> re.Pattern | None:
        return _pattern(self.product_names)


@dataclass(frozen=True)
class Violation:
    kind: str        # foreign_product | unsupported_value | unknown_source | too_long | wrong_tone | llm_error
    value: str       # what was found (the name, the value, the length ...)
    reason: str      # one readable sentence


def check_message(text: str, allowed: Mapping[str, Sequence[Snippet]], vocabulary: Vocabulary) -> list[Violation]:
    """Claims in ``text`` not supported by ``allowed`` (chosen product id -> its retrieved snippets)."""
    violations = []
    chosen = set(allowed)
    for name in find(vocabulary.name_pattern, text):
        named = vocabulary.product_names.get(name, set())
        if named and not named & chosen:
            violations.append(Violation("foreign_product", name, f"names product {sorted(named)[0]!r} ({name!r}), "
                                        f"which is not among the chosen products {sorted(chosen)}"))
    supported = supported_values(allowed, vocabulary)
    for value in find(vocabulary.value_pattern, text):
        if value not in supported:
            fields = ", ".join(sorted(vocabulary.fields_of_value.get(value, ()))) or "?"
            violations.append(Violation("unsupported_value", value, f"states {fields} {value!r}, which none of "
                                        "the chosen products' retrieved facts say"))
    return violations
