"""Recommender: everything a query needs after HTTP, in one call per route.

Query encoding (``components.query_encoder``), retrieval over the catalog and item store
(``components.retriever``) and ranking (``components.reranker``) of one version live together in
one :class:`Served` snapshot. A route makes one DeploymentHandle call here and gets its final,
JSON-ready answer back: candidates and their vectors never travel between processes, and a
request reads ``self.state`` once, so every result of a response comes from the version it names.
Why these steps share a deployment (and the image encoder does not): ``serve_app/app.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.crm.campaign import ONE_CUSTOMER
from recsys.crm.messages import Segment
from serve_app.components.crm import CrmWriter
from serve_app.components.query_encoder import QueryEncoder
from serve_app.components.reranker import Reranker
from serve_app.components.retriever import Retriever, read_sales, top10_to_new
from recsys.config import from_dict
from serve_app.config import CrmSettings, ServeAppConfig
from serve_app.deployments.base import Versioned
from serve_app.errors import Conflict, InputError, NotFound, Unavailable, VersionMoved
from serve_app.kpi import dashboard, image_url
from serve_app.users import PersonaModel
from recsys.stores.item_log import open_item_log
from serve_app.versions import embed_run_config, version_label


@dataclass
class Served:
    version: dict
    query: QueryEncoder
    retriever: Retriever
    reranker: Reranker
    persona: PersonaModel | None = None  # profile-only requests, when the version has a persona run
    crm: CrmWriter | None = None         # POST /api/crm/messages


def item_out(item: dict) -> dict:
    return {**item, "image_url": image_url(item["item_id"])}


class Recommender(Versioned):
    def __init__(self, config: ServeAppConfig, version: dict | None = None):
        self.store = open_item_log(config.item_log, default_path=config.state_dir)  # file, or PostgreSQL shared by all
        self.sales = read_sales(config.best_sellers.interactions)
        self.crm_settings = config.crm   # user_config.crm replaces it in place (a new LLM endpoint, tones ...)
        super().__init__(config, version)

    async def reconfigure(self, user_config: dict | None) -> None:
        """The version (``Versioned``), then ``user_config.crm`` ({llm, crm} as in the app's args): the
        CRM writer moves to it without a restart, e.g. to another OpenAI-compatible endpoint."""
        crm = (user_config or {}).get("crm")
        settings = from_dict(CrmSettings, crm, "user_config.crm") if crm is not None else self.config.crm
        changed = settings != self.crm_settings
        self.crm_settings = settings
        await super().reconfigure(user_config)
        state = self.state
        if changed and state is not None and state.crm is not None:
            state.crm = CrmWriter(settings, state.query.text)   # a reference swap, like a version move

    def _load(self, version: dict, previous: Served | None) -> Served:
        served = Served(version, QueryEncoder(self.config, version, previous.query if previous else None),
                        Retriever(self.config, version, self.store, self.sales), Reranker(self.config, version),
                        PersonaModel(version["persona_run"]) if version.get("persona_run") else None)
        served.crm = CrmWriter(self.crm_settings, served.query.text)
        served.retriever.catalog.sync()  # catch up with item changes made while it was built
        return served

    def _served(self) -> Served:
        state = self.state
        if state is None:
            raise Unavailable("the recommender has no version loaded yet", code="not_ready")
        return state

    # -- answers ---------------------------------------------------------------------------------
    def _ranked(self, s: Served, retrieved: dict, k: int, mmr_lambda: float | None) -> tuple[list[dict], dict]:
        scores = np.asarray(retrieved["scores"], dtype=np.float32)
        ranked = s.reranker.rerank(scores, retrieved["vectors"] if len(scores) else np.zeros((0, 1), np.float32),
                                   k, mmr_lambda)
        hits = [{"rank": n + 1, "score": round(float(scores[i]), 6), "mmr_score": round(float(g), 6),
                 "item": item_out(retrieved["items"][i]), "_index": int(i)}
                for n, (i, g) in enumerate(zip(ranked["order"], ranked["mmr_scores"]))]
        return hits, ranked["reranker"]

    def _answer(self, s: Served, retrieved: dict, k: int, mmr_lambda: float | None, query: dict,
                unknown: dict) -> dict:
        hits, reranker = self._ranked(s, retrieved, k, mmr_lambda)
        for hit in hits:
            hit.pop("_index")
        return {"query": query, "unknown_values": unknown, "results": hits, "reranker": reranker,
                "scope": retrieved["scope"], "note": retrieved["note"], "model": retrieved["version"]}

    def search(self, attributes: dict | None, text: str | None, k: int, n_candidates: int,
               mmr_lambda: float | None = None, exclude_ids: list[str] | tuple = (), scope: str = "all") -> dict:
        """An attribute-JSON and/or free-text query -> the answer of ``POST /api/search``."""
        s = self._served()
        encoded = s.query.encode_attributes(attributes) if attributes else None
        text_vector = s.query.encode_text([text])[0] if text and text.strip() else None
        retrieved = s.retriever.search(encoded["vector"] if encoded else None, text_vector, n_candidates,
                                       exclude_ids, scope)
        query = {"attributes": encoded["record"] if encoded else None, "text": text}
        return self._answer(s, retrieved, k, mmr_lambda, query, encoded["unknown_values"] if encoded else {})

    def similar(self, item_id: str, k: int, n_candidates: int, mmr_lambda: float | None = None,
                scope: str = "all", query: dict | None = None) -> dict:
        s = self._served()
        retrieved = s.retriever.similar(item_id, n_candidates, scope)
        return {**self._answer(s, retrieved, k, mmr_lambda, query or {"item_id": item_id}, {}),
                "space": retrieved["space"]}

    def _check_space(self, s: Served, embedded: dict) -> None:
        if embedded["embed_run"] != version_label(s.version)["embed_run"]:
            raise VersionMoved(f"the image was embedded for embed run {embedded['embed_run']}, this replica serves "
                               f"{version_label(s.version)['embed_run']} (a version move is under way); retry")

    def search_image(self, embedded: dict, k: int, n_candidates: int, mmr_lambda: float | None, scope: str,
                     query: dict) -> dict:
        """An uploaded image's vector (``ImageEmbedder.embed``) -> similar products."""
        s = self._served()
        self._check_space(s, embedded)
        retrieved = s.retriever.search(embedded["vector"], None, n_candidates, (), scope)
        return self._answer(s, retrieved, k, mmr_lambda, query, {})

    def _user_answer(self, s: Served, query: dict, k: int, mmr_lambda: float | None, exclude_ids) -> dict:
        retrieved = s.retriever.user_candidates(query["vector"], query["history"], k, exclude_ids,
                                                query["source"] == "request")
        ranked = s.reranker.rerank_user(retrieved, query["history"], k, mmr_lambda)
        sources = retrieved["source_scores"]
        hits = [{"rank": n + 1, "score": round(float(score), 6), "mmr_score": round(float(gain), 6),
                 "sources": {name: round(float(values[i]), 6) for name, values in sources.items()},
                 "item": item_out(retrieved["items"][i])}
                for n, (i, score, gain) in enumerate(zip(ranked["order"], ranked["scores"], ranked["mmr_scores"]))]
        user = {**{key: query["query"][key] for key in ("user_id", "history", "profile", "context")},
                "source": query["source"], "not_in_user_model": query["not_in_user_model"]}
        return {"user": user, "unknown_values": query["unknown_values"], "results": hits,
                "reranker": ranked["reranker"], "candidates": len(retrieved["items"]), "note": query["note"],
                "model": retrieved["version"], "answered_by": "user_tower", "persona": None}

    def _persona_answer(self, s: Served, profile: dict | None, k: int, n_candidates: int,
                        mmr_lambda: float | None, exclude_ids) -> dict:
        """A profile alone (no id, history or context): the persona two-tower ranks the products, the
        library MMR orders the top ``n_candidates`` live ones (lambda: users.mmr_lambda by default)."""
        users = s.query.users
        if users is not None:  # the user tower's field checks (types, unseen values), then the persona's fields
            record, unknown = users.validate_profile(profile)
            record = {key: value for key, value in record.items() if key in s.persona.fields}
        else:
            record, unknown = dict(profile or {}), {}
        if not record:
            raise InputError(f"give at least one of: history (item ids), profile (fields {s.persona.fields}) or "
                             "context (text)", field="history")
        ids, scores, persona = s.persona.recommend(record, len(s.persona.model.article_ids))
        retrieved = s.retriever.ranked_items(ids, scores, n_candidates, exclude_ids)
        lam = self.config.users.mmr_lambda if mmr_lambda is None else mmr_lambda
        ranked = s.reranker.rerank(retrieved["scores"], retrieved["vectors"], k, lam)
        hits = [{"rank": n + 1, "score": round(float(retrieved["scores"][i]), 6), "mmr_score": round(float(g), 6),
                 "sources": {"persona": round(float(retrieved["scores"][i]), 6)}, "item": item_out(retrieved["items"][i])}
                for n, (i, g) in enumerate(zip(ranked["order"], ranked["mmr_scores"]))]
        reranker = {**ranked["reranker"], "name": "persona", "learned": True, "run": s.persona.run,
                    "ranker": s.persona.model.ranker,
                    "description": f"{s.persona.ranking} (train_persona run {s.persona.run}), then MMR with lambda "
                                   f"{ranked['reranker']['lambda']:g} over image vectors"}
        user = {"user_id": None, "history": [], "profile": record, "context": None, "source": "request",
                "not_in_user_model": []}
        return {"user": user, "unknown_values": unknown, "results": hits, "reranker": reranker,
                "candidates": len(retrieved["items"]), "note": s.persona.note, "model": retrieved["version"],
                "answered_by": "persona", "persona": persona}

    def recommend_stored_user(self, user_id: str, k: int, mmr_lambda: float | None = None) -> dict:
        s = self._served()
        return self._user_answer(s, s.query.encode_stored_user(user_id), k, mmr_lambda, [])

    def recommend_user(self, history: list[str] | None, profile: dict | None, context: str | None, k: int,
                       mmr_lambda: float | None = None, exclude_ids: list[str] | tuple = ()) -> dict:
        s = self._served()
        if s.persona is not None and not history and context is None:
            n_candidates = max(k, min(self.config.search.candidates, 5 * k))
            return self._persona_answer(s, profile, k, n_candidates, mmr_lambda, exclude_ids)
        return self._user_answer(s, s.query.encode_user(history, profile, context), k, mmr_lambda, exclude_ids)

    def top10_to_new(self, item_ids: list[str], uploads: list[dict], k: int, n_candidates: int,
                     share: float | None, mmr_lambda: float | None, scope: str) -> dict:
        """Best sellers (given ids, uploaded images' vectors, or the top ``share``) -> new products."""
        s = self._served()
        best, vectors, retriever = [], [], s.retriever
        if item_ids:
            given = retriever.items_with_vectors(item_ids)
            best += given["items"]
            vectors.append(given["vectors"])
        if uploads:
            for embedded in uploads:
                self._check_space(s, embedded)
            upload_vectors = np.stack([u["vector"] for u in uploads])
            for upload, label in zip(uploads, retriever.nearest_labels(upload_vectors)):
                best.append({"item_id": upload["item_id"], "title": upload["filename"],
                             "category": label.get("category"), "attributes": label.get("attributes", {}),
                             "styles": label.get("styles", []), "inferred_from": label.get("item_id"),
                             "inferred_similarity": label.get("similarity")})
            vectors.append(upload_vectors)
        if item_ids or uploads:
            source = "given: " + ", ".join(p for p in (f"{len(item_ids)} item ids" if item_ids else "",
                                                        f"{len(uploads)} uploaded images" if uploads else "") if p)
        else:
            chosen = retriever.best_sellers(share)
            best, source = chosen["items"], chosen["source"]
            vectors.append(chosen["vectors"])
            if not best:
                raise InputError("no best sellers: the catalog has no existing (non-new) items", status=409,
                                 code="no_best_sellers")
        best_vectors = np.concatenate(vectors).astype(np.float32)
        retrieved = retriever.match_set(best_vectors, n_candidates, [b["item_id"] for b in best], scope)
        hits, reranker = self._ranked(s, retrieved, k, mmr_lambda)
        order = [h["_index"] for h in hits]
        reordered = {"items": [retrieved["items"][i] for i in order], "scores": retrieved["scores"][order],
                     "vectors": retrieved["vectors"][order]}
        matched = top10_to_new(best, best_vectors, reordered, k)
        for hit, result in zip(hits, matched["results"]):
            hit.pop("_index")
            hit["matched_best_sellers"] = result["matched_best_sellers"]
        listed = [item_out(b) if not b["item_id"].startswith("upload:") else b for b in best[:50]]
        return {"best_sellers": {"source": source, "n": len(best), "items": listed}, "results": hits,
                "trends": matched["trends"], "reranker": reranker, "scope": retrieved["scope"],
                "note": retrieved["note"], "model": retrieved["version"]}

    # -- CRM messages ----------------------------------------------------------------------------
    def _crm_segment(self, s: Served, persona: str | None, user_id: str | None, profile: dict | None,
                     n: int) -> tuple[Segment, list[str]]:
        """(the segment, its products best first): a persona's aggregates and products, a stored
        customer's own profile and recommendations, or a profile's persona answer."""
        if persona is not None:
            if s.persona is None:
                raise Unavailable("this version has no persona run (train one: python -m ray_jobs.train_persona)",
                                  code="persona_unavailable")
            return s.persona.segment(persona)
        if user_id is not None:   # the prompt gets the customer's own profile, never the id
            answer = self.recommend_stored_user(user_id, n)
            return (Segment(ONE_CUSTOMER, answer["user"]["profile"] or {}),
                    [hit["item"]["item_id"] for hit in answer["results"]])
        if not profile:
            raise InputError("profile: give at least one profile field", field="profile")
        answer = self.recommend_user(None, profile, None, n)
        name = f"profile (persona {answer['persona']})" if answer.get("persona") else "profile"
        return Segment(name, answer["user"]["profile"] or {}), [hit["item"]["item_id"] for hit in answer["results"]]

    def crm_messages(self, persona: str | None, user_id: str | None, profile: dict | None,
                     product_ids: list[str] | None, goal: str, channel: str) -> dict:
        """One grounded message per tone for a segment about its products (or the given ones)."""
        s = self._served()
        writer = s.crm   # read once: a user_config.crm change swaps it
        settings, n = writer.settings.crm, writer.settings.crm.products_per_message
        try:
            settings.limit(channel)
        except ValueError as error:
            raise InputError(f"channel: {error}", field="channel") from error
        if product_ids and len(set(product_ids)) > n:
            raise InputError(f"product_ids: at most {n} products per message (crm.products_per_message), "
                             f"got {len(set(product_ids))}", field="product_ids")
        segment, ranked = self._crm_segment(s, persona, user_id, profile, n)
        if product_ids:
            try:
                items = [s.retriever.get_item(i) for i in dict.fromkeys(product_ids)]
            except NotFound as error:
                raise NotFound(f"product_ids: {error}", field="product_ids") from error
        else:
            items = s.retriever.ranked_items(ranked, np.zeros(len(ranked), np.float32), n)["items"]
        if not items:
            raise Conflict(f"segment {segment.name!r} has no live products to write about", code="no_products")
        counts = s.retriever.counts()   # they move with every add or delete: the vocabulary's cache key
        vocabulary = writer.vocabulary((counts["items"], counts["added_through_api"], counts["deleted"]),
                                      s.retriever.live_items)
        answer = writer.write(segment, items, vocabulary, goal, channel)
        return {**answer, "products": [item_out(i) for i in items], "model": version_label(s.version)}

    # -- the item store --------------------------------------------------------------------------
    def add_item(self, record: dict, embedded: dict, image: bytes) -> dict:
        s = self._served()
        self._check_space(s, embedded)
        text_vector = None
        if record.get("title") and self.config.text.enabled and s.query.text is not None:
            text_vector = s.query.encode_text([record["title"]])[0]
        return item_out(s.retriever.add_item(record, embedded["vector"], text_vector, image, embedded["extension"]))

    def get_item(self, item_id: str) -> dict:
        return item_out(self._served().retriever.get_item(item_id))

    def delete_item(self, item_id: str) -> dict:
        return self._served().retriever.delete_item(item_id)

    def image(self, item_id: str) -> tuple[bytes, str]:
        return self._served().retriever.image(item_id)

    def describe(self) -> dict:
        """Fields an attribute query may use and their known values."""
        return self._served().query.describe()

    # -- dashboard and ops -----------------------------------------------------------------------
    def kpi(self) -> dict:
        """The served version's training/evaluation KPIs and the catalog's counts."""
        s = self._served()
        payload = dashboard(s.version, self.config.kpi, s.retriever.sample_ids(self.config.kpi.augmented_samples))
        payload["catalog"] = s.retriever.counts()
        return payload

    def augment_settings(self) -> dict:
        """The embed run's augmentation settings (the KPI page's augmented views)."""
        return {k: v for k, v in (embed_run_config(self._served().version).get("augment") or {}).items()
                if k != "views"}

    def health(self) -> dict:
        s = self._served()
        return {"ok": True, "catalog": s.retriever.health(), "queries": s.query.health(),
                "ranking": s.reranker.health(), "version": s.retriever.version_info(),
                "persona": s.persona.describe() if s.persona is not None else None,
                "last_move": self.last_move, "loads": self.loads}
