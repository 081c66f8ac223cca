"""ImageEmbedder: uploaded image bytes -> vector in the indexed item space (open_clip or transformers CLIP).

The encoder is the one the embed run used (its ``config.yaml``), unless ``image.model`` in the
serve config names another, so an uploaded photo is comparable with the item vectors. Offline the
default is the seeded ViT-M-32 stand-in, reported as ``pretrained: none (stand-in)``.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import asdict, fields

import numpy as np

from serve_app.config import ServeAppConfig
from serve_app.deployments.base import Versioned
from serve_app.uploads import decode_image
from serve_app.versions import embed_run_config

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


def encoder_config(config: ServeAppConfig, version: dict):
    from recsys.encoders.image import ImageEncoderConfig

    from_run = embed_run_config(version).get("image") or {}
    known = {f.name for f in fields(ImageEncoderConfig)}
    settings = {k: v for k, v in from_run.items() if k in known}
    if config.image.model is not None:
        settings["backend"] = "auto"  # another model: its backend is found from its own name
    for key in ("model", "pretrained", "seed", "backend"):
        value = getattr(config.image, key, None)  # serve settings may name no backend
        if value is not None:
            settings[key] = value
    settings["batch_size"] = 8
    return ImageEncoderConfig(**settings)


class ImageEmbedder(Versioned):
    def __init__(self, config: ServeAppConfig):
        import torch

        super().__init__(config)
        torch.set_num_threads(max(1, config.image.threads))
        self.encoder_config, self.encoder = self._load(self.version)

    def _load(self, version: dict):
        from recsys.encoders.image import ImageEncoder  # torch/open_clip: only in this deployment's replicas

        wanted = encoder_config(self.config, version)
        current = getattr(self, "encoder_config", None)
        if current == wanted:
            return current, self.encoder
        return wanted, ImageEncoder(wanted)

    def _swap(self, version: dict, state) -> None:
        self.encoder_config, self.encoder = state  # one tuple unpack; requests read self.encoder once

    def _image(self, data: bytes, what: str):
        return decode_image(data, self.config.uploads, what)

    def embed(self, data: bytes, what: str = "upload") -> dict:
        """Validate and embed one uploaded image (raises InputError for unusable bytes)."""
        self.follow_pin()
        image, fmt = self._image(data, what)
        encoder = self.encoder
        vector = encoder.encode([image])[0].astype(np.float32)
        return {"vector": vector, "width": image.width, "height": image.height, "format": fmt,
                "extension": EXTENSIONS.get(fmt, "img"), "pretrained": encoder.pretrained}

    def augmented_view(self, data: bytes, key: str, view: int, augment: dict | None = None) -> bytes:
        """One augmented training view of an item image, as JPEG (for the KPI dashboard)."""
        from recsys.encoders.image import AugmentConfig, augmented_views

        settings = AugmentConfig(**{**asdict(AugmentConfig()), **(augment or {}), "views": view})
        image, _ = self._image(data, "item image")
        picture = augmented_views(image, settings, zlib.crc32(key.encode()))[view - 1] if view else image
        out = io.BytesIO()
        picture.convert("RGB").save(out, format="JPEG", quality=85)
        return out.getvalue()

    def info(self) -> dict:
        from recsys.encoders.image import pretrained_label

        return {"model": self.encoder_config.model, "pretrained": pretrained_label(self.encoder_config),
                "dim": self.encoder.dim, "version": self.version_info()}

    def health(self) -> dict:
        return {"ok": True, **self.info()}

