"""Ray Data actor pools for real: a tiny generated corpus -> preprocess -> image and text vectors."""
import numpy as np
import pyarrow.parquet as pq
import pytest

from ray_jobs.embed import EmbedConfig, run as embed
from ray_jobs.preprocess import PreprocessConfig, run as preprocess
from recsys.data.synthetic import SyntheticCorpusConfig, generate_corpus
from recsys.encoders.image import AugmentConfig, ImageEncoderConfig
from recsys.encoders.handcrafted import HAND_CRAFTED_LABEL

pytestmark = pytest.mark.ray


def test_embed_job_writes_unit_vectors_for_every_item_and_view(ray_session, tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(SyntheticCorpusConfig(out_dir=str(corpus), n_images=6, workers=1), progress=False)
    pre = preprocess(PreprocessConfig(labels=str(corpus / "labels"), images=str(corpus / "images"),
                                      output_root=str(tmp_path / "pre")))
    n_items = pre["garments"]["written"]
    report = embed(EmbedConfig(items=pre["outputs"]["items"], output_root=str(tmp_path / "emb"),
                               image=ImageEncoderConfig(batch_size=8), augment=AugmentConfig(views=2),
                               actors=1, batch_size=8))
    assert report["pretrained"] == HAND_CRAFTED_LABEL and report["image"]["unreadable"] == 0
    images = pq.read_table(f"{report['run_dir']}/image_embeddings")
    assert images.num_rows == 3 * n_items  # original + 2 augmented views
    assert sorted(set(images.column("view").to_pylist())) == [0, 1, 2]
    vectors = np.stack(images.column("vector").to_numpy(zero_copy_only=False))
    assert vectors.shape[1] == 512 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    texts = pq.read_table(f"{report['run_dir']}/text_embeddings")
    assert texts.num_rows == 2 * n_items and set(texts.column("source").to_pylist()) == {"title", "re_text"}
    assert len(texts.column("vector")[0]) == 384


def test_same_seed_gives_the_same_stand_in_vectors():
    from PIL import Image

    from recsys.encoders.image import ImageEncoder

    picture = Image.new("RGB", (64, 80), (200, 30, 30))
    first = ImageEncoder(ImageEncoderConfig(seed=3)).encode([picture])
    again = ImageEncoder(ImageEncoderConfig(seed=3)).encode([picture])
    other = ImageEncoder(ImageEncoderConfig(seed=4)).encode([picture])
    assert np.allclose(first, again) and not np.allclose(first, other)
