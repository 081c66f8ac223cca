"""The enrichment recipe's steps without Ray: vocabulary, prompts, validation, merge, withholding."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from recsys.config import ConfigError
from recsys.data.schema import ITEM_SCHEMA, attributes, attributes_to_dict, table_from_rows
from recsys.llm.enrich_job import (EnrichConfig, RulesAnswers, enrichment_schema, fill_rates, merge_answers,
                                   merge_item, prompt_batch, prompt_text, std_vocabulary, validate_batch,
                                   withhold_enrichment)
from recsys.llm.rules import STAND_IN

pytestmark = pytest.mark.timeout(60)


def item(item_id, std, re=None, title="", description=""):
    return {"item_id": item_id, "source": "generic", "category_path": ["Top", "Tee"], "category": "Tee",
            "std_attributes": attributes(std), "re_attributes": attributes(re or {}), "title": title,
            "description": description, "source_file": "catalog.csv"}


ITEMS = table_from_rows([
    item("a", {"colour": "Navy Blue", "gender": "Men"}, {"fabric": "Cotton"}, "Navy tee", "Ribbed collar; cotton jersey"),
    item("b", {"colour": "White"}, {}, "Women white tee", "Short sleeves, relaxed fit"),
    item("c", {"gender": "Women"}, {}, "Teal top", "Teal, navy-blue trim, slim fit"),
], ITEM_SCHEMA)


def cfg(**overrides) -> EnrichConfig:
    return EnrichConfig(catalog="catalog.csv", **({"re_fields": ["detail", "fit"]} | overrides))


def test_vocabulary_is_what_the_catalog_has():
    assert std_vocabulary(ITEMS) == {"colour": ["Navy Blue", "White"], "gender": ["Men", "Women"]}
    assert std_vocabulary(ITEMS, ["gender"], min_count=1) == {"gender": ["Men", "Women"]}
    with pytest.raises(ConfigError, match=r"\['size'\]: no values"):
        std_vocabulary(ITEMS, ["size"])
    with pytest.raises(ConfigError, match="both as STD and as RE"):
        enrichment_schema(cfg(re_fields=["colour"]), std_vocabulary(ITEMS))


@pytest.mark.parametrize("overrides, match", [({"unknown_std": "guess"}, "unknown_std"), ({"limit": 0}, "limit")])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        cfg(**overrides)
    with pytest.raises(ConfigError, match="exactly one of catalog"):
        EnrichConfig()


def test_rules_pipeline_fills_only_missing_std_values_from_the_vocabulary():
    schema = enrichment_schema(cfg(), std_vocabulary(ITEMS))
    rows = ITEMS.append_column("row", pa.array(range(3), pa.int64()))
    prompts = prompt_batch(rows, ["title", "description", "attributes"])
    assert prompts.column("text").to_pylist()[0].splitlines() == [
        "title: Navy tee", "description: Ribbed collar; cotton jersey",
        "attributes: colour: Navy Blue; gender: Men; fabric: Cotton"]
    answers = RulesAnswers(schema)(prompts)
    assert set(answers.column("backend").to_pylist()) == {STAND_IN}
    validated = validate_batch(answers, schema)
    enriched, quarantine, after, _ = merge_answers(ITEMS, validated, schema)
    assert enriched.num_rows == 3 and quarantine.num_rows == 0
    by_id = {r["item_id"]: r for r in enriched.to_pylist()}
    # b: gender found in the title ("Women"); c: colour "navy-blue" mapped onto "Navy Blue", "Teal" not invented.
    assert attributes_to_dict(by_id["b"]["std_attributes"]) == {"colour": ["White"], "gender": ["Women"]}
    assert attributes_to_dict(by_id["c"]["std_attributes"]) == {"gender": ["Women"], "colour": ["Navy Blue"]}
    assert by_id["a"]["enriched_fields"] == ["detail"]   # a had every STD value: nothing filled
    assert attributes_to_dict(by_id["c"]["enriched_values"])["fit"] == ["slim fit"]
    assert all(r["enriched_by"] == STAND_IN for r in by_id.values())
    assert fill_rates(ITEMS.to_pylist(), schema)["colour"] == pytest.approx(2 / 3, abs=1e-3)
    assert fill_rates(after, schema)["colour"] == 1.0
    # Withholding the additions gives the raw attributes back exactly.
    raw = withhold_enrichment(enriched)
    assert raw.schema == ITEM_SCHEMA
    assert raw.select(["std_attributes", "re_attributes"]).to_pylist() == \
        ITEMS.select(["std_attributes", "re_attributes"]).to_pylist()


def test_merge_keeps_present_values_unless_told_and_appends_only_new_phrases():
    row = item("a", {"colour": "White"}, {"fit": "Regular Fit"}, "Plain tee")
    record = {"colour": "Navy Blue", "fit": "regular fit; Plain tee; boxy cut", "detail": None}
    merged, added, _ = merge_item(row, record, ["colour"], ["fit", "detail"])
    assert attributes_to_dict(merged["std_attributes"]) == {"colour": ["White"]}
    assert attributes_to_dict(merged["re_attributes"]) == {"fit": ["Regular Fit", "boxy cut"]}
    assert added == {"fit": ["boxy cut"]}
    merged, added, _ = merge_item(row, record, ["colour"], [], overwrite_std=True)
    assert attributes_to_dict(merged["std_attributes"]) == {"colour": ["Navy Blue"]} and added == {"colour": ["Navy Blue"]}


def test_failed_answers_are_quarantined_with_their_reason():
    schema = enrichment_schema(cfg(), std_vocabulary(ITEMS))
    good = {"colour": None, "gender": None, "detail": "boxy", "fit": None}
    answers = pa.table({"row": [0, 1, 2], "item_id": ["a", "b", "c"],
                        "answer": [json.dumps(good), "not json", json.dumps(good | {"colour": "Teal"})],
                        "error": [None, None, None], "backend": ["x"] * 3})
    enriched, quarantine, after, _ = merge_answers(ITEMS, validate_batch(answers, schema), schema)
    assert enriched.column("item_id").to_pylist() == ["a"]
    assert quarantine.column("reason").to_pylist() == ["invalid_json", "schema_violation"]
    assert "'Teal'" in quarantine.column("detail").to_pylist()[1]
    assert len(after) == 3 and after[2] == ITEMS.to_pylist()[2]   # quarantined items count unchanged
    nulled = validate_batch(answers, schema, unknown_std="null")
    assert json.loads(nulled.column("record").to_pylist()[2])["colour"] is None


def test_re_phrases_must_be_read_from_the_item_text():
    """A real LLM may paraphrase or invent detail: an RE phrase is kept only when its words occur in
    the item's prompt text (title, description, attribute dump), any script."""
    from recsys.llm.enrich_job import grounded, words

    row = item("a", {"colour": "White"}, {}, "Plain tee", "Boxy cut, 우븐 레이스 trim. Made in Italy")
    source = words(prompt_text(row, ["title", "description", "attributes"]))
    assert {"boxy", "cut", "우븐", "레이스", "white", "plain"} <= source
    assert grounded("boxy cut", source, 1.0) and grounded("우븐 레이스", source, 1.0)
    assert not grounded("oversized silhouette", source, 1.0) and not grounded("boxy silhouette", source, 1.0)
    assert grounded("boxy silhouette", source, 0.5) and grounded("anything", source, 0.0)
    assert not grounded("3/4 sleeves", words("long sleeves"), 1.0)            # digits are words too
    assert grounded("Lamé finish", words("<p>Lam&eacute; finish</p>"), 1.0)  # entities and tags of the source
    # Korean phrases are compared as themselves, not emptied: both kept, each once.
    korean, added_ko, _ = merge_item(item("k", {}), {"detail": "우븐 레이스; 면 소재; 우븐  레이스"}, [], ["detail"])
    assert added_ko == {"detail": ["우븐 레이스", "면 소재"]}
    record = {"colour": None, "detail": "boxy cut; hand-stitched silk lining; 우븐 레이스 trim"}
    merged, added, dropped = merge_item(row, record, ["colour"], ["detail"], source_words=source)
    assert added == {"detail": ["boxy cut", "우븐 레이스 trim"]}
    assert dropped == {"detail": ["hand-stitched silk lining"]}
    schema = {"properties": {"detail": {"type": ["string", "null"]}}}
    answers = pa.table({"row": [0], "record": [json.dumps(record)], "backend": ["x"]})
    enriched, _, _, ungrounded = merge_answers(pa.Table.from_pylist([row]), answers, schema,
                                               text_fields=["title", "description", "attributes"])
    assert ungrounded == {"detail": 1}
    assert attributes_to_dict(enriched.to_pylist()[0]["enriched_values"]) == {"detail": ["boxy cut", "우븐 레이스 trim"]}
