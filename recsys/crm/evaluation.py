"""How well the claim checker catches false claims: precision/recall on injected corruptions.

Valid messages (text + the facts they were written from) are copied; a seeded share of them is
corrupted with one known false claim, the rest are kept untouched:

- ``swap_value``: a value the message states (and its facts support) is replaced by another value
  of the same field from the catalog vocabulary that the facts do not support (블랙 -> 화이트);
- ``foreign_product``: a chosen product's title is replaced by the title of a product that was
  not chosen (or, when no title is in the text, that title is added in a sentence).

The checker "flags" a case when it finds any violation; a flagged corrupted case is a true
positive, a flagged untouched one a false positive. Untouched messages already failing the
checker show up as false positives, as they should.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from recsys.crm.claims import Vocabulary, check_message, norm, spans, supported_values
from recsys.crm.facts import Snippet

KINDS = ("swap_value", "foreign_product")


@dataclass
class EvalCase:
    text: str
    facts: Mapping[str, Sequence[Snippet]]   # chosen product id -> the snippets the message may use
    corrupted: bool
    kind: str = "none"                       # none | swap_value | foreign_product
    detail: str = ""


@dataclass
class CheckerScores:
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float
    recall_by_kind: dict[str, float] = field(default_factory=dict)


def _replace(text: str, start: int, end: int, new: str) -> str | None:
    # Spans are positions in norm(text); only valid on the original when norm kept the length.
    return text[:start] + new + text[end:] if len(norm(text)) == len(text) else None


def swap_value(text: str, facts: Mapping[str, Sequence[Snippet]], vocabulary: Vocabulary,
               rng: random.Random) -> tuple[str, str] | None:
    supported = supported_values(facts, vocabulary)
    candidates = []
    for start, end, value in spans(vocabulary.value_pattern, text):
        if value not in supported:
            continue
        for f in sorted(vocabulary.fields_of_value.get(value, ())):
            others = [v for v in vocabulary.field_values[f] if norm(v).strip() not in supported]
            candidates += [(start, end, value, f, v) for v in others]
    if not candidates:
        return None
    start, end, value, f, new = rng.choice(candidates)
    swapped = _replace(text, start, end, new)
    return (swapped, f"{f}: {value} -> {new}") if swapped is not None else None


def name_foreign_product(text: str, facts: Mapping[str, Sequence[Snippet]], vocabulary: Vocabulary,
                         rng: random.Random) -> tuple[str, str] | None:
    foreign = sorted(i for i in vocabulary.titles if i not in facts
                     and not vocabulary.product_names.get(norm(vocabulary.titles[i]), set()) & set(facts))
    if not foreign:
        return None
    item = rng.choice(foreign)
    title = vocabulary.titles[item]
    chosen_titles = {norm(vocabulary.titles[i]) for i in facts if i in vocabulary.titles}
    for start, end, name in spans(vocabulary.name_pattern, text):
        if name in chosen_titles and (swapped := _replace(text, start, end, title)) is not None:
            return swapped, f"title of {item} in place of {name!r}"
    return f"{text} {title}도 함께 추천해요.", f"added title of {item}"


_INJECTORS = {"swap_value": swap_value, "foreign_product": name_foreign_product}


def inject_claims(messages: Sequence[tuple[str, Mapping[str, Sequence[Snippet]]]], vocabulary: Vocabulary,
                  seed: int = 0, corrupt_share: float = 0.5, kinds: Sequence[str] = KINDS) -> list[EvalCase]:
    """One case per ``(text, facts)``; ``round(corrupt_share * n)`` of them (seeded) get one false claim
    of a seeded kind (the other kind when that one does not apply; untouched when neither does)."""
    rng = random.Random(seed)
    corrupt = set(rng.sample(range(len(messages)), round(corrupt_share * len(messages))))
    cases = []
    for i, (text, facts) in enumerate(messages):
        case = EvalCase(text, facts, False)
        if i in corrupt:
            first = rng.choice(list(kinds))
            for kind in [first] + [k for k in kinds if k != first]:
                injected = _INJECTORS[kind](text, facts, vocabulary, rng)
                if injected:
                    case = EvalCase(injected[0], facts, True, kind, injected[1])
                    break
        cases.append(case)
    return cases


def precision_recall(flagged: Sequence[bool], truth: Sequence[bool]) -> tuple[float, float, float]:
    """Precision, recall, F1 of ``flagged`` against ``truth`` (0.0 where undefined)."""
    tp = sum(f and t for f, t in zip(flagged, truth))
    precision = tp / sum(flagged) if sum(flagged) else 0.0
    recall = tp / sum(truth) if sum(truth) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score_checker(cases: Sequence[EvalCase], vocabulary: Vocabulary) -> CheckerScores:
    flagged = [bool(check_message(c.text, c.facts, vocabulary)) for c in cases]
    truth = [c.corrupted for c in cases]
    precision, recall, f1 = precision_recall(flagged, truth)
    by_kind = {}
    for kind in sorted({c.kind for c in cases if c.corrupted}):
        hits = [f for f, c in zip(flagged, cases) if c.kind == kind]
        by_kind[kind] = sum(hits) / len(hits)
    tp = sum(f and t for f, t in zip(flagged, truth))
    fp = sum(f and not t for f, t in zip(flagged, truth))
    fn = sum(t and not f for f, t in zip(flagged, truth))
    return CheckerScores(len(cases), tp, fp, fn, len(cases) - tp - fp - fn, precision, recall, f1, by_kind)


def evaluate_checker(messages: Sequence[tuple[str, Mapping[str, Sequence[Snippet]]]], vocabulary: Vocabulary,
                     seed: int = 0, corrupt_share: float = 0.5) -> CheckerScores:
    return score_checker(inject_claims(messages, vocabulary, seed, corrupt_share), vocabulary)
