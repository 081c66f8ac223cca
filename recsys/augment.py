"""Attribute-JSON augmentation for contrastive training (field dropout lives in the train loop).

- Attribute mixing: a field's value is taken from another item of the same category, so the encoder
  cannot rely on any one field alone.
- Synonym replacement: a value is swapped for a synonym from a small table, so a query phrased with
  another common term still lands nearby (RE fields are hashed, so synonyms need no vocabulary).
Copies are drawn once, seeded, and added to the training pairs with the original's target.
STD fields have finite vocabularies: build them from ``vocabulary_records`` so that a synonym
augmentation can produce has an id of its own (not UNKNOWN), in training and in a query using it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

# Common alternative terms for K-Fashion label values (colour, material, fit, category).
KFASHION_SYNONYMS: dict[str, list[str]] = {
    "네이비": ["남색"], "화이트": ["흰색"], "블랙": ["검정"], "베이지": ["아이보리"], "그레이": ["회색"],
    "울/캐시미어": ["울", "캐시미어"], "면": ["코튼"], "가죽": ["레더"], "데님": ["청"], "니트": ["스웨터"],
    "루즈": ["여유핏"], "오버사이즈": ["빅사이즈"], "스키니": ["슬림"], "청바지": ["데님팬츠"],
    "티셔츠": ["티"], "후드티": ["후디"], "점퍼": ["블루종"], "무지": ["솔리드"], "플로럴": ["꽃무늬"],
}


@dataclass
class JsonAugmentConfig:
    copies: int = 0                 # augmented copies per training record (0 = off)
    mix_rate: float = 0.3           # per field: take the value of a same-category item
    synonym_rate: float = 0.3       # per value: swap for a synonym when the table has one
    seed: int = 0
    synonyms: dict[str, list[str]] = field(default_factory=lambda: dict(KFASHION_SYNONYMS))


def _swap(value, synonyms: Mapping[str, list[str]], rate: float, rng: random.Random):
    if isinstance(value, list):
        return [_swap(v, synonyms, rate, rng) for v in value]
    if isinstance(value, str) and value in synonyms and rng.random() < rate:
        return rng.choice(synonyms[value])
    return value


def vocabulary_records(records: Sequence[Mapping], fields: Sequence[str],
                       config: JsonAugmentConfig) -> list[Mapping]:
    """The training records plus, when augmentation is on, one record per synonym of a value they
    hold, so a vocabulary built from them knows every value ``augment_records`` can write."""
    if not config.copies or config.synonym_rate <= 0:
        return list(records)
    present = {name: set() for name in fields}
    for record in records:
        for name in fields:
            value = record.get(name)
            present[name].update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    extra = [{name: synonym} for name in fields for value in sorted(present[name])
             for synonym in config.synonyms.get(value, [])]
    return list(records) + extra


def augment_records(records: Sequence[Mapping], categories: Sequence[str], fields: Sequence[str],
                    config: JsonAugmentConfig) -> tuple[list[dict], list[int]]:
    """``config.copies`` augmented versions of every record -> (new records, index of each original)."""
    rng = random.Random(config.seed)
    by_category: dict[str, list[int]] = {}
    for i, category in enumerate(categories):
        by_category.setdefault(category, []).append(i)
    out, sources = [], []
    for _ in range(config.copies):
        for i, record in enumerate(records):
            new = dict(record)
            peers = by_category[categories[i]]
            for name in fields:
                if len(peers) > 1 and rng.random() < config.mix_rate:
                    new[name] = records[rng.choice(peers)].get(name)
                new[name] = _swap(new.get(name), config.synonyms, config.synonym_rate, rng)
            out.append(new)
            sources.append(i)
    return out, sources
