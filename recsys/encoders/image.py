"""Frozen image encoder: model and weights named in config, each model with its own preprocessing.

Two backends, chosen by ``backend`` (``auto`` picks from the name or the directory contents):

- ``open_clip``: built-in names with a pretrained tag or checkpoint file (``model: ViT-B-32``,
  ``pretrained: /path/to/open_clip_model.safetensors``), ``hf-hub:`` repos that carry an
  ``open_clip_config.json`` (Marqo's ``hf-hub:Marqo/marqo-fashionCLIP`` / ``marqo-fashionSigLIP``),
  and local directories holding ``open_clip_config.json`` + weights (``local-dir:/path`` or the path).
- ``transformers_clip``: transformers ``CLIPModel`` checkpoints, a hub id or a local directory, with
  the ``CLIPImageProcessor`` saved beside them. FashionCLIP is published this way:
  ``model: patrickjohncyh/fashion-clip``.
- ``handcrafted`` (``model: hand-crafted``), the offline default (this machine has no weights): a
  training-free encoder of colour, edge/texture and silhouette statistics
  (``recsys.encoders.handcrafted``). It carries visual meaning but is no learned model: every report
  that shows its numbers says ``pretrained: none (hand-crafted stand-in)``.
- An open_clip architecture name without ``pretrained`` (``model: ViT-M-32``) has weights drawn from
  a fixed seed: deterministic 512-d vectors with no visual meaning (every crop is ~0.99 cosine to
  every other), kept as the baseline the hand-crafted stand-in is measured against and reported as
  ``pretrained: none (random-weight stand-in)``.

Preprocessing is batched: the per-image steps that must see each picture (resize, crop) run in PIL
exactly as the model's own transform does; tensor conversion and normalisation run once per batch
(per-image ``ToTensor`` cost as much as a third of the ViT-M-32 forward pass on 2 CPUs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from recsys.config import ConfigError
from recsys.encoders.handcrafted import HAND_CRAFTED, HAND_CRAFTED_LABEL, HandCraftedEncoder

STAND_IN = "none (random-weight stand-in)"
BACKENDS = ("auto", "open_clip", "transformers_clip", "handcrafted")
LOCAL_DIR = "local-dir:"


@dataclass
class ImageEncoderConfig:
    model: str = HAND_CRAFTED        # hand-crafted | open_clip name / hf-hub: / local-dir: | transformers CLIP id or dir
    pretrained: str | None = None    # open_clip tag or checkpoint path; None with an open_clip name = seeded random weights
    backend: str = "auto"            # handcrafted | open_clip | transformers_clip | auto (from the name or directory)
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


def resolve_backend(config: ImageEncoderConfig) -> str:
    """``auto``: open_clip for ``hf-hub:``/``local-dir:`` names, directories with an open_clip
    config and built-in names; transformers for directories with a ``config.json`` and for hub
    ids (``org/name``) that are not open_clip schemas."""
    if config.backend not in BACKENDS:
        raise ValueError(f"image.backend: {config.backend!r}, expected one of {BACKENDS}")
    if config.backend != "auto":
        return config.backend
    name = config.model
    if name == HAND_CRAFTED:
        if config.pretrained:
            raise ConfigError(f"image.pretrained {config.pretrained!r}: the hand-crafted encoder has no weights; "
                              f"name the model they belong to in image.model (e.g. ViT-B-32)")
        return "handcrafted"
    if name.startswith(("hf-hub:", LOCAL_DIR)):
        return "open_clip"
    path = Path(name)
    if path.is_dir():
        if (path / "open_clip_config.json").is_file():
            return "open_clip"
        if (path / "config.json").is_file():
            return "transformers_clip"
        raise ValueError(f"image.model {name!r}: a directory with neither open_clip_config.json nor config.json")
    return "transformers_clip" if "/" in name else "open_clip"


def pretrained_label(config: ImageEncoderConfig) -> str:
    """What the vectors' weights are, as every report prints it."""
    backend = resolve_backend(config)
    if backend == "handcrafted":
        return HAND_CRAFTED_LABEL
    if backend == "transformers_clip":
        return config.model  # a CLIPModel checkpoint always carries its trained weights
    if config.pretrained:
        return config.pretrained
    if config.model.startswith("hf-hub:"):
        return "hf-hub"
    if config.model.startswith(LOCAL_DIR) or Path(config.model).is_dir():
        return config.model.removeprefix(LOCAL_DIR)
    return STAND_IN


class BatchedTransform:
    """An open_clip/torchvision eval transform split in two: the PIL steps before ``ToTensor`` run
    per image; ``ToTensor`` + ``Normalize`` run as one tensor op over the batch (same arithmetic).
    Transforms of any other shape fall back to the per-image transform."""

    def __init__(self, transform: Callable):
        steps = list(getattr(transform, "transforms", []))
        names = [type(step).__name__ for step in steps]
        at = next((i for i, name in enumerate(names) if name in ("ToTensor", "MaybeToTensor")), None)
        self.reference = transform
        self.fast = at is not None and names[at + 1:] == ["Normalize"]
        if self.fast:
            self.pil_steps = steps[:at]
            normalize = steps[at + 1]
            self.mean = torch.tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)

    def _pil(self, image: Image.Image) -> Image.Image:
        for step in self.pil_steps:
            image = step(image)
        return image

    def prepare(self, images: Sequence[Image.Image]) -> list:
        """The per-image PIL steps, as uint8 arrays (no torch: safe to run in several threads at
        once); an image whose steps do not end in RGB stays as it is for the reference transform."""
        if not self.fast:
            return list(images)
        prepared = [(im, self._pil(im)) for im in images]
        return [np.asarray(done) if done.mode == "RGB" else original for original, done in prepared]

    def stack(self, prepared: Sequence) -> torch.Tensor:
        """Prepared images -> (N, C, H, W) float32 pixels: one tensor op when all are same-size
        arrays, else image by image (the same arithmetic)."""
        if prepared and all(isinstance(p, np.ndarray) for p in prepared) and len({p.shape for p in prepared}) == 1:
            pixels = torch.from_numpy(np.stack(prepared)).permute(0, 3, 1, 2)
            return pixels.float().div_(255).sub_(self.mean).div_(self.std).contiguous()
        return torch.stack([self.stack([p])[0] if isinstance(p, np.ndarray) else self.reference(p) for p in prepared])

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> (N, C, H, W) float32 pixels."""
        return self.stack(self.prepare(images))


class _OpenClip:
    def __init__(self, config: ImageEncoderConfig):
        import open_clip

        name = config.model
        if not name.startswith(("hf-hub:", LOCAL_DIR)) and Path(name).is_dir():
            name = LOCAL_DIR + name  # a local open_clip directory, named by its path alone
        torch.manual_seed(config.seed)  # the stand-in's random weights are the same on every worker
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=config.pretrained)
        except Exception as exc:  # a hub download without network, a missing checkpoint, ...
            hint = (" A transformers CLIPModel repository (no open_clip_config.json, e.g. "
                    "patrickjohncyh/fashion-clip) loads with backend: transformers_clip and the id without "
                    "hf-hub:." if name.startswith("hf-hub:") else "")
            raise RuntimeError(f"image encoder {config.model!r} (pretrained={config.pretrained!r}) could not be "
                               f"loaded by open_clip: {exc}. Offline, use an architecture name with pretrained: "
                               f"null (stand-in), a local checkpoint path or a local directory.{hint}") from exc
        self.model, self.preprocess = model, preprocess
        self.pixels = BatchedTransform(preprocess)
        self.prepare, self.stack = self.pixels.prepare, self.pixels.stack
        self.dim = int(model.visual.output_dim)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class _TransformersClip:
    def __init__(self, config: ImageEncoderConfig):
        from transformers import CLIPImageProcessor, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(config.model)
            self.processor = CLIPImageProcessor.from_pretrained(config.model)
        except Exception as exc:
            raise RuntimeError(f"image encoder {config.model!r} could not be loaded as a transformers CLIPModel "
                               f"with its CLIPImageProcessor: {exc}. Offline, point image.model at a local "
                               f"directory (save_pretrained) or a populated Hugging Face cache.") from exc
        self.dim = int(self.model.config.projection_dim)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.pixels([image])[0]

    def prepare(self, images: Sequence[Image.Image]) -> list:
        return list(images)  # the processor works on the whole batch, in ``stack``

    def stack(self, prepared: Sequence[Image.Image]) -> torch.Tensor:
        return self.processor(images=list(prepared), return_tensors="pt")["pixel_values"]

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.stack(images)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        output = self.model.get_image_features(pixel_values=pixels)
        # transformers 5 returns the model output with the projected features as pooler_output; 4.x a tensor
        return output if isinstance(output, torch.Tensor) else output.pooler_output


class ImageEncoder:
    def __init__(self, config: ImageEncoderConfig = ImageEncoderConfig()):
        self.config = config
        self.backend = resolve_backend(config)
        self.device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._impl = {"open_clip": _OpenClip, "transformers_clip": _TransformersClip,
                      "handcrafted": lambda c: HandCraftedEncoder(c.seed)}[self.backend](config)
        self.model = self._impl.model.to(self.device).eval()
        self.preprocess = self._impl.preprocess  # the model's own per-image transform (reference)
        self.pretrained = pretrained_label(config)

    @property
    def dim(self) -> int:
        return self._impl.dim

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> the model's input pixels, preprocessed as a batch."""
        return self.stack(self.prepare(images))

    def prepare(self, images: Sequence[Image.Image]) -> list:
        """The per-image part of ``pixels`` (PIL only, thread-safe); ``stack`` finishes the batch."""
        return self._impl.prepare([im if im.mode == "RGB" else im.convert("RGB") for im in images])

    def stack(self, prepared: Sequence) -> torch.Tensor:
        """The batched part of ``pixels`` (torch ops: call it from the thread that runs the model)."""
        return self._impl.stack(prepared)

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Preprocessed pixels -> (N, dim) float32 L2-normalised vectors (the model pass alone)."""
        outputs = []
        for start in range(0, len(pixels), self.config.batch_size):
            with torch.autocast(device_type="cuda", enabled=self.device == "cuda"):
                vectors = self._impl.features(pixels[start:start + self.config.batch_size].to(self.device))
            outputs.append(torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, self.dim), dtype=np.float32)

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> (N, dim) float32 L2-normalised vectors."""
        outputs = [self.encode_pixels(self.pixels(images[start:start + self.config.batch_size]))
                   for start in range(0, len(images), self.config.batch_size)]
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
