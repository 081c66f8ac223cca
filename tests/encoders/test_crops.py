"""The crop-embedding recipe the embed job's actors run."""
import numpy as np
from PIL import Image

from recsys.encoders.crops import embed_crops
from recsys.encoders.image import AugmentConfig, ImageEncoder, ImageEncoderConfig


def test_embed_crops_gives_unit_vectors_per_view_and_rows_for_unusable_crops(tmp_path):
    paths = []
    for i, colour in enumerate([(200, 30, 30), (20, 160, 40), (30, 30, 200)]):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.new("RGB", (60 + 10 * i, 90), colour).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    encoder = ImageEncoder(ImageEncoderConfig(batch_size=4))
    ids = ["a", "b", "gone", "c", "broken", "none"]
    table = embed_crops(encoder, ids, [paths[0], paths[1], str(tmp_path / "gone.jpg"), paths[2],
                                       str(tmp_path / "broken.jpg"), None], AugmentConfig(views=1))
    rows = table.to_pylist()
    good = [r for r in rows if r["error"] is None]
    assert [(r["item_id"], r["view"]) for r in good] == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]
    assert sorted(r["item_id"] for r in rows if r["error"]) == ["broken", "gone", "none"]
    vectors = np.array([r["vector"] for r in good])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # the original view is the plain encoder's vector of the crop
    assert np.allclose(vectors[0], encoder.encode([Image.open(paths[0]).convert("RGB")])[0], atol=1e-5)


def test_embed_crops_keeps_item_order_whatever_the_decode_threads(tmp_path):
    """Model batches are decoded in pieces by a thread pool: rows keep the input order."""
    paths = []
    for i in range(11):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.new("RGB", (50 + 7 * i, 80), (20 * i, 100, 200 - 15 * i)).save(paths[-1])
    encoder = ImageEncoder(ImageEncoderConfig(batch_size=4))
    ids = [f"i{i}" for i in range(11)]
    one = embed_crops(encoder, ids, paths, decode_threads=1)
    three = embed_crops(encoder, ids, paths, decode_threads=3)
    assert one.column("item_id").to_pylist() == three.column("item_id").to_pylist() == ids
    assert np.allclose(np.array(one.column("vector").to_pylist()), np.array(three.column("vector").to_pylist()),
                       atol=1e-5)
