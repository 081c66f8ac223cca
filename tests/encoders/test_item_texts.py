"""Which text the embed job encodes for each item and source."""
import pyarrow as pa

from recsys.encoders.text import item_texts


def test_item_texts_reads_a_text_column_or_joins_the_re_values():
    items = pa.table({"title": ["린넨 셔츠", None],
                      "re_attributes": [[{"field": "소재", "values": ["우븐", "레이스"]},
                                         {"field": "프린트", "values": ["도트"]}], None]})
    assert item_texts(items, "title") == ["린넨 셔츠", ""]
    assert item_texts(items, "re_text") == ["우븐 레이스 도트", ""]
