"""Frozen open_clip image encoder: model and weights named in config.

- FashionCLIP: ``model: hf-hub:patrickjohncyh/fashion-clip`` (needs the Hugging Face hub or its cache).
- Any open_clip architecture with a pretrained tag or a local checkpoint: ``model: ViT-B-32``,
  ``pretrained: /path/to/open_clip_model.safetensors``.
- Offline default (this machine has no weights): ``ViT-M-32`` with weights drawn from a fixed seed.
  It is a stand-in: its vectors are deterministic and 512-d but carry no learned visual meaning,
  and every report that shows its numbers says ``pretrained: none (stand-in)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

STAND_IN = "none (stand-in)"


@dataclass
class ImageEncoderConfig:
    model: str = "ViT-M-32"
    pretrained: str | None = None    # open_clip tag or checkpoint path; None = seeded random weights
    seed: int = 0
    batch_size: int = 32
    device: str | None = None        # None: cuda when available


@dataclass
class AugmentConfig:
    """Training-view augmentation of crops (K views per crop, embedded once, extra positives)."""
    views: int = 0                   # 0 = off
    rotation_degrees: float = 15.0
    color_jitter: float = 0.2
    crop_scale_min: float = 0.8
    seed: int = 0


def pretrained_label(config: ImageEncoderConfig) -> str:
    if config.pretrained:
        return config.pretrained
    return "hf-hub" if config.model.startswith("hf-hub:") else STAND_IN


class ImageEncoder:
    def __init__(self, config: ImageEncoderConfig = ImageEncoderConfig()):
        import open_clip

        self.config = config
        self.device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch.manual_seed(config.seed)  # the stand-in's random weights are the same on every worker
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(config.model, pretrained=config.pretrained)
        except Exception as exc:  # a hub download without network, a missing checkpoint, ...
            raise RuntimeError(f"image encoder {config.model!r} (pretrained={config.pretrained!r}) could not be "
                               f"loaded: {exc}. Offline, use an architecture name with pretrained: null "
                               f"(stand-in) or a local checkpoint path.") from exc
        self.model = model.to(self.device).eval()
        self.preprocess = preprocess
        self.pretrained = pretrained_label(config)

    @property
    def dim(self) -> int:
        return int(self.model.visual.output_dim)

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> (N, dim) float32 L2-normalised vectors."""
        outputs = []
        for start in range(0, len(images), self.config.batch_size):
            pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images[start:start + self.config.batch_size]])
            with torch.autocast(device_type="cuda", enabled=self.device == "cuda"):
                vectors = self.model.encode_image(pixels.to(self.device))
            outputs.append(torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, self.dim), dtype=np.float32)


def augmented_views(image: Image.Image, config: AugmentConfig, key: int) -> list[Image.Image]:
    """``config.views`` random views of one crop (rotation, flip, colour jitter, resized crop),
    seeded by ``key`` so re-running the job gives the same views."""
    from torchvision import transforms

    transform = transforms.Compose([
        transforms.RandomRotation(config.rotation_degrees, fill=255),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=config.color_jitter, contrast=config.color_jitter,
                               saturation=config.color_jitter),
        transforms.RandomResizedCrop(size=image.size[::-1], scale=(config.crop_scale_min, 1.0), antialias=True),
    ])
    torch.manual_seed(config.seed * 1_000_003 + key)
    return [transform(image) for _ in range(config.views)]
