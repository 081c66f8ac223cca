"""Attribute vocabularies: finite lookup for standard fields, stateless hashing for reinforced ones.

- :class:`StdVocabulary` maps each STD field's values seen in training data to ids. It is saved
  with the model (``to_dict``/``from_dict``) so serving never refits it; unseen values map to the
  reserved ``UNKNOWN_ID``.
- :class:`HashedVocabulary` maps RE values with ``zlib.crc32`` into a fixed number of buckets. It
  has no state besides the bucket count, so new materials or free-text phrases need no vocabulary
  update (collisions are the accepted price).
- :class:`FieldIndex` gives every attribute key a field id (for field embeddings).
- :func:`pad_multi` turns ragged multi-valued fields into padded id arrays with masks.

Id 0 is padding everywhere so masks and ``nn.Embedding(padding_idx=0)`` agree.
"""
from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

PAD_ID = 0
UNKNOWN_ID = 1
_FIRST_FREE_ID = 2


def _as_values(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v is not None and v != ""]


@dataclass
class StdVocabulary:
    """Per-field finite vocabularies; one id space per field, 0 = pad, 1 = unknown."""
    tokens: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def build(cls, records: Iterable[Mapping[str, object]], fields: Sequence[str],
              min_count: int = 1) -> "StdVocabulary":
        """Count values of ``fields`` over training records (``{field: value | [values]}``).

        Values are ordered by frequency then text, so the same data always gives the same ids.
        """
        counts = {f: Counter() for f in fields}
        for record in records:
            for f in fields:
                counts[f].update(_as_values(record.get(f)))
        tokens = {}
        for f in fields:
            kept = sorted((v for v, c in counts[f].items() if c >= min_count),
                          key=lambda v: (-counts[f][v], v))
            tokens[f] = {v: i + _FIRST_FREE_ID for i, v in enumerate(kept)}
        return cls(tokens)

    def size(self, field_name: str) -> int:
        """Embedding-table size for a field (pad + unknown + known values)."""
        return len(self.tokens[field_name]) + _FIRST_FREE_ID

    def encode(self, field_name: str, value) -> list[int]:
        if field_name not in self.tokens:
            raise KeyError(f"field {field_name!r} is not in the vocabulary; known fields: {sorted(self.tokens)}")
        table = self.tokens[field_name]
        return [table.get(v, UNKNOWN_ID) for v in _as_values(value)]

    def to_dict(self) -> dict:
        return {"type": "std", "tokens": self.tokens}

    @classmethod
    def from_dict(cls, data: Mapping) -> "StdVocabulary":
        if data.get("type") != "std":
            raise ValueError(f"expected a saved StdVocabulary (type 'std'), found type {data.get('type')!r}")
        return cls({f: {v: int(i) for v, i in t.items()} for f, t in data["tokens"].items()})


@dataclass(frozen=True)
class HashedVocabulary:
    """Stateless ``zlib.crc32`` hashing of ``field=value`` into ``num_buckets`` ids (1..num_buckets).

    The field name is part of the hashed text so "cotton" as material and as detail differ.
    zlib.crc32 rather than Python's ``hash``: it is stable across processes and machines.
    """
    num_buckets: int = 100_000

    def __post_init__(self):
        if self.num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1, got {self.num_buckets}")

    @property
    def size(self) -> int:
        return self.num_buckets + 1  # + padding id 0

    def encode(self, field_name: str, value) -> list[int]:
        return [1 + zlib.crc32(f"{field_name}={v.strip().lower()}".encode("utf-8")) % self.num_buckets
                for v in _as_values(value)]

    def to_dict(self) -> dict:
        return {"type": "hashed", "num_buckets": self.num_buckets}

    @classmethod
    def from_dict(cls, data: Mapping) -> "HashedVocabulary":
        if data.get("type") != "hashed":
            raise ValueError(f"expected a saved HashedVocabulary (type 'hashed'), found type {data.get('type')!r}")
        return cls(int(data["num_buckets"]))


@dataclass
class FieldIndex:
    """Attribute key -> field id (0 = pad), in a fixed order given at construction."""
    fields: list[str]

    def __post_init__(self):
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"duplicate field names in {self.fields}")
        self._ids = {f: i + 1 for i, f in enumerate(self.fields)}

    def __getitem__(self, field_name: str) -> int:
        try:
            return self._ids[field_name]
        except KeyError:
            raise KeyError(f"unknown attribute field {field_name!r}; known: {self.fields}") from None

    @property
    def size(self) -> int:
        return len(self.fields) + 1


def pad_multi(id_lists: Sequence[Sequence[int]], max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ragged id lists -> (ids[int64, n x L], mask[bool, n x L]); longer lists are truncated."""
    longest = max((len(ids) for ids in id_lists), default=0)
    length = max(1, longest if max_len is None else max_len)
    ids = np.full((len(id_lists), length), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(id_lists), length), dtype=bool)
    for row, values in enumerate(id_lists):
        values = list(values)[:length]
        ids[row, :len(values)] = values
        mask[row, :len(values)] = True
    return ids, mask


@dataclass
class AttributeVocabulary:
    """Everything a model needs to turn attribute dicts into ids; saved next to its checkpoint."""
    std_fields: list[str]
    re_fields: list[str]
    std: StdVocabulary
    hashed: HashedVocabulary
    field_index: FieldIndex

    @classmethod
    def build(cls, records: Iterable[Mapping[str, object]], std_fields: Sequence[str],
              re_fields: Sequence[str], num_buckets: int = 100_000, min_count: int = 1) -> "AttributeVocabulary":
        return cls(list(std_fields), list(re_fields), StdVocabulary.build(records, std_fields, min_count),
                   HashedVocabulary(num_buckets), FieldIndex(list(std_fields) + list(re_fields)))

    def encode_field(self, field_name: str, value) -> list[int]:
        if field_name in self.std_fields:
            return self.std.encode(field_name, value)
        if field_name in self.re_fields:
            return self.hashed.encode(field_name, value)
        raise KeyError(f"field {field_name!r} is neither a STD field {self.std_fields} nor a RE field {self.re_fields}")

    def encode_batch(self, records: Sequence[Mapping[str, object]], field_name: str,
                     max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One field over many records -> padded (ids, mask). Missing single values -> UNKNOWN."""
        id_lists = []
        for record in records:
            ids = self.encode_field(field_name, record.get(field_name))
            if not ids and field_name in self.std_fields:
                ids = [UNKNOWN_ID]  # absent STD value is its own "unknown", not padding
            id_lists.append(ids)
        return pad_multi(id_lists, max_len)

    def to_dict(self) -> dict:
        return {"std_fields": self.std_fields, "re_fields": self.re_fields, "std": self.std.to_dict(),
                "hashed": self.hashed.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping) -> "AttributeVocabulary":
        std_fields, re_fields = list(data["std_fields"]), list(data["re_fields"])
        return cls(std_fields, re_fields, StdVocabulary.from_dict(data["std"]),
                   HashedVocabulary.from_dict(data["hashed"]), FieldIndex(std_fields + re_fields))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "AttributeVocabulary":
        return cls.from_dict(json.loads(Path(path).read_text()))
