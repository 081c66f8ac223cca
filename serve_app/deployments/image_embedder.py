"""ImageEmbedder: uploaded image bytes -> vector in the indexed item space (any ``recsys.encoders.image`` backend).

The encoder is the one the embed run used (its ``config.yaml``), unless ``image.model`` in the
serve config names another, so an uploaded photo is comparable with the item vectors. Offline the
default is the hand-crafted stand-in, reported as ``pretrained: none (hand-crafted stand-in)``.
"""
from __future__ import annotations

import io
import zlib
from dataclasses import asdict, dataclass, fields

import numpy as np

from serve_app.config import ServeAppConfig
from serve_app.deployments.base import Versioned
from serve_app.uploads import decode_image
from serve_app.versions import embed_run_config, version_label

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


@dataclass
class _Encoder:
    version: dict
    settings: object      # recsys.encoders.image.ImageEncoderConfig
    encoder: object       # recsys.encoders.image.ImageEncoder


class ImageEmbedder(Versioned):
    """Its own deployment: the heaviest model per request (GPU-bound on a cluster, ``num_gpus`` in
    configs/serve.yaml), scaled on upload traffic alone."""

    def __init__(self, config: ServeAppConfig, version: dict | None = None):
        import torch

        torch.set_num_threads(max(1, config.image.threads))
        super().__init__(config, version)

    def _load(self, version: dict, previous: _Encoder | None) -> _Encoder:
        from recsys.encoders.image import ImageEncoder  # torch/open_clip: only in this deployment's replicas

        wanted = encoder_config(self.config, version)
        if previous is not None and previous.settings == wanted:
            return _Encoder(version, wanted, previous.encoder)  # same weights: only the version label moves
        return _Encoder(version, wanted, ImageEncoder(wanted))

    def _image(self, data: bytes, what: str):
        return decode_image(data, self.config.uploads, what)

    def embed(self, data: bytes, what: str = "upload") -> dict:
        """Validate and embed one uploaded image (raises InputError for unusable bytes)."""
        state = self.state
        image, fmt = self._image(data, what)
        vector = state.encoder.encode([image])[0].astype(np.float32)
        return {"vector": vector, "width": image.width, "height": image.height, "format": fmt,
                "extension": EXTENSIONS.get(fmt, "img"), "pretrained": state.encoder.pretrained,
                "embed_run": version_label(state.version)["embed_run"]}

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

        state = self.state
        return {"model": state.settings.model, "pretrained": pretrained_label(state.settings),
                "dim": state.encoder.dim, "version": self.version_info()}

    def health(self) -> dict:
        return {"ok": True, **self.info()}

