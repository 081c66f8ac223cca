"""The hand-crafted stand-in: deterministic, batch-independent, and its cosines follow colour,
silhouette and texture (drawn garments with hand-chosen differences)."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from recsys.encoders.handcrafted import HAND_CRAFTED_LABEL, HandCraftedFeatures, rgb_to_lab, square_pad
from recsys.encoders.image import ImageEncoder, ImageEncoderConfig, pretrained_label, resolve_backend

WHITE, GREY = (255, 255, 255), (232, 232, 232)


def garment(colour, shape="dress", background=WHITE, stripes=None, size=(120, 160), shift=0):
    """A flat garment drawing: ``dress`` (tall trapezoid), ``shirt`` (wide T) or ``trousers``."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    w, h = size
    x = shift
    if shape == "dress":
        draw.polygon([(x + 45, 15), (x + 75, 15), (x + 100, 150), (x + 20, 150)], fill=colour)
    elif shape == "shirt":
        draw.rectangle([x + 35, 40, x + 85, 120], fill=colour)
        draw.rectangle([x + 5, 40, x + 115, 70], fill=colour)
    else:
        draw.rectangle([x + 30, 15, x + 90, 40], fill=colour)
        draw.rectangle([x + 30, 40, x + 55, 150], fill=colour)
        draw.rectangle([x + 65, 40, x + 90, 150], fill=colour)
    if stripes:
        for y in range(0, h, 8):
            draw.line([(0, y), (w, y)], fill=stripes, width=3)
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).polygon([(x + 45, 15), (x + 75, 15), (x + 100, 150), (x + 20, 150)], fill=255)
        plain = Image.new("RGB", size, background)
        image = Image.composite(image, plain, mask)
    return image


@pytest.fixture(scope="module")
def encoder():
    return ImageEncoder(ImageEncoderConfig())


def cos(encoder, a, b) -> float:
    va, vb = encoder.encode([a, b])
    return float(va @ vb)


def test_default_is_the_hand_crafted_stand_in_and_says_so(encoder):
    assert resolve_backend(ImageEncoderConfig()) == "handcrafted"
    assert encoder.pretrained == pretrained_label(ImageEncoderConfig()) == HAND_CRAFTED_LABEL
    assert HAND_CRAFTED_LABEL == "none (hand-crafted stand-in)" and encoder.dim == 512


def test_vectors_are_unit_deterministic_and_independent_of_the_batch(encoder):
    images = [garment((200, 30, 30)), garment((30, 30, 200), "shirt"), garment((20, 20, 20), "trousers")]
    together = encoder.encode(images)
    alone = np.concatenate([encoder.encode([im]) for im in images])
    again = ImageEncoder(ImageEncoderConfig()).encode(images)
    assert together.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_array_equal(together, again)


def test_colour_decides_between_the_same_silhouette(encoder):
    red, dark_red, green = garment((210, 30, 30)), garment((150, 20, 25)), garment((30, 160, 60))
    assert cos(encoder, red, dark_red) > cos(encoder, red, green) + 0.2


def test_silhouette_decides_between_the_same_colour(encoder):
    dress, moved_dress = garment((40, 60, 170)), garment((40, 60, 170), shift=6)
    shirt, trousers = garment((40, 60, 170), "shirt"), garment((40, 60, 170), "trousers")
    same = cos(encoder, dress, moved_dress)
    assert same > cos(encoder, dress, shirt) + 0.1 and same > cos(encoder, dress, trousers) + 0.04


def test_stripes_move_a_garment_away_from_its_plain_twin(encoder):
    plain, plain_moved = garment((40, 60, 170)), garment((40, 60, 170), shift=4)
    striped = garment((40, 60, 170), stripes=(230, 230, 240))
    assert cos(encoder, plain, plain_moved) > cos(encoder, plain, striped) + 0.1


def test_background_shade_barely_matters(encoder):
    assert cos(encoder, garment((210, 30, 30)), garment((210, 30, 30), background=GREY)) > 0.95


def test_the_space_is_spread_unlike_a_random_vit(encoder):
    """Different garments are not all ~0.99 apart: the mean cosine of 6 distinct drawings stays low."""
    images = [garment(c, s) for c in [(210, 30, 30), (30, 160, 60)] for s in ("dress", "shirt", "trousers")]
    vectors = encoder.encode(images)
    off = (vectors @ vectors.T)[~np.eye(6, dtype=bool)]
    assert off.mean() < 0.6


def test_cielab_of_known_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).T.reshape(1, 3, 3, 1)
    lab = rgb_to_lab(rgb)[0, :, :, 0].T
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.1)  # sRGB red, D65


def test_the_projection_keeps_every_cosine():
    model = HandCraftedFeatures(dim=512, seed=3)
    projection = model.projection
    np.testing.assert_allclose((projection.T @ projection).numpy(), np.eye(projection.shape[1]), atol=1e-5)
    with pytest.raises(ValueError, match="at least"):
        HandCraftedFeatures(dim=64)


def test_square_pad_keeps_the_aspect_with_the_border_colour():
    tall = Image.new("RGB", (50, 100), GREY)
    ImageDraw.Draw(tall).rectangle([10, 10, 40, 90], fill=(0, 0, 0))
    padded = square_pad(tall, side=64)
    assert padded.shape == (64, 64, 3)
    assert tuple(padded[32, 2]) == GREY and tuple(padded[32, 32]) == (0, 0, 0)  # side margins take the border colour


def test_a_callers_autocast_changes_nothing(encoder):
    """The embed job wraps every encoder in autocast on CUDA; the hand-crafted one stays float32."""
    images = [garment((200, 30, 30)), garment((30, 30, 200), "shirt")]
    pixels = encoder.pixels(images)
    plain = encoder._impl.features(pixels)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        cast = encoder._impl.features(pixels)
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)


def test_rounding_noise_on_a_flat_image_changes_nothing():
    """A flat swatch's edge cells are empty: noise far below a visible edge (what a GPU's rounding
    adds to the Sobel response) must not turn into a full-weight orientation histogram."""
    model = HandCraftedFeatures()
    flat = torch.full((1, 3, 64, 64), 0.5)
    flat[:, 0] = 0.8                                          # a pink swatch, no edges at all
    noisy = flat + 1e-4 * torch.randn(flat.shape, generator=torch.Generator().manual_seed(0))
    a, b = (torch.nn.functional.normalize(model(x), dim=1) for x in (flat, noisy))
    assert float((a * b).sum()) > 0.999
