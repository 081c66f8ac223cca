"""QueryEncoder: attribute JSON -> 512-d vector (the stage-2 JSON encoder, aligned to the item
images), free text -> text vector (the embed run's sentence encoder, searched against the items'
text vectors), and a user (a query too: stored, or history/profile/context given in a request) ->
the user tower's vector (``serve_app.users``; context text goes through the same sentence encoder).
All models come from one served version's runs (a new version builds a new QueryEncoder, keeping
the sentence model when it is the same); vocabularies ship with the model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from serve_app.attributes import describe, validate_attributes
from serve_app.config import ServeAppConfig
from serve_app.errors import InputError, NotFound, Unavailable
from serve_app.users import UserModel, validate_history
from serve_app.versions import embed_run_config, version_label

MAX_TEXT_CHARS = 500


class QueryEncoder:
    """The query models of one version."""

    def __init__(self, config: ServeAppConfig, version: dict, previous: "QueryEncoder | None" = None):
        import torch

        from recsys.models.json_encoder import load_json_encoder  # torch: only where queries are encoded

        torch.set_num_threads(1)  # one query at a time per thread; replicas share few cores
        self.config = config
        self.version = version
        self.encoder, self.vocab = load_json_encoder(version["json_encoder_run"])
        self.encoder_config = self.encoder.config
        self.text_model = None
        self.text = None
        has_text = (Path(version["embed_run"]) / "text_embeddings").exists()
        if config.text.enabled and has_text:
            from recsys.encoders.text import TextEncoder, TextEncoderConfig

            self.text_model = config.text.model or (embed_run_config(version).get("text") or {}).get(
                "model") or TextEncoderConfig().model
            if previous is not None and previous.text_model == self.text_model:
                self.text = previous.text  # same sentence model: keep the loaded one
            else:
                self.text = TextEncoder(TextEncoderConfig(model=self.text_model, batch_size=32, device="cpu"))
        users_run = version.get("users_run")
        self.users = UserModel(users_run) if users_run else None

    def encode_attributes(self, attributes) -> dict:
        """-> {"vector": (512,), "record": validated query, "unknown_values": {field: [values]}}."""
        from recsys.models.json_encoder import encode_features, featurize

        models = self
        record, unknown = validate_attributes(attributes, models.encoder_config, models.vocab)
        if not record:
            raise InputError(f"attributes: give at least one of {list(models.encoder_config.fields)}",
                             field="attributes")
        features = featurize(models.vocab, [record], models.encoder_config)
        vector = encode_features(models.encoder, features)[0].astype(np.float32)
        return {"vector": vector, "record": record, "unknown_values": unknown}

    def encode_text(self, texts: list[str]) -> np.ndarray:
        models = self
        if models.text is None:
            raise Unavailable("free-text search is not available: the served embed run has no text embeddings "
                              "(or text.enabled is false)", code="text_search_unavailable")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InputError("text: expected a non-empty string", field="text")
            if len(text) > MAX_TEXT_CHARS:
                raise InputError(f"text: at most {MAX_TEXT_CHARS} characters, got {len(text)}", field="text")
        return models.text.encode(texts)

    # -- users ---------------------------------------------------------------------------------
    def _user_model(self, models: "QueryEncoder") -> UserModel:
        if models.users is None:
            raise Unavailable("user recommendations are not available: the served version has no users run "
                              "(ray_jobs.train_users, or the train_users step of the pipeline, makes one)",
                              code="users_unavailable")
        return models.users

    def _user_query(self, users: UserModel, history: list[str], profile: dict, context: str | None, source: str,
                    unknown: dict, user_id: str | None = None) -> dict:
        vector = None
        if context is not None:
            if not users.context_dim:
                raise InputError("context: this user model was trained without a context input", field="context")
            vector = self.encode_text([context])[0]
            if len(vector) != users.context_dim:
                raise Unavailable(f"context: the text encoder gives {len(vector)}-d vectors, the user tower reads "
                                  f"{users.context_dim}-d", code="context_unavailable")
        encoded = users.encode(history, profile, vector)
        return {"vector": encoded["vector"], "history": history, "source": source, "user_id": user_id,
                "query": {"user_id": user_id, "history": history, "profile": profile, "context": context},
                "unknown_values": unknown, "not_in_user_model": encoded["not_in_user_model"],
                "note": users.note, "users_run": users.run_dir.name}

    def encode_stored_user(self, user_id: str) -> dict:
        """A user of the served store -> the user query (404 for an unknown id)."""
        users = self._user_model(self)
        user = users.store.get(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} is not in the served user store ({len(users.store)} users of run "
                           f"{users.run_dir.name}); POST /api/recommend/user recommends for a user described by "
                           f"history item ids, profile fields and/or context text", field="user_id")
        profile = {k: user[k] for k in users.numeric + list(users.categorical) if user.get(k) is not None}
        return self._user_query(users, user["history"], profile, user.get("context") or None, "store", {}, user_id)

    def encode_user(self, history: list[str] | None, profile: dict | None, context: str | None) -> dict:
        """A user described in a request (not in the store) -> the user query; 422 for bad fields."""
        users = self._user_model(self)
        history = validate_history(history or [])
        record, unknown = users.validate_profile(profile)
        if context is not None and (not isinstance(context, str) or not context.strip()):
            raise InputError("context: expected a non-empty string", field="context")
        if not history and not record and context is None:
            raise InputError("give at least one of: history (item ids), profile (fields) or context (text)",
                             field="history")
        return self._user_query(users, history, record, context, "request", unknown)

    def describe(self) -> dict:
        return {**describe(self.encoder_config, self.vocab), "text_model": self.text_model,
                "version": version_label(self.version)}

    def health(self) -> dict:
        users = self.users
        return {"ok": True, "fields": list(self.encoder_config.fields), "text_search": self.text is not None,
                "users": users.describe() if users is not None else None}
