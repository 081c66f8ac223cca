"""Image encoder loading and batched preprocessing, on tiny random-weight checkpoints built here (no download)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recsys.config import ConfigError
from recsys.encoders.image import (STAND_IN, ImageEncoder, ImageEncoderConfig, pretrained_label,
                                   resolve_backend)

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kfashion_samples"
TINY_OPEN_CLIP = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}
PREPROCESS = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bicubic", "resize_mode": "shortest"}


def pictures() -> list[Image.Image]:
    """Crops of the real K-Fashion samples when present, plus generated ones of other shapes."""
    real = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.jpg"))[:3]]
    crops = [im.crop((im.width // 4, im.height // 4, im.width // 2, im.height * 3 // 4)) for im in real]
    rng = np.random.default_rng(0)
    made = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(80, 50), (300, 410), (224, 224)]]
    return crops + made + [Image.new("L", (60, 90), 128)]


def unit(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).detach().numpy()


def test_batched_preprocessing_gives_the_reference_open_clip_vectors():
    encoder = ImageEncoder(ImageEncoderConfig(model="ViT-M-32", batch_size=4))
    images = pictures()
    reference = torch.stack([encoder.preprocess(im) for im in images])
    assert torch.allclose(encoder.pixels(images), reference, atol=1e-5)
    with torch.no_grad():
        expected = unit(encoder.model.encode_image(reference))
    vectors = encoder.encode(images)
    assert vectors.shape == (len(images), 512)
    assert (vectors * expected).sum(axis=1).min() > 0.999


def test_prepare_in_pieces_then_stack_equals_the_reference_transform():
    """The embed job prepares pieces of a batch in threads and stacks them in one: same pixels as
    the model's own transform, also when the batch mixes sizes and a picture the fast path skips."""
    encoder = ImageEncoder(ImageEncoderConfig(model="ViT-M-32", batch_size=4))
    images = pictures()
    pieces = [encoder.prepare(images[:1]), encoder.prepare(images[1:])]
    reference = torch.stack([encoder.preprocess(im) for im in images])
    assert torch.allclose(encoder.stack(pieces[0] + pieces[1]), reference, atol=1e-5)
    odd = encoder._impl.pixels.prepare(images[:1]) + [images[1].convert("RGB")]  # one array, one PIL image
    assert torch.allclose(encoder.stack(odd), reference[:2], atol=1e-5)


@pytest.fixture(scope="module")
def transformers_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    out = tmp_path_factory.mktemp("tiny_hf_clip")
    torch.manual_seed(0)
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(text_config={**tiny, "vocab_size": 99, "max_position_embeddings": 16},
                        vision_config={**tiny, "image_size": 32, "patch_size": 8}, projection_dim=24)
    CLIPModel(config).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                       image_mean=PREPROCESS["mean"], image_std=PREPROCESS["std"]).save_pretrained(out)
    return out


def test_transformers_clip_checkpoint_gives_the_library_image_features(transformers_dir):
    from transformers import CLIPImageProcessor, CLIPModel

    config = ImageEncoderConfig(model=str(transformers_dir), batch_size=3)
    encoder = ImageEncoder(config)
    assert encoder.backend == "transformers_clip" and encoder.dim == 24
    assert encoder.pretrained == str(transformers_dir)
    images = pictures()
    model = CLIPModel.from_pretrained(transformers_dir).eval()
    pixels = CLIPImageProcessor.from_pretrained(transformers_dir)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels)
    expected = unit(features if isinstance(features, torch.Tensor) else features.pooler_output)
    assert np.allclose(encoder.encode(images), expected, atol=1e-5)


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    import open_clip

    out = tmp_path_factory.mktemp("tiny_open_clip")
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": PREPROCESS}))
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{out}")  # no weights in the folder yet: random ones
    torch.save(model.state_dict(), out / "open_clip_pytorch_model.bin")
    return out


def reference_open_clip(name: str, images, **kwargs) -> np.ndarray:
    import open_clip

    torch.manual_seed(123)  # loaded weights must not depend on the seed
    model, _, preprocess = open_clip.create_model_and_transforms(name, **kwargs)
    with torch.no_grad():
        return unit(model.eval().encode_image(torch.stack([preprocess(im) for im in images])))


@pytest.mark.parametrize("prefix", ["", "local-dir:"])
def test_open_clip_directory_gives_the_library_image_features(open_clip_dir, prefix):
    config = ImageEncoderConfig(model=f"{prefix}{open_clip_dir}", seed=7, batch_size=3)
    encoder = ImageEncoder(config)
    assert encoder.backend == "open_clip" and encoder.dim == 24
    assert encoder.pretrained == str(open_clip_dir) != STAND_IN
    images = pictures()
    expected = reference_open_clip(f"local-dir:{open_clip_dir}", images)
    assert np.allclose(encoder.encode(images), expected, atol=1e-5)


def test_open_clip_architecture_with_a_checkpoint_file(open_clip_dir, tmp_path):
    import open_clip

    (tmp_path / "tiny-fashion-clip.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(tmp_path)
    checkpoint = str(open_clip_dir / "open_clip_pytorch_model.bin")
    encoder = ImageEncoder(ImageEncoderConfig(model="tiny-fashion-clip", pretrained=checkpoint))
    assert encoder.pretrained == checkpoint
    images = pictures()
    expected = reference_open_clip("tiny-fashion-clip", images, pretrained=checkpoint)
    assert np.allclose(encoder.encode(images), expected, atol=1e-5)


def test_backend_follows_the_config_or_the_name(transformers_dir, open_clip_dir, tmp_path):
    def backend(model, chosen="auto"):
        return resolve_backend(ImageEncoderConfig(model=model, backend=chosen))

    assert backend("ViT-M-32") == "open_clip" and backend("hf-hub:Marqo/marqo-fashionCLIP") == "open_clip"
    assert backend("patrickjohncyh/fashion-clip") == "transformers_clip"
    assert backend(str(transformers_dir)) == "transformers_clip" and backend(str(open_clip_dir)) == "open_clip"
    assert backend("hf-hub:some/repo", "transformers_clip") == "transformers_clip"
    with pytest.raises(ValueError, match="backend"):
        backend("ViT-M-32", "onnx")
    with pytest.raises(ValueError, match="neither"):
        backend(str(tmp_path))
    assert backend("hand-crafted") == "handcrafted" and backend("anything", "handcrafted") == "handcrafted"
    with pytest.raises(ConfigError, match="no weights"):  # a checkpoint must not be silently ignored
        resolve_backend(ImageEncoderConfig(pretrained="/ckpt/open_clip_model.safetensors"))
    assert pretrained_label(ImageEncoderConfig(model="ViT-M-32")) == STAND_IN == "none (random-weight stand-in)"
    assert pretrained_label(ImageEncoderConfig(model="hf-hub:Marqo/marqo-fashionSigLIP")) == "hf-hub"
    assert pretrained_label(ImageEncoderConfig(model="patrickjohncyh/fashion-clip")) == "patrickjohncyh/fashion-clip"


def test_unloadable_models_fail_with_a_hint(tmp_path):
    with pytest.raises(RuntimeError, match="transformers CLIPModel"):
        ImageEncoder(ImageEncoderConfig(model=str(tmp_path / "missing"), backend="transformers_clip"))
    with pytest.raises(RuntimeError, match="stand-in"):
        ImageEncoder(ImageEncoderConfig(model="ViT-M-32", pretrained=str(tmp_path / "missing.pt")))
