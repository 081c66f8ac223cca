import dataclasses
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.data.catalogs import load_fashion_product_images, load_hm_articles
from recsys.data.item_features import (PRESETS, ItemFeatureConfig, ItemFeaturizer,
                                       fashion_product_images_features, featurize_items, hm_article_features,
                                       input_text, keywords, kfashion_features, records_to_items, token_counts)

ROWS = records_to_items([
    {"category_path": ["Apparel", "Shirts"], "std_attributes": {"colour": "White", "year": "2012"},
     "re_attributes": {"material": ["cotton", "linen"], "neck": "round", "sleeve": "short", "size": "M"},
     "description": "The shirt has a collar and 2 pockets, buttons", "title": "White Linen Shirt"},
    {"category_path": ["Apparel", "Tshirts"], "std_attributes": {"colour": "Black"}, "re_attributes": {},
     "description": None, "title": "Tee"},
    {"category_path": ["Footwear"], "std_attributes": {}, "re_attributes": {"material": "leather"}},
])
CONFIG = ItemFeatureConfig(hierarchy=["master", "article"], std_fields=["colour"], re_fields=["material", "neck"],
                           ignore_fields=["size"], re_parents={"neck": "colour"}, description_keywords=3,
                           max_title_tokens=2, max_std_tokens=4, max_re_tokens=6, num_buckets=97)
RE_OFFSET = 9  # STD block: master {Apparel 2, Footwear 3} -> 1..3, article {Shirts, Tshirts} -> 4..6, colour -> 7..9


def _re(field, value):
    """Shared-space id of a RE value, computed without HashedVocabulary."""
    return RE_OFFSET + 1 + zlib.crc32(f"{field}={value}".encode()) % 97


def test_keywords_drop_stopwords_numbers_and_repeats():
    assert keywords("The shirt has a collar, 2 pockets; the SHIRT's collar!", 10) == ["shirt", "collar", "pockets"]
    assert keywords("Blue round neck jersey", 2) == ["blue", "round"]
    assert keywords(None, 5) == [] and keywords("anything", 0) == []


def test_std_tokens_offsets_and_hierarchy_labels_by_hand():
    featurizer, features = featurize_items(ROWS, CONFIG)
    assert featurizer.std_offsets == {"master": 0, "article": 3, "colour": 6}
    assert featurizer.re_offset == RE_OFFSET and featurizer.vocab_size == 1 + 9 + 97
    assert featurizer.n_fields == 1 + 3 + 5  # pad + master/article/colour + material/neck/attribute/description/title
    # master Apparel=2, Footwear=3; article Shirts=2, Tshirts=3; colour Black=2, White=3; 1 = field's unknown
    assert features["std_ids"].tolist() == [[2, 3 + 2, 6 + 3, 0], [2, 3 + 3, 6 + 2, 0], [3, 3 + 1, 6 + 1, 0]]
    assert features["std_field_ids"].tolist() == [[1, 2, 3, 0]] * 3
    assert features["std_mask"].tolist() == [[True, True, True, False]] * 3
    assert features["hierarchy_labels"].tolist() == [[2, 2], [2, 3], [3, 1]]


def test_re_tokens_fields_parents_and_truncation_by_hand():
    _, features = featurize_items(ROWS, CONFIG)
    # row 0: material x2 (parent article, pos 1), neck (parent colour, pos 2), the unlisted "sleeve"
    # hashed under its own key with the catch-all field, then description keywords shirt, collar
    # ("pockets" is cut by max_re_tokens=6; "size" is ignored, "year" is no configured field).
    assert features["re_ids"][0].tolist() == [_re("material", "cotton"), _re("material", "linen"),
                                              _re("neck", "round"), _re("sleeve", "short"),
                                              _re("description", "shirt"), _re("description", "collar")]
    assert features["re_field_ids"][0].tolist() == [4, 4, 5, 6, 7, 7]
    assert features["re_parent_pos"][0].tolist() == [1, 1, 2, 1, 1, 1]
    assert features["re_mask"].sum(axis=1).tolist() == [6, 0, 1]
    assert features["re_ids"][1].tolist() == [0] * 6  # no RE at all: all padding
    assert features["re_ids"][2, 0] == _re("material", "leather") and features["re_parent_pos"][2, 0] == 1
    assert features["title_ids"].tolist() == [[_re("title", "white"), _re("title", "linen")],
                                              [_re("title", "tee"), 0], [0, 0]]
    assert features["title_field_ids"].tolist() == [[8, 8], [8, 0], [0, 0]]


def test_std_and_re_share_one_id_space_without_overlap():
    featurizer, features = featurize_items(ROWS, CONFIG)
    std = features["std_ids"][features["std_mask"]]
    re_ids = features["re_ids"][features["re_mask"]]
    assert std.min() >= 1 and std.max() <= featurizer.re_offset
    assert re_ids.min() > featurizer.re_offset and re_ids.max() < featurizer.vocab_size
    assert featurizer.std_token("colour", "White") == 9 and featurizer.re_token("neck", "round") == _re("neck", "round")


def test_truncated_parent_falls_back_to_finest_level():
    config = dataclasses.replace(CONFIG, max_std_tokens=2)
    _, features = featurize_items(ROWS, config)
    assert features["std_ids"][0].tolist() == [2, 5]  # colour cut off
    assert features["re_parent_pos"][0, 2] == 1  # neck's parent (colour) is gone -> articleType level


def test_unseen_values_are_unknown_and_save_load_round_trips(tmp_path):
    featurizer = ItemFeaturizer.fit(ROWS, CONFIG)
    featurizer.save(tmp_path / "item_features.json")
    loaded = ItemFeaturizer.load(tmp_path / "item_features.json")
    for key, value in featurizer.transform(ROWS).items():
        assert np.array_equal(loaded.transform(ROWS)[key], value), key
    new = records_to_items([{"category_path": ["Apparel", "Dresses"], "std_attributes": {"colour": "Purple"}}])
    assert loaded.transform(new)["std_ids"][0].tolist() == [2, 3 + 1, 6 + 1, 0]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="listed twice"):
        ItemFeatureConfig(hierarchy=["category"], std_fields=["colour"], re_fields=["colour"])
    with pytest.raises(ValueError, match="reserved"):
        ItemFeatureConfig(hierarchy=["category"], std_fields=[], re_fields=["description"])
    with pytest.raises(ValueError, match="not a STD field"):
        ItemFeatureConfig(hierarchy=["category"], std_fields=[], re_fields=["fit"],
                          re_parents={"fit": "nope"})
    with pytest.raises(ValueError, match="truncate"):
        ItemFeatureConfig(hierarchy=["a", "b"], std_fields=[], re_fields=[], max_std_tokens=1)


def test_kfashion_preset_moves_shape_fields_to_re_and_reads_styles():
    row = records_to_items([{"category_path": ["상의", "블라우스"], "styles": ["로맨틱"],
                             "std_attributes": {"category": "블라우스", "color": "화이트", "neckline": "라운드넥"},
                             "re_attributes": {"material": ["우븐", "레이스"]}}])
    config = kfashion_features(num_buckets=97)
    featurizer, features = featurize_items(row, config)
    fields = featurizer.vocab.field_index.fields
    std_fields = [fields[i - 1] for i in features["std_field_ids"][0] if i]
    re_fields = [fields[i - 1] for i in features["re_field_ids"][0] if i]
    assert std_fields == ["slot", "category", "color", "sub_color", "length", "sleeve_length", "styles", "sub_styles"]
    assert re_fields == ["material", "material", "neckline"]
    assert features["std_ids"][0, 6] == featurizer.std_token("styles", "로맨틱")
    assert set(PRESETS) == {"fashion_product_images", "hm", "kfashion"}


@pytest.mark.real_data
def test_fashion_product_images_first_500_rows(shared_data, tmp_path):
    source = shared_data / "fashion_product_images_styles_full/styles_full.parquet"
    pq.write_table(pq.read_table(source).slice(0, 500), tmp_path / "styles_500.parquet")
    table = load_fashion_product_images(tmp_path / "styles_500.parquet").table
    featurizer, features = featurize_items(table, fashion_product_images_features())
    config = featurizer.config
    assert features["std_ids"].shape == (500, 9) and features["re_ids"].shape == (500, 24)
    assert features["std_mask"].all()  # every STD field gives a token (unknown when absent)
    # hierarchy labels decode back to the table's category path
    inverse = {i: v for v, i in featurizer.vocab.std.tokens["articleType"].items()}
    assert [inverse[i] for i in features["hierarchy_labels"][:, 2]] == table.column("category").to_pylist()
    # description keywords give almost every item RE tokens although 84 of these rows have no articleAttributes
    assert sum(1 for a in table.column("re_attributes").to_pylist() if not a) > 50
    assert token_counts(features)["share_without_re"] < 0.02
    fields = featurizer.vocab.field_index
    present = {fields.fields[i - 1] for i in np.unique(features["re_field_ids"][features["re_mask"]])}
    assert {"fabric", "pattern", "sleeve_length", "fit", "neck", "attribute", "description"} <= present
    # occasion refines usage (position 6 = 3 hierarchy levels + gender, baseColour, season); the rest articleType
    occasion = (features["re_field_ids"] == fields["occasion"]) & features["re_mask"]
    others = (features["re_field_ids"] != fields["occasion"]) & features["re_mask"]
    assert occasion.any() and (features["re_parent_pos"][occasion] == 6).all()
    assert (features["re_parent_pos"][others] == len(config.hierarchy) - 1).all()
    # ignored logistics fields never become tokens
    rows = table.select(["re_attributes"]).to_pylist()
    for row, ids in zip(rows, features["re_ids"]):
        for attribute in row["re_attributes"]:
            if attribute["field"] == "body_or_garment_size":
                assert featurizer.re_token("body_or_garment_size", attribute["values"][0]) not in ids


@pytest.mark.real_data
def test_hm_articles_first_500_rows(shared_data, tmp_path):
    source = shared_data / "hm_pse_subset/articles.parquet"
    pq.write_table(pq.read_table(source).slice(0, 500), tmp_path / "articles_500.parquet")
    table = load_hm_articles(tmp_path / "articles_500.parquet").table
    featurizer, features = featurize_items(table, hm_article_features())
    fields = featurizer.vocab.field_index
    assert features["std_mask"].all() and features["hierarchy_labels"].shape == (500, 2)
    department = (features["re_field_ids"] == fields["department_name"]) & features["re_mask"]
    assert department.sum() == 500 and (features["re_parent_pos"][department] == 3).all()  # index_name
    assert (features["re_field_ids"] == fields["description"]).sum(axis=1).mean() > 8  # detail_desc keywords


def test_withhold_label_removes_the_label_level_finer_ones_and_copying_fields():
    from recsys.data.item_features import withhold_label

    rows = records_to_items([
        {"category_path": ["Apparel", "Shirts"], "std_attributes": {"colour": "White", "kind": "shirts"},
         "re_attributes": {"material": "linen", "neck": "round"}, "title": "White Shirt"},
        {"category_path": ["Apparel", "Tshirts"], "std_attributes": {"colour": "Black", "kind": "T-shirts"},
         "re_attributes": {"material": "cotton", "neck": "Tshirts"}, "title": "Tee"},
        {"category_path": ["Apparel", "Jeans"], "std_attributes": {"colour": "Blue", "kind": "jeans"},
         "re_attributes": {"material": "denim", "neck": "none", "dept": "Sneakers"}},
    ])
    config = ItemFeatureConfig(hierarchy=["master", "article"], std_fields=["colour", "kind"],
                               re_fields=["material", "neck"], re_parents={"neck": "article"})
    held_out = records_to_items([{"category_path": ["Shoes", "Sneakers"]}])   # a category no training item has
    leak_free, withheld = withhold_label(config, rows, name_items=rows + held_out)
    # "kind" equals the article on 3/3 items (normalised: "T-shirts" == "Tshirts"), "neck" on 1/3: kept,
    # but its value "Tshirts" and the catch-all's "Sneakers" name a withheld category: dropped.
    assert withheld == {"levels": ["article"], "fields": {"kind": 1.0}, "values": 4}
    assert leak_free.hierarchy == ["master"] and leak_free.std_fields == ["colour"]
    assert leak_free.re_fields == ["material", "neck"] and leak_free.ignore_fields == ["kind"]
    assert leak_free.re_parents == {"neck": "master"}  # its parent was withheld: the kept finest level
    assert leak_free.withheld_values == ["jeans", "shirts", "sneakers", "tshirts"]
    _, stricter = withhold_label(config, rows, copy_share=0.3)
    assert stricter["fields"] == {"kind": 1.0, "neck": 0.3333}
    # The featurized inputs hold no token of the label or its copies; labels still come from the full path.
    featurizer, features = featurize_items(rows, leak_free)
    assert featurizer.vocab.std.size("master") == 3 and "article" not in featurizer.config.std_all
    plain_featurizer, plain = featurize_items(rows, replace_values(leak_free))
    assert features["re_mask"][1].sum() == plain["re_mask"][1].sum() - 1   # neck=Tshirts gone
    assert features["re_mask"][2].sum() == plain["re_mask"][2].sum() - 1   # attribute dept=Sneakers gone
    assert input_text(rows[1], leak_free) == "Tee. Apparel. Black. cotton"  # title, master, colour, material
    assert input_text(rows[2], leak_free) == "Apparel. Blue. denim. none"
    with pytest.raises(ValueError, match="no category level"):
        withhold_label(config, rows, label_level=0)
    with pytest.raises(ValueError, match="not a level"):
        withhold_label(config, rows, label_level=2)


def replace_values(config):
    return dataclasses.replace(config, withheld_values=[])


def test_withhold_label_from_a_coarser_level_checks_copies_of_every_withheld_level_in_any_script():
    from recsys.data.item_features import withhold_label

    rows = records_to_items([
        {"category_path": ["상의", "니트", "카디건"], "std_attributes": {"종류": "카디건", "소재": "울"}},
        {"category_path": ["상의", "셔츠", "블라우스"], "std_attributes": {"종류": "블라우스", "소재": "면"}},
    ])
    config = ItemFeatureConfig(hierarchy=["slot", "group", "category"], std_fields=["종류", "소재"], re_fields=[])
    leak_free, withheld = withhold_label(config, rows, label_level=-2)
    # 종류 copies the finest level although the coarsest withheld one is "group".
    assert withheld == {"levels": ["group", "category"], "fields": {"종류": 1.0}, "values": 4}
    assert leak_free.hierarchy == ["slot"] and leak_free.std_fields == ["소재"]
