"""Product facts for grounded messages: snippets per product and a vector index over them (RAG).

Every canonical item row becomes short fact snippets, each with an id ``"<item_id>#<n>"`` and the
field it came from: the title, the category path, one per attribute (``"color: 블랙, 화이트"``),
the styles, and one per description sentence. A message may only state what its products'
snippets say, and names the snippet ids it used, so every sentence can be traced to a source.

``FactIndex`` embeds all snippets with an injected ``texts -> unit vectors`` callable (default: the
offline MiniLM ``TextEncoder``; ``HashingEmbedder`` is a cheap deterministic stand-in) in an exact
``VectorIndex``; ``retrieve`` searches only the chosen products' rows (a faiss ID selector), so
another product's facts can never reach a prompt.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import faiss
import numpy as np

from recsys.index import IndexConfig, VectorIndex

Embedder = Callable[[Sequence[str]], np.ndarray]   # texts -> (N, dim) float32, unit-norm rows
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|\n+")


@dataclass(frozen=True)
class Snippet:
    snippet_id: str          # "<item_id>#<n>", n in the order the snippets were made
    item_id: str
    field: str               # title | category | styles | description | std:<field> | re:<field>
    text: str


def _attribute_snippets(attrs: Iterable[Mapping] | None, kind: str) -> list[tuple[str, str]]:
    out = []
    for attr in attrs or []:
        values = [str(v) for v in (attr.get("values") or []) if str(v).strip()]
        if values:
            out.append((f"{kind}:{attr['field']}", f"{attr['field']}: {', '.join(values)}"))
    return out


def item_snippets(row: Mapping) -> list[Snippet]:
    """The fact snippets of one canonical item row (a dict of ``ITEM_SCHEMA`` columns); the title
    is always snippet 0 when present, so a message can name its product."""
    item_id = str(row["item_id"])
    pieces: list[tuple[str, str]] = []
    if row.get("title"):
        pieces.append(("title", str(row["title"]).strip()))
    path = [str(p) for p in (row.get("category_path") or []) if p]
    if not path and row.get("category"):
        path = [str(row["category"])]
    if path:
        pieces.append(("category", "category: " + " > ".join(path)))
    pieces += _attribute_snippets(row.get("std_attributes"), "std")
    pieces += _attribute_snippets(row.get("re_attributes"), "re")
    styles = [str(s) for s in (row.get("styles") or []) if s]
    if styles:
        pieces.append(("styles", "styles: " + ", ".join(styles)))
    for sentence in _SENTENCE_END.split(str(row.get("description") or "")):
        if sentence.strip():
            pieces.append(("description", sentence.strip()))
    return [Snippet(f"{item_id}#{n}", item_id, field, text) for n, (field, text) in enumerate(pieces)]


def rows_of(items) -> list[dict]:
    """Item rows as dicts from a pyarrow table, a parquet path or an iterable of dicts."""
    if isinstance(items, (str, bytes)) or hasattr(items, "__fspath__"):
        import pyarrow.parquet as pq
        items = pq.read_table(items)
    if hasattr(items, "to_pylist"):
        return items.to_pylist()
    return [dict(r) for r in items]


class HashingEmbedder:
    """Deterministic character-trigram hashing embedder: no model, works for Korean and English.
    Retrieval quality is lexical only; use it in tests and where MiniLM cannot load."""

    def __init__(self, dim: int = 256):
        self.dim = dim

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            padded = f"  {str(text).lower()}  "
            for i in range(len(padded) - 2):
                digest = hashlib.blake2b(padded[i:i + 3].encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self.dim] += 1.0
            out[row, 0] += 1e-3   # never a zero vector (an empty text still gets a unit norm)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def minilm_embedder() -> Embedder:
    from recsys.encoders.text import TextEncoder
    encoder = TextEncoder()
    return encoder.encode


class FactIndex:
    """All snippets of a catalog in an exact inner-product index; see the module docstring."""

    def __init__(self, snippets: Sequence[Snippet], embed: Embedder | None = None):
        if not snippets:
            raise ValueError("FactIndex: no snippets (no item rows with a title, attribute or description)")
        self.embed = embed or minilm_embedder()
        self.snippets = list(snippets)
        self._rows_of_item: dict[str, list[int]] = {}
        for row, snippet in enumerate(self.snippets):
            self._rows_of_item.setdefault(snippet.item_id, []).append(row)
        vectors = np.asarray(self.embed([s.text for s in self.snippets]), dtype=np.float32)
        self.index = VectorIndex.build(vectors, [s.snippet_id for s in self.snippets], IndexConfig(kind="exact"))
        self.vocabulary = None   # the claim checker's catalog vocabulary; set by from_rows

    @classmethod
    def from_rows(cls, items, embed: Embedder | None = None) -> "FactIndex":
        from recsys.crm.claims import Vocabulary   # claims imports this module
        rows = rows_of(items)
        built = cls([s for row in rows for s in item_snippets(row)], embed)
        built.vocabulary = Vocabulary.from_rows(rows)
        return built

    @property
    def item_ids(self) -> list[str]:
        return list(self._rows_of_item)

    def snippets_of(self, item_id: str) -> list[Snippet]:
        return [self.snippets[r] for r in self._rows_of_item.get(item_id, [])]

    def retrieve(self, item_ids: Sequence[str], query_text: str, per_item: int) -> dict[str, list[Snippet]]:
        """Per asked product (in the asked order): its title snippet plus its ``per_item`` other
        snippets most similar to ``query_text``, best first. Unknown ids are an error (a message
        about a product with no facts could only be invented)."""
        unknown = [i for i in item_ids if i not in self._rows_of_item]
        if unknown:
            raise KeyError(f"no facts for product(s) {unknown[:5]}: not in the fact index")
        rows = np.array(sorted({r for i in item_ids for r in self._rows_of_item[i]}), dtype=np.int64)
        query = np.asarray(self.embed([query_text]), dtype=np.float32)
        # Search restricted to the asked products' rows: exact scores, nothing else can come back.
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(rows))
        scores, found = self.index.index.search(query, len(rows), params=params)
        score_of = {int(r): float(s) for r, s in zip(found[0], scores[0]) if r >= 0}
        out: dict[str, list[Snippet]] = {}
        for item in item_ids:
            own = self._rows_of_item[item]
            title = [r for r in own if self.snippets[r].field == "title"][:1]
            # Ties broken by snippet order, so the same query always gives the same facts.
            ranked = sorted((r for r in own if r not in title), key=lambda r: (-score_of.get(r, -np.inf), r))
            out[item] = [self.snippets[r] for r in title + ranked[:per_item]]
        return out
