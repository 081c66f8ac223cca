import pandas as pd
import pytest

from recsys.data.catalogs import load_fashion_product_images, load_hm_articles, parse_article_attributes
from recsys.data.result import AdapterError
from recsys.data.schema import ITEM_SCHEMA, attributes_to_dict


@pytest.mark.real_data
@pytest.mark.slow
def test_fashion_product_images_full_catalog(shared_data):
    result = load_fashion_product_images(shared_data / "fashion_product_images_styles_full/styles_full.parquet")
    assert result.reconciliation() == {"source": "fashion_product_images", "read": 44441, "written": 44441,
                                       "quarantined": 0, "reconciles": True, "quarantine_reasons": {}}
    table = result.table
    assert table.schema == ITEM_SCHEMA
    assert len(set(table.column("category").to_pylist())) == 142  # articleTypes, per SOURCE.md
    first = table.slice(0, 1).to_pylist()[0]
    assert first["item_id"] == "1163" and first["category_path"] == ["Apparel", "Topwear", "Tshirts"]
    assert attributes_to_dict(first["std_attributes"])["brandName"] == ["Nike"]
    assert attributes_to_dict(first["re_attributes"])["fit"] == ["Regular Fit"]
    assert first["price"] == 895.0
    titles = table.column("title").to_pylist()
    assert titles.count("NA") == 7  # literal "NA" titles survive (EVAL.md)


@pytest.mark.real_data
@pytest.mark.slow
def test_fashion_product_images_csv(shared_data):
    result = load_fashion_product_images(shared_data / "fashion_product_images_styles_full/styles.csv")
    assert result.table.num_rows == 44441 and result.reconciliation()["reconciles"]
    assert result.table.column("description").null_count == 44441  # styles.csv has no description


@pytest.mark.real_data
def test_hm_articles(shared_data):
    result = load_hm_articles(shared_data / "hm_pse_subset/articles.parquet",
                              images_dir=shared_data / "hm_pse_subset/images")
    assert result.reconciliation()["read"] == 11800 and result.table.num_rows == 11800
    rows = {r["item_id"]: r for r in result.table.to_pylist()}
    stockings = rows["0111565001"]
    assert stockings["category_path"] == ["Socks & Tights", "Underwear Tights"]
    assert stockings["title"] == "20 den 1p Stockings"
    with_image = [r for r in rows.values() if r["image_path"]]
    assert 0 < len(with_image) <= 400


def test_bad_rows_are_quarantined_with_the_column_named(tmp_path):
    path = tmp_path / "styles.csv"
    pd.DataFrame({
        "id": ["1", "x", "1", "4", "5"], "gender": "Men", "masterCategory": ["Apparel", "Apparel", "Apparel", "", "Apparel"],
        "subCategory": "Topwear", "articleType": "Shirts", "baseColour": "Blue", "season": "Fall",
        "usage": "Casual", "productDisplayName": "Shirt",
        "articleAttributes": ['{"Fit": "Slim"}', "{}", "{}", "{}", "{not json"],
    }).to_csv(path, index=False)
    result = load_fashion_product_images(path)
    assert result.table.column("item_id").to_pylist() == ["1"]
    reasons = dict(zip(result.quarantine.column("record").to_pylist(), result.quarantine.column("reason").to_pylist()))
    assert reasons == {"row 1": "invalid_id", "row 2": "duplicate_id", "row 3": "missing_masterCategory",
                       "row 4": "invalid_attribute_json"}
    assert result.reconciliation()["reconciles"]
    details = " ".join(result.quarantine.column("detail").to_pylist())
    assert "column 'id'" in details and "column 'articleAttributes'" in details and str(path) in details


def test_missing_column_and_missing_file_raise_clear_errors(tmp_path):
    path = tmp_path / "styles.csv"
    pd.DataFrame({"id": [1], "gender": ["Men"]}).to_csv(path, index=False)
    with pytest.raises(AdapterError, match=r"missing column\(s\) \['masterCategory'"):
        load_fashion_product_images(path)
    with pytest.raises(AdapterError, match="no such file"):
        load_hm_articles(tmp_path / "articles.parquet")
    (tmp_path / "articles.json").write_text("{}")
    with pytest.raises(AdapterError, match="unsupported file type '.json'"):
        load_hm_articles(tmp_path / "articles.json")


def test_hm_csv_ids_get_their_leading_zero_back(tmp_path):
    path = tmp_path / "articles.csv"
    pd.DataFrame({"article_id": [108775015], "prod_name": ["Strap top"], "product_group_name": ["Garment Upper body"],
                  "product_type_name": ["Vest top"]}).to_csv(path, index=False)
    assert load_hm_articles(path).table.column("item_id").to_pylist() == ["0108775015"]


def test_article_attributes_parsing():
    assert parse_article_attributes('{"Sleeve Length": "Short Sleeves", "Fabric 2": "NA"}', "w") == {
        "sleeve_length": "Short Sleeves"}
    assert parse_article_attributes(None, "w") == {}
    with pytest.raises(ValueError, match="expected a JSON object"):
        parse_article_attributes("[1, 2]", "w")
