import pytest

from recsys.data.schema import (INTERACTION_SCHEMA, ITEM_SCHEMA, QUARANTINE_SCHEMA, USER_SCHEMA, attributes,
                                attributes_to_dict, table_from_rows)


def test_every_field_is_documented():
    for schema in (ITEM_SCHEMA, INTERACTION_SCHEMA, USER_SCHEMA, QUARANTINE_SCHEMA):
        for field in schema:
            assert field.metadata and field.metadata[b"doc"], f"{field.name} has no doc"


def test_attributes_drop_empty_values_and_round_trip():
    stored = attributes({"color": "화이트", "material": ["우븐", ""], "fit": None, "print": []})
    assert stored == [{"field": "color", "values": ["화이트"]}, {"field": "material", "values": ["우븐"]}]
    assert attributes_to_dict(stored) == {"color": ["화이트"], "material": ["우븐"]}


def test_table_from_rows_fills_missing_and_names_bad_fields():
    table = table_from_rows([{"item_id": "1", "source": "x"}], ITEM_SCHEMA)
    assert table.schema == ITEM_SCHEMA and table.column("title").null_count == 1
    with pytest.raises(ValueError, match="field 'price'"):
        table_from_rows([{"item_id": "1", "source": "x", "price": "cheap"}], ITEM_SCHEMA)
    with pytest.raises(ValueError, match="field 'source' is required"):
        table_from_rows([{"item_id": "1"}], ITEM_SCHEMA)


def test_docs_hold_the_generated_schema_tables():
    from pathlib import Path

    from recsys.data.schema import SCHEMAS, schema_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    for name, schema in SCHEMAS.items():
        assert f"### {name}\n\n{schema_markdown(schema)}" in doc, f"docs/data.md is out of date for {name}"
