"""``ray_jobs.enrich`` end to end on Ray Data: the rules stand-in on a generated and on the real
catalogs, and the OpenAI-compatible path against the fault-injecting loopback server."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_jobs.enrich import main, run
from recsys.data.catalogs import load_item_catalog
from recsys.data.schema import QUARANTINE_SCHEMA, attributes_to_dict
from recsys.llm import LLMConfig
from recsys.llm.enrich_job import ENRICHED_ITEM_SCHEMA, EnrichConfig, std_vocabulary, withhold_enrichment
from recsys.llm.rules import STAND_IN
from tests.llm.fake_openai_server import FakeOpenAIServer, last_user_content

COLOURS = ["Navy Blue", "Blue", "White", "Black"]


def write_catalog(path: Path, n: int = 40) -> Path:
    """A generic CSV: every 4th row lacks its colour, which its description names (sometimes as
    'navy-blue', sometimes as 'Teal', a colour the catalog does not have); every 3rd its gender."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sku", "dept", "kind", "colour", "gender", "name", "desc"])
        for i in range(n):
            colour = COLOURS[i % len(COLOURS)]
            said = "Teal" if i % 8 == 7 else ("navy-blue" if i % 8 == 3 else colour)
            writer.writerow([f"s{i}", "Apparel", "Tee" if i % 2 else "Shirt", "" if i % 4 == 3 else colour,
                             "Men" if i % 3 else "", f"Basic tee {i}",
                             f"{said} cotton tee for men, regular fit, ribbed crew neck"])
    return path


def generic_config(catalog: Path, out: Path, **overrides) -> EnrichConfig:
    return EnrichConfig(**{"catalog": str(catalog), "hierarchy": ["dept", "kind"], "catalog_std_fields": ["colour", "gender"],
                           "id_col": "sku", "title_col": "name", "description_col": "desc",
                           "re_fields": ["detail", "fit", "neck"], "output_root": str(out), "batch_size": 8} | overrides)


def run_dir_of(report: dict) -> Path:
    return Path(report["run_dir"])


def assert_reconciles(report: dict) -> None:
    counts = report["items"]
    assert counts["reconciles"] and counts["read"] == counts["enriched"] + counts["quarantined"]
    saved = json.loads((run_dir_of(report) / "reconciliation.json").read_text())
    assert saved["reconciles"] and saved["backend"] == report["backend"]
    items = pq.read_table(report["outputs"]["items"])
    assert items.num_rows == counts["enriched"] and items.schema.names == ENRICHED_ITEM_SCHEMA.names
    assert pq.read_table(report["outputs"]["quarantine"]).num_rows == counts["quarantined"]


def assert_std_within_vocabulary(report: dict, vocabulary: dict) -> None:
    for row in pq.read_table(report["outputs"]["items"], columns=["std_attributes"]).to_pylist():
        for field, values in attributes_to_dict(row["std_attributes"]).items():
            assert set(values) <= set(vocabulary.get(field, values)), (field, values)


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_rules_backend_fills_missing_values_from_the_vocabulary(ray_session, tmp_path, capsys):
    catalog = write_catalog(tmp_path / "catalog.csv")
    report = main(["--config", "configs/enrich.yaml", "--set", f"catalog={catalog}", "--set", "hierarchy=[dept, kind]",
                   "--set", "catalog_std_fields=[colour, gender]", "--set", "id_col=sku", "--set", "title_col=name",
                   "--set", "description_col=desc", "--set", "re_fields=[detail, fit, neck]",
                   "--set", f"output_root={tmp_path / 'out'}", "--set", "batch_size=8"])
    assert report["backend"] == STAND_IN and report["items"]["read"] == 40
    assert_reconciles(report)
    assert report["items"]["quarantined"] == 0
    fields = report["fields"]
    assert fields["colour"]["before"] == 0.75 and fields["colour"]["after"] == 0.875   # 'Teal' rows stay empty
    assert fields["gender"]["before"] < fields["gender"]["after"] == 1.0                # "for men"
    assert fields["colour"]["vocabulary"] == 3   # Black is never present and fields["gender"]["vocabulary"] == 1
    assert fields["fit"]["after"] == 1.0 and fields["neck"]["after"] == 1.0
    assert_std_within_vocabulary(report, {"colour": COLOURS, "gender": ["Men"]})
    items = {r["item_id"]: r for r in pq.read_table(report["outputs"]["items"]).to_pylist()}
    assert attributes_to_dict(items["s3"]["std_attributes"])["colour"] == ["Navy Blue"]   # 'navy-blue' mapped
    assert "colour" not in attributes_to_dict(items["s7"]["std_attributes"])               # 'Teal' never invented
    assert attributes_to_dict(items["s1"]["std_attributes"])["colour"] == ["Blue"]       # present: kept
    assert "colour" in items["s3"]["enriched_fields"] and "colour" not in items["s1"]["enriched_fields"]
    raw = {r["item_id"]: attributes_to_dict(r["std_attributes"])
           for r in withhold_enrichment(pq.read_table(report["outputs"]["items"])).to_pylist()}
    assert all("colour" not in raw[f"s{i}"] for i in range(3, 40, 4))   # the additions withheld again
    assert all(raw[f"s{i}"]["colour"] for i in range(0, 40, 4))
    printed = capsys.readouterr().out
    assert f"[backend: {STAND_IN}]" in printed and "items/s" in printed and "std colour" in printed


def scripted(body: dict) -> dict:
    """The fake model: a correct answer, except for items whose name carries a fault marker."""
    prompt = last_user_content(body)
    item = prompt.split("<item>")[-1]
    if "BADJSON" in item:
        return {"content": "Sure! The colour is blue."}
    if "INVENT" in item:
        return {"json": {"colour": "Teal", "gender": None, "detail": "made up"}}
    if "FAULT500" in item:
        return {"status": 500}
    if "SLOW" in item:
        return {"delay_s": 3.0, "json": {"colour": None, "gender": None, "detail": "late"}}
    if "PARAPHRASE" in item:   # detail the item's text does not hold: dropped, the item still enriched
        return {"json": {"colour": None, "gender": None, "detail": "ribbed crew neck; hand-finished silk lining"}}
    colour = "navy-blue" if "navy-blue" in item else next((c for c in COLOURS if c in item), None)
    return {"json": {"colour": colour, "gender": "Men" if "for men" in item else None, "detail": "ribbed crew neck"}}


@pytest.fixture
def fake_server():
    server = FakeOpenAIServer().start()
    server.responder = scripted
    yield server
    server.stop()


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_openai_backend_quarantines_bad_answers_with_their_reason(ray_session, fake_server, tmp_path):
    catalog = write_catalog(tmp_path / "catalog.csv", n=16)
    text = catalog.read_text().splitlines()
    markers = {"s1": "BADJSON", "s2": "INVENT", "s4": "FAULT500", "s5": "SLOW"}
    for sku, marker in (markers | {"s6": "PARAPHRASE"}).items():   # mark five items' names
        text = [line.replace(f"Basic tee {sku[1:]},", f"Basic tee {marker},") if line.startswith(f"{sku},") else line
                for line in text]
    catalog.write_text("\n".join(text) + "\n")
    llm = LLMConfig(backend="openai", base_url=fake_server.base_url, model="fake-model", timeout_s=1.0,
                    max_retries=1, backoff_s=0.05, max_concurrency=4)
    report = run(generic_config(catalog, tmp_path / "out", llm=llm, re_fields=["detail"]))

    assert report["backend"] == f"openai-compatible (fake-model at {fake_server.base_url})"
    assert_reconciles(report)
    assert report["items"]["read"] == 16 and report["items"]["quarantined"] == 4
    quarantine = pq.read_table(report["outputs"]["quarantine"])
    assert quarantine.schema.names == QUARANTINE_SCHEMA.names
    reasons = {r["record"]: r for r in quarantine.to_pylist()}
    assert {k: reasons[k]["reason"] for k in markers} == {"s1": "invalid_json", "s2": "schema_violation",
                                                          "s4": "http_error", "s5": "timeout"}
    assert "'Teal'" in reasons["s2"]["detail"] and "HTTP 500 after 2 attempt(s)" in reasons["s4"]["detail"]
    assert report["items"]["quarantine_reasons"] == {"invalid_json": 1, "schema_violation": 1, "http_error": 1,
                                                     "timeout": 1}
    items = {r["item_id"]: r for r in pq.read_table(report["outputs"]["items"]).to_pylist()}
    assert sorted(items) == sorted(f"s{i}" for i in range(16) if f"s{i}" not in markers)
    assert attributes_to_dict(items["s11"]["std_attributes"])["colour"] == ["Navy Blue"]   # 'navy-blue' mapped
    assert "colour" in items["s11"]["enriched_fields"] and "colour" not in items["s0"]["enriched_fields"]
    assert attributes_to_dict(items["s0"]["re_attributes"])["detail"] == ["ribbed crew neck"]
    assert attributes_to_dict(items["s6"]["re_attributes"])["detail"] == ["ribbed crew neck"]   # the invention dropped
    assert report["fields"]["detail"]["phrases_dropped_ungrounded"] == 1
    assert {r["enriched_by"] for r in items.values()} == {report["backend"]}
    assert report["fields"]["colour"]["after"] > report["fields"]["colour"]["before"]
    logged = fake_server.requests
    assert all(r["body"]["response_format"]["json_schema"]["schema"]["properties"]["colour"]["enum"]
               == ["Blue", "Navy Blue", "White", None] for r in logged)
    assert not any("Apparel" in last_user_content(r["body"]) for r in logged)   # the label stays out of prompts


@pytest.mark.ray
@pytest.mark.real_data
@pytest.mark.timeout(900)
@pytest.mark.parametrize("relative", ["fashion_product_images_styles_full/styles_full.parquet",
                                      "hm_pse_subset/articles.parquet"])
def test_rules_backend_on_the_real_catalogs(ray_session, shared_data, tmp_path, relative):
    catalog = shared_data / relative
    if not catalog.is_file():
        pytest.skip(f"{catalog} does not exist")
    cfg = EnrichConfig(catalog=str(catalog), limit=300, output_root=str(tmp_path / "out"),
                       re_fields=["detail", "fabric", "fit", "neck", "sleeve_length", "pattern"])
    report = run(cfg)
    assert report["backend"] == STAND_IN and report["items"]["read"] == 300
    assert_reconciles(report)
    assert report["catalog"]["reconciles"]
    for name, info in report["fields"].items():
        assert info["after"] >= info["before"], name
        assert info.get("phrases_dropped_ungrounded", 0) == 0, name   # the stand-in quotes the item's text
    assert report["fields"]["detail"]["after"] > 0.9
    assert_std_within_vocabulary(report, std_vocabulary(load_item_catalog(catalog).table))
    assert set(pq.read_table(report["outputs"]["items"]).column("enriched_by").to_pylist()) == {STAND_IN}
