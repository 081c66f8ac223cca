"""``evaluate_image_encoders`` on H&M's 400 real photos: the hand-crafted stand-in's nearest neighbours
share colour, product type and pattern far above chance, and above the random-weight ViT's."""
import json

import pytest

from recsys.config import ConfigError
from recsys.encoders.handcrafted import HAND_CRAFTED_LABEL
from recsys.encoders.image import STAND_IN
from recsys.eval.image_encoders import ImageEncoderEvalConfig, labelled_photos
from ray_jobs import evaluate_image_encoders


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.timeout(300)
def test_hand_crafted_neighbours_share_labels_on_real_photos(shared_data, tmp_path, capsys):
    hm = shared_data / "hm_pse_subset"
    cfg = ImageEncoderEvalConfig(images=str(hm / "images"), labels=str(hm / "articles.parquet"),
                                 output_root=str(tmp_path), grid_queries=2)
    report = evaluate_image_encoders.run(cfg)
    hand, vit = report["encoders"]["hand-crafted"], report["encoders"]["random ViT-M-32"]
    assert report["photos"] == 400 and report["unlabelled"] == []
    assert hand["pretrained"] == HAND_CRAFTED_LABEL and vit["pretrained"] == STAND_IN
    for attribute, chance in report["chance"].items():
        assert 0 < chance < 1 and hand["agreement"][attribute]["@5"] > chance + 0.1, attribute
    # product type is what a colour-blind random network cannot see; the spread is what it lacks
    assert hand["agreement"]["product_type_name"]["@5"] > vit["agreement"]["product_type_name"]["@5"] + 0.1
    assert hand["cosine_mean"] < vit["cosine_mean"]
    saved = json.loads((tmp_path.glob("*/metrics.json").__next__()).read_text())
    assert saved["encoders"]["hand-crafted"]["agreement"] == hand["agreement"]
    run_dir = tmp_path / report["run_dir"].rsplit("/", 1)[1]
    assert (run_dir / "agreement.png").is_file()
    assert len(list((run_dir / "neighbours" / "hand_crafted").glob("query_*.png"))) == 2
    printed = capsys.readouterr().out
    assert HAND_CRAFTED_LABEL in printed and "chance" in printed


@pytest.mark.real_data
def test_a_label_table_without_the_id_column_is_named(shared_data, tmp_path):
    hm = shared_data / "hm_pse_subset"
    with pytest.raises(ValueError, match=r"no column\(s\) \['sku'\]"):
        labelled_photos(hm / "images", hm / "articles.parquet", "sku", ["colour_group_name"])
    with pytest.raises(ConfigError, match="is not a directory"):
        labelled_photos(tmp_path / "nowhere", hm / "articles.parquet", "article_id", [])


@pytest.mark.timeout(300)
def test_demo_garment_crops_with_their_std_labels(tmp_path):
    """``images: null``: the crops of canonical items (a generated corpus, preprocessed), labelled by
    their STD fields; every item with a crop is a photo, and the drawn colour is found again."""
    import pyarrow.parquet as pq

    from recsys.encoders.image import ImageEncoderConfig
    from tests.serve_app.artifacts import preprocess_run

    items = preprocess_run(tmp_path, n_images=40) / "items"
    cfg = ImageEncoderEvalConfig(images=None, labels=str(items), attributes=["category", "color"],
                                 encoders={"hand-crafted": ImageEncoderConfig()}, output_root=str(tmp_path / "out"),
                                 grid_queries=1)
    report = evaluate_image_encoders.run(cfg)
    n_items = pq.read_table(items, columns=["item_id"]).num_rows
    assert report["photos"] == n_items
    colour = report["encoders"]["hand-crafted"]["agreement"]["color"]["@1"]
    assert colour > report["chance"]["color"] + 0.2
