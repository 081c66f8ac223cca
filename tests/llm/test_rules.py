"""The offline stand-in backend: deterministic extraction and template messages, labelled as such."""
from __future__ import annotations

import pytest

from recsys.llm import STAND_IN, STAND_IN_LABEL, LLMSchemaViolation, make_client
from recsys.llm.enrichment import build_messages, build_schema, validate_answer
from recsys.llm.protocol import BACKEND_KEY
from recsys.llm.rules import extract, find_vocabulary, normalise, phrases

pytestmark = pytest.mark.timeout(60)

SCHEMA = build_schema({"colour": ["Blue", "Navy Blue", "White"], "articleType": ["Shirts", "Jeans"]},
                      ["detail", "sleeve"])


def test_longest_vocabulary_match_wins_and_whole_words_only():
    assert find_vocabulary("Men NAVY-blue shirts, white buttons", ["Blue", "Navy Blue", "White", "Shirts"]) == \
        ["Navy Blue", "Shirts", "White", "Blue"]
    assert find_vocabulary("Bluetooth speaker", ["Blue"]) == []


def test_phrases_strip_html_and_deduplicate():
    assert phrases("<p>Slim fit, slim FIT; has two pockets</p> x") == ["Slim fit", "has two pockets"]


def test_extract_fills_found_values_and_null_otherwise():
    answer = extract("Navy Blue denim shirt, long sleeves, button-down collar", SCHEMA)
    assert answer["colour"] == "Navy Blue"
    assert answer["articleType"] is None   # "shirt" is not the vocabulary's "Shirts": no guess
    assert answer["sleeve"] == "long sleeves"   # RE field named after a word of the phrase
    assert answer["detail"] == "Navy Blue denim shirt; long sleeves; button-down collar"


def test_required_non_nullable_field_without_evidence_is_a_violation():
    schema = {"type": "object", "required": ["colour"], "properties": {"colour": {"type": "string", "enum": ["Red"]}}}
    with pytest.raises(LLMSchemaViolation, match="found no value"):
        extract("a blue shirt", schema)


def test_client_reads_only_the_item_block_and_labels_its_answers():
    client = make_client()
    messages = build_messages({"name": "White jeans"}, ["name"], SCHEMA)
    assert "Navy Blue" in messages[1]["content"]   # the prompt lists the vocabulary ...
    answer = client.complete(messages, SCHEMA)
    assert answer["colour"] == "White"             # ... but only the item text is evidence
    assert answer[BACKEND_KEY] == STAND_IN == client.backend_label
    record, reason = validate_answer(answer, SCHEMA)
    assert reason is None and record["backend"] == "rules (stand-in, no LLM)"


@pytest.mark.parametrize("tone, opener", [("friendly", "Hi there"), ("professional", "We are pleased"),
                                          ("trendy", "New season")])
def test_template_writer_says_it_is_a_stand_in(tone, opener):
    text = make_client().complete([{"role": "user", "content": f"tone: {tone}\n<facts>\n- Navy shirt\n- cotton\n</facts>"}])
    assert text.startswith(f"[{STAND_IN_LABEL}] {opener}") and text.endswith("Navy shirt / cotton")


@pytest.mark.real_data
@pytest.mark.timeout(120)
def test_extracts_std_values_present_in_real_fashion_product_texts(shared_data):
    path = shared_data / "fashion_product_images_styles_full" / "styles_full.parquet"
    if not path.exists():
        pytest.skip(f"{path} is absent: the Fashion Product Images catalog is needed for this test")
    import pyarrow.parquet as pq

    std = ["gender", "baseColour", "articleType", "usage"]
    table = pq.read_table(path, columns=["id", "productDisplayName", "description", *std])
    vocab = {f: sorted({v for v in table.column(f).to_pylist() if v and v != "NA"}) for f in std}
    schema = build_schema(vocab, ["detail"])
    client = make_client()
    filled = {f: 0 for f in std}
    rows = table.slice(0, 40).to_pylist()
    for row in rows:
        answer = client.complete(build_messages(row, ["productDisplayName", "description"], schema), schema)
        record, reason = validate_answer(answer, schema)
        assert reason is None, reason
        text = normalise(f"{row['productDisplayName']} {row['description'] or ''}")
        for f in std:
            if record[f] is not None:   # every value found is in the text and in the vocabulary
                filled[f] += 1
                assert f" {normalise(record[f])} " in f" {text} " and record[f] in vocab[f]
        assert record["backend"] == STAND_IN
    # Myntra names say gender and colour ("Nike Men Blue T20 Indian Cricket Jersey"); the stand-in finds them
    assert filled["gender"] >= 20 and filled["baseColour"] >= 20, filled
    colour_hits = sum(r["baseColour"] in find_vocabulary(r["productDisplayName"], vocab["baseColour"]) for r in rows)
    assert colour_hits >= 20
