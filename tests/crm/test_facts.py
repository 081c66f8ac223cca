import numpy as np
import pytest

from recsys.crm.facts import FactIndex, HashingEmbedder, item_snippets
from recsys.data.schema import ITEM_SCHEMA, table_from_rows
from tests.crm.conftest import CATALOG


def test_item_snippets_ids_fields_and_texts():
    got = [(s.snippet_id, s.field, s.text) for s in item_snippets(CATALOG[0])]
    assert got == [("P1#0", "title", "블랙 플리츠 스커트"), ("P1#1", "category", "category: 하의 > 스커트"),
                   ("P1#2", "std:색상", "색상: 블랙"), ("P1#3", "std:기장", "기장: 미디"), ("P1#4", "re:소재", "소재: 울"),
                   ("P1#5", "styles", "styles: 페미닌"), ("P1#6", "description", "허리 밴딩으로 편안해요."),
                   ("P1#7", "description", "가을에 입기 좋아요.")]


def test_from_parquet_table_with_the_canonical_schema(catalog, tmp_path):
    rows = [{**r, "source": "kfashion"} for r in catalog]
    path = tmp_path / "items.parquet"
    import pyarrow.parquet as pq
    pq.write_table(table_from_rows(rows, ITEM_SCHEMA), path)
    index = FactIndex.from_rows(str(path), HashingEmbedder())
    assert index.item_ids == ["P1", "P2", "P3"] and len(index.snippets_of("P1")) == 8
    assert index.vocabulary.field_values["색상"] == ["블랙", "화이트", "네이비", "오프화이트"]


def test_retrieve_returns_only_the_asked_products_title_first(facts):
    got = facts.retrieve(["P2", "P1"], "가을 울 소재", per_item=2)
    assert list(got) == ["P2", "P1"]
    assert all(s.item_id == item for item, snippets in got.items() for s in snippets)
    assert [len(v) for v in got.values()] == [3, 3]            # title + 2 each
    assert got["P1"][0].field == "title" and got["P2"][0].field == "title"
    assert "P3" not in {s.item_id for v in got.values() for s in v}


def test_retrieve_ranks_by_the_goal(facts):
    assert facts.retrieve(["P1"], "소재: 울", per_item=1)["P1"][1].text == "소재: 울"
    assert facts.retrieve(["P1"], "기장: 미디", per_item=1)["P1"][1].text == "기장: 미디"


def test_retrieve_unknown_product_is_an_error(facts):
    with pytest.raises(KeyError, match="P9"):
        facts.retrieve(["P1", "P9"], "x", per_item=2)


def test_hashing_embedder_is_deterministic_unit_norm():
    a, b = HashingEmbedder(64)(["블랙 스커트", ""]), HashingEmbedder(64)(["블랙 스커트", ""])
    assert np.array_equal(a, b) and np.allclose(np.linalg.norm(a, axis=1), 1)


def test_retrieve_with_the_real_minilm_encoder():
    rows = [{"item_id": "A", "title": "Pleated skirt", "std_attributes": [{"field": "color", "values": ["black"]}],
             "re_attributes": [{"field": "material", "values": ["wool"]}],
             "description": "Elastic waistband. Fully lined. Dry clean only."},
            {"item_id": "B", "title": "Wool coat", "description": "Warm wool coat for winter."}]
    got = FactIndex.from_rows(rows).retrieve(["A"], "warm woollen fabric", per_item=1)
    assert [s.item_id for s in got["A"]] == ["A", "A"] and "wool" in got["A"][1].text
