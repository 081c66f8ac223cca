"""CRM messages in the Recommender: a segment's products (already chosen by the caller) -> facts
retrieved from their records -> one checked message per tone (``recsys.crm``, as ``ray_jobs.crm``).

Facts come from the served records (title, category path, attributes, styles): the index is built
per request over the chosen products' snippets only, so nothing else can reach the prompt. The
claim checker's vocabulary covers the whole live catalog (any product's name or value a draft
might use), rebuilt when the catalog's counts change (an add or delete).
"""
from __future__ import annotations

import threading
from typing import Mapping, Sequence

from recsys.crm.campaign import result_dict
from recsys.crm.claims import Vocabulary
from recsys.crm.facts import FactIndex, HashingEmbedder, item_snippets
from recsys.crm.messages import Segment, make_writer, write_messages
from serve_app.errors import AppError
from serve_app.item_space import canonical_row


def fact_row(item: Mapping) -> dict:
    """A served item record -> the canonical columns its fact snippets are made from."""
    return {**canonical_row(item, ()), "item_id": str(item["item_id"]), "category": item.get("category")}


class CrmWriter:
    def __init__(self, settings, text_encoder=None):
        """``settings``: ``serve_app.config.CrmSettings``; ``text_encoder``: the query encoder's MiniLM
        (None when text search is off: then a hashing embedder, lexical only, says so)."""
        self.settings = settings
        self.client = make_writer(settings.llm)
        self.backend = getattr(self.client, "backend_label", settings.llm.backend)
        self.embed = text_encoder.encode if text_encoder is not None else HashingEmbedder()
        self.retrieval = ("MiniLM (the served text encoder)" if text_encoder is not None
                          else "hashing (stand-in: lexical, no model; text search is off)")
        self._vocabulary: tuple[object, Vocabulary | None] = (None, None)
        self._lock = threading.Lock()

    def vocabulary(self, key: object, records) -> Vocabulary:
        """The live catalog's vocabulary; ``records()`` is read only when ``key`` (its counts) moved."""
        with self._lock:
            if self._vocabulary[0] != key:
                self._vocabulary = (key, Vocabulary.from_rows([fact_row(r) for r in records()]))
            return self._vocabulary[1]

    def write(self, segment: Segment, items: Sequence[Mapping], vocabulary: Vocabulary, goal: str,
              channel: str) -> dict:
        rows = [fact_row(item) for item in items]
        facts = FactIndex([s for row in rows for s in item_snippets(row)], self.embed)
        result = write_messages(segment, [r["item_id"] for r in rows], facts, self.client, self.settings.crm,
                                channel, goal, vocabulary)
        answer = result_dict(result)
        if not result.messages:
            reasons = sorted({reason for r in answer["rejected"] for reason in r["reasons"]})
            raise AppError(f"every draft failed the grounding checks, no message is sent: {'; '.join(reasons)[:600]}",
                           status=502, code="ungrounded_messages")
        return {**answer, "retrieval": self.retrieval}
