"""The served users, from one ``ray_jobs.train_users`` run (``version["users_run"]``).

Each deployment loads the part it needs:

- :class:`UserModel` (QueryEncoder): the user store (``users.parquet``: history, profile, context
  text) and the user tower, which encodes a stored user or one described in a request (history
  item ids, profile fields, a context vector) into the tower's item space.
- :class:`UserSources` (Retriever): the candidate sources the run was trained with
  (``recsys.retrieval.sources.build_sources`` from its config.yaml: the user tower's vectors,
  ItemKNN transitions and popularity fitted on the store's histories), merged by
  ``recsys.retrieval.recommender.run_stage`` exactly as in training.
- :class:`LearnedReranker` (Reranker): the run's DeepFM / listwise model and the request-time
  features it was trained on (``recsys.data.candidate_lists.build_lists`` on a one-user list).

The run's files are read with the library's readers (``recsys.retrieval.user_model``,
``recsys.models.user_tower.load_user_model``, ``recsys.models.rerankers.load_reranker_artifact``).
The users and their interactions are a synthetic stand-in (see ``ray_jobs.train_users``); every
response says so in ``note``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.data.candidate_lists import RERANKER_FILE
from recsys.retrieval.user_model import RERANKER_DIR, USER_TOWER_DIR, USERS_FILE, read_user_model, served_sources
from serve_app.errors import InputError, NotFound, Unavailable

MAX_HISTORY = 200


def has_reranker(run_dir: str | Path) -> bool:
    """Whether the run has a learned reranker (``reranker/reranker.json``)."""
    return (Path(run_dir) / RERANKER_DIR / RERANKER_FILE).is_file()


def reranker_served_order(run_dir: str | Path) -> dict:
    """The order train_users chose for Serve on its selection lists: {"order": "learned" |
    "rank_fusion", "reason", ...} (runs written before the choice: learned)."""
    import json

    saved = json.loads((Path(run_dir) / RERANKER_DIR / RERANKER_FILE).read_text())
    return saved.get("served_order") or {"order": "learned", "reason": "run written before the order choice"}


class UserStore:
    """user_id -> {history (oldest first), age, style, context}."""

    def __init__(self, run_dir: str | Path):
        frame = pq.read_table(Path(run_dir) / USERS_FILE).to_pandas()
        self.users: dict[str, dict] = {}
        for row in frame.to_dict("records"):
            user_id, history = str(row.pop("user_id")), row.pop("history")
            self.users[user_id] = {"history": [str(i) for i in (history if history is not None else [])],
                                   **{k: _plain(v) for k, v in row.items()}}

    def __len__(self) -> int:
        return len(self.users)

    def get(self, user_id: str) -> dict | None:
        return self.users.get(user_id)

    def histories(self) -> list[list[str]]:
        return [u["history"] for u in self.users.values()]

    def sample_ids(self, n: int) -> list[str]:
        return list(self.users)[:n]


def _plain(value):
    """numpy / NaN -> plain JSON values."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class UserModel:
    """The user store and the user tower (QueryEncoder side)."""

    def __init__(self, run_dir: str | Path):
        from recsys.models.user_tower import load_user_model  # torch: only in the QueryEncoder's replicas

        run_dir = Path(run_dir)
        self.files, self.tower = load_user_model(run_dir / USER_TOWER_DIR)
        self.run_dir = run_dir
        self.store = UserStore(run_dir)
        self.token_of = {item: n + 1 for n, item in enumerate(self.files.item_ids)}
        self.numeric: list[str] = list(self.files.profile_numeric)
        self.categorical: dict[str, list[str]] = dict(self.files.profile_categorical)
        self.context_dim = int(self.tower.config.context_dim)
        self.note = self.files.note

    def describe(self) -> dict:
        return {"users": len(self.store), "profile_numeric": self.numeric, "profile_categorical": self.categorical,
                "context": self.context_dim > 0, "items_in_user_model": len(self.token_of), "note": self.note}

    def validate_profile(self, profile: dict[str, Any] | None) -> tuple[dict, dict[str, list[str]]]:
        """-> (profile record, {field: [values the model has not seen]}); InputError for unknown
        fields or wrong types."""
        profile = profile or {}
        if not isinstance(profile, dict):
            raise InputError("profile: expected an object of profile fields", field="profile")
        known = self.numeric + list(self.categorical)
        unknown = sorted(set(profile) - set(known))
        if unknown:
            raise InputError(f"profile: unknown field(s) {unknown}; this user model reads {known}",
                             field=f"profile.{unknown[0]}")
        record, unseen = {}, {}
        for name in self.numeric:
            value = profile.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"profile.{name}: expected a number, got {value!r}", field=f"profile.{name}")
            record[name] = float(value)
        for name, values in self.categorical.items():
            value = profile.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise InputError(f"profile.{name}: expected a string (one of {values}), got {value!r}",
                                 field=f"profile.{name}")
            record[name] = value
            if value not in values:
                unseen[name] = [value]
        return record, unseen

    def encode(self, history: list[str], profile: dict, context: np.ndarray | None) -> dict:
        """The user vector from whatever is given (absent inputs are the tower's "missing")."""
        from recsys.models.user_tower import encode_users, pad_right

        tokens = [self.token_of[i] - 1 for i in history if i in self.token_of]
        arrays = {"items": pad_right([np.asarray(tokens, dtype=np.int64)], self.tower.config.max_len)}
        if self.numeric:
            arrays["profile_numeric"] = np.array([[profile.get(n, np.nan) for n in self.numeric]], dtype=np.float32)
        if self.categorical:
            arrays["profile_categorical"] = np.array(
                [[values.index(profile[n]) + 1 if profile.get(n) in values else 0
                  for n, values in self.categorical.items()]], dtype=np.int64)
        if self.context_dim:
            arrays["context"] = (np.asarray(context, dtype=np.float32)[None] if context is not None
                                 else np.full((1, self.context_dim), np.nan, dtype=np.float32))
        vector = encode_users(self.tower, arrays)[0]
        return {"vector": vector.astype(np.float32),
                "not_in_user_model": [i for i in history if i not in self.token_of]}


class UserSources:
    """Candidate sources over the user tower's item space (Retriever side)."""

    def __init__(self, run_dir: str | Path, n_per_source: int):
        from recsys.retrieval.sources import SourceInputs, build_sources

        run_dir = Path(run_dir)
        files = read_user_model(run_dir / USER_TOWER_DIR)
        self.item_ids = np.asarray(files.item_ids, dtype=object)
        self.index_of = {item: n for n, item in enumerate(files.item_ids)}
        self.item_vectors = files.item_vectors()
        self.n_per_source = n_per_source
        self.note = files.note
        self.config = served_sources(run_dir)
        sequences = [self.indices(h) for h in UserStore(run_dir).histories()]
        # the history-based sources once; the user tower joins per request (build_sources' ``fitted``)
        self.fitted = build_sources(self.config, SourceInputs(sequences, len(self.item_ids)))
        self.popularity = self.fitted["mostpop"]

    def indices(self, history: list[str]) -> np.ndarray:
        return np.array([self.index_of[i] for i in history if i in self.index_of], dtype=np.int64)

    def candidates(self, user_vector: np.ndarray, history: list[str], k: int = 0) -> dict:
        """Merged candidates of the run's sources (user tower, ItemKNN, popularity), each proposing max(``k``, ``n_per_source``) items,
        the user's history removed, in the lists' input order of training (user-tower score,
        descending): ids, per-source scores (``score_<source>``: 0 when that source did not propose
        it), the sources' reciprocal-rank fusion (the untrained fallback order) and the items'
        interaction counts in the store (the reranker's popularity feature)."""
        from recsys.retrieval.recommender import CandidateConfig, reciprocal_rank_fusion, run_stage
        from recsys.retrieval.sources import SourceInputs, build_sources

        n = max(k, self.n_per_source)
        user = SourceInputs([], len(self.item_ids), np.asarray(user_vector, dtype=np.float32)[None], self.item_vectors)
        sources = build_sources(self.config, user, self.fitted)
        found = run_stage(sources, self.popularity, [self.indices(history)], None,
                          CandidateConfig(n_per_source=n)).candidates
        keep = ~np.isin(found.item, self.indices(history))
        tower = found.features["user_tower_score"][keep]
        order = np.argsort(-tower, kind="stable")
        items = found.item[keep][order]
        fusion = reciprocal_rank_fusion({name: found.rank[name][keep][order] for name in sources},
                                        {name: found.proposed[name][keep][order] for name in sources})
        return {"item_ids": self.item_ids[items].tolist(),
                "scores": {f"score_{name}": found.score[name][keep][order].astype(np.float32) for name in sources},
                "fusion": np.asarray(fusion, dtype=np.float32),
                "popularity": self.popularity.counts[items].astype(np.float32)}


class LearnedReranker:
    """The run's trained reranker and its request-time features (Reranker side)."""

    def __init__(self, run_dir: str | Path):
        from recsys.data.candidate_lists import ItemIndex
        from recsys.models.rerankers import load_reranker_artifact

        run_dir = Path(run_dir)
        files, self.model = load_reranker_artifact(run_dir / RERANKER_DIR)
        self.kind = files.kind
        self.run = run_dir.name
        self.index = ItemIndex(files.item_ids)
        self.feature_names: list[str] = files.feature_names
        self.score_columns: list[str] = files.score_columns
        self.scaler = files.scaler
        self.max_history = files.max_history
        self.item_vectors = files.item_vectors()

    def score(self, item_ids: list[str], scores: dict[str, np.ndarray], popularity: np.ndarray,
              history: list[str]) -> np.ndarray:
        """One score per candidate, in the given order. The features are built by the training code's
        ``build_lists`` on a one-user list (``ranker_score`` = minus the position, so it keeps the
        order); only popularity comes from the store's counts (``popularity``), since build_lists
        would count it in this one user's history."""
        import torch

        from recsys.data.candidate_lists import build_lists

        if not item_ids:
            return np.zeros(0, dtype=np.float32)
        candidates = pd.DataFrame({"user_id": "u", "item_id": item_ids, "split": "test", "label": 0,
                                   **{c: np.asarray(scores.get(c, np.zeros(len(item_ids))), np.float32)
                                      for c in self.score_columns},
                                   "ranker_score": -np.arange(len(item_ids), dtype=np.float64)})
        sequences = pd.DataFrame({"user_id": ["u"], "history_test": [list(history)], "target_test": [""]})
        lists = build_lists(candidates, sequences, "test", self.index, self.score_columns, self.item_vectors,
                            self.max_history, ranker_features=False)
        dense = lists.dense.copy()
        dense[0, :, self.feature_names.index("popularity")] = np.log1p(popularity)
        with torch.no_grad():
            out = self.model(torch.as_tensor(lists.items), torch.as_tensor(lists.history),
                             torch.as_tensor(self.scaler.transform(dense)), torch.as_tensor(lists.mask))
        return out[0].float().numpy()


class PersonaModel:
    """The persona two-tower of one ``ray_jobs.train_persona`` run (``recsys.models.persona``): ranks
    products for a profile alone, for requests with no user id, no history and no context text."""

    def __init__(self, run_dir: str | Path):
        import json

        from recsys.models.persona import PersonaRecommender

        run_dir = Path(run_dir)
        self.model = PersonaRecommender.load(run_dir)
        self.run = run_dir.name
        self.fields: list[str] = self.model.profiles.fields
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
        self.note = metrics.get("note")
        self.described = {p["name"]: p for p in metrics.get("personas", [])}   # size, dominant values

    def segment(self, name: str):
        """A persona as a CRM segment (aggregates only) and its products best first; 404 for an unknown name."""
        from recsys.crm.campaign import persona_segment

        try:
            ranked = self.model.recommend_persona(name, len(self.model.article_ids))
        except KeyError as error:
            raise NotFound(str(error).strip("'\""), field="persona") from error
        except ValueError as error:   # a run without personas.json
            raise Unavailable(f"persona: {error}", code="persona_unavailable") from error
        return persona_segment(self.described.get(name, {"name": name, "size": 0})), [a for a, _ in ranked]

    def recommend(self, profile: dict, n: int) -> tuple[list[str], np.ndarray, str | None]:
        """(product ids best first, cosine scores, the profile's persona name); 422 for a bad profile."""
        try:
            self.model.profiles.validate(profile)
            ranked = self.model.recommend(profile, top_n=n)
        except ValueError as error:
            raise InputError(f"profile: {error}", field="profile") from error
        return [i for i, _ in ranked], np.array([s for _, s in ranked], np.float32), self.model.persona(profile)

    @property
    def ranking(self) -> str:
        """What orders the products, in words (the run's choice, made on its validation day)."""
        serving = self.model.serving
        hits = next((v for key, v in serving.items() if key.startswith("validation_hit@")), None)
        chosen = (f"; chosen on the run's validation day: hit@{serving['k']} model {hits['model']:.4f}, "
                  f"persona popularity {hits['persona_popular']:.4f}") if hits else ""
        if self.model.ranker == "persona_popular":
            return ("persona popularity (the training purchases of the customers in the profile's persona, which "
                    f"the profile tower picks){chosen}")
        return f"persona two-tower (profile tower x product tower, cosine){chosen}"

    def describe(self) -> dict:
        return {"run": self.run, "fields": self.fields, "products": len(self.model.article_ids),
                "ranker": self.model.ranker, "ranking": self.ranking,
                "personas": self.model.personas.names if self.model.personas is not None else None}


def validate_history(history: Any) -> list[str]:
    if not isinstance(history, list) or not all(isinstance(i, str) for i in history):
        raise InputError("history: expected a list of item id strings", field="history")
    if len(history) > MAX_HISTORY:
        raise InputError(f"history: at most {MAX_HISTORY} items, got {len(history)}", field="history")
    return history
