"""QueryEncoder: attribute JSON -> 512-d vector (the stage-2 JSON encoder, aligned to the item
images) and free text -> text vector (the embed run's sentence encoder, searched against the items'
text vectors). Both models come from the served version's runs; vocabularies ship with the model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.vocab import AttributeVocabulary
from serve_app.attributes import describe, validate_attributes
from serve_app.config import ServeAppConfig
from serve_app.deployments.base import Versioned
from serve_app.errors import InputError, Unavailable
from serve_app.versions import embed_run_config

MAX_TEXT_CHARS = 500


class _Models:
    def __init__(self, config: ServeAppConfig, version: dict, previous: "_Models | None"):
        from recsys.train_loops.alignment import load_encoder  # torch: only in this deployment's replicas

        checkpoints = Path(version["json_encoder_run"]) / "checkpoints"
        self.encoder = load_encoder(str(checkpoints / "best_model.pt"))
        self.vocab = AttributeVocabulary.load(checkpoints / "vocab.json")
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


class QueryEncoder(Versioned):
    def __init__(self, config: ServeAppConfig):
        import torch

        super().__init__(config)
        torch.set_num_threads(1)
        self.models = self._load(self.version)

    def _load(self, version: dict) -> _Models:
        return _Models(self.config, version, getattr(self, "models", None))

    def _swap(self, version: dict, state: _Models) -> None:
        self.models = state

    def encode_attributes(self, attributes) -> dict:
        """-> {"vector": (512,), "record": validated query, "unknown_values": {field: [values]}}."""
        from recsys.models.json_encoder import featurize
        from recsys.train_loops.alignment import encode_features

        self.follow_pin()
        models = self.models
        record, unknown = validate_attributes(attributes, models.encoder_config, models.vocab)
        if not record:
            raise InputError(f"attributes: give at least one of {list(models.encoder_config.fields)}",
                             field="attributes")
        features = featurize(models.vocab, [record], models.encoder_config)
        vector = encode_features(models.encoder, features)[0].astype(np.float32)
        return {"vector": vector, "record": record, "unknown_values": unknown}

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.follow_pin()
        models = self.models
        if models.text is None:
            raise Unavailable("free-text search is not available: the served embed run has no text embeddings "
                              "(or text.enabled is false)", code="text_search_unavailable")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InputError("text: expected a non-empty string", field="text")
            if len(text) > MAX_TEXT_CHARS:
                raise InputError(f"text: at most {MAX_TEXT_CHARS} characters, got {len(text)}", field="text")
        return models.text.encode(texts)

    def describe(self) -> dict:
        models = self.models
        return {**describe(models.encoder_config, models.vocab), "text_model": models.text_model,
                "version": self.version_info()}

    def health(self) -> dict:
        return {"ok": True, "fields": list(self.models.encoder_config.fields),
                "text_search": self.models.text is not None, "version": self.version_info()}
