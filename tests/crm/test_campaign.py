"""The campaign's pieces by hand: canaries, persona segments from aggregates, the prompt log, and a
segment written on a Ray Data actor's callable (called directly here)."""
import json

import pyarrow as pa
import pytest

from recsys.crm.campaign import (CrmEvalConfig, CrmRunConfig, SegmentWriter, canary_leaks, facts_of, persona_segment,
                                 plant_canaries, recording, segment_of_persona)
from recsys.crm.claims import Vocabulary
from recsys.crm.messages import TemplateWriter
from recsys.config import ConfigError
from recsys.data.interactions import users_table
from tests.crm.conftest import CATALOG


def _customers(n: int) -> pa.Table:
    import pandas as pd
    return users_table([f"c{i}" for i in range(n)], {"age": pd.Series([20.0 + i for i in range(n)])},
                       {"club": pd.Series(["ACTIVE"] * n), "postal_code": pd.Series([f"pc{i}" for i in range(n)])})


def test_canaries_replace_every_categorical_value_of_a_seeded_share_never_an_excluded_customer():
    table, canaries = plant_canaries(_customers(20), 0.5, seed=3, exclude=["c0", "c1"])
    rows = {r["user_id"]: r for r in table.to_pylist()}
    planted = [u for u, r in rows.items() if any(v["value"].startswith("CANARY-") for v in r["categorical"])]
    assert len(planted) == 9 and not {"c0", "c1"} & set(planted)    # round(0.5 * 18 eligible)
    assert len(canaries) == 18                                        # two categorical fields each
    for user in planted:   # numeric fields are kept; each categorical value is its own canary
        assert all(v["value"] in canaries for v in rows[user]["categorical"]) and rows[user]["numeric"]
    assert plant_canaries(_customers(20), 0.5, seed=3, exclude=["c0", "c1"])[1] == canaries   # seeded
    assert canary_leaks([[{"role": "user", "content": "hi " + sorted(canaries)[0]}]], canaries) == [sorted(canaries)[0]]
    assert canary_leaks([[{"role": "user", "content": "hi"}]], canaries) == []


def test_a_persona_segment_holds_only_aggregates_shared_by_enough_customers():
    members = [{"age": 22, "club": "ACTIVE"}] * 12 + [{"age": 51, "club": "CANARY-7-club"}] * 8
    segment = segment_of_persona("young", members, ["age", "club"], {"age": [25, 35]})
    assert segment.name == "young"
    assert segment.profile == {"customers": 20, "age": "<25 (60%)", "club": "ACTIVE (60%)"}
    assert "CANARY" not in segment.describe() and "51" not in segment.describe()
    # A small persona's "dominant" value is one person's: fewer than 10 holders read "mixed"
    # (a tie between two members would otherwise name the alphabetically first, here the canary).
    tiny = segment_of_persona("tiny", [{"club": "PRE-CREATE"}, {"club": "CANARY-3-club"}], ["club"])
    assert tiny.profile == {"customers": 2, "club": "mixed"}
    assert persona_segment({"name": "p", "size": 4, "dominant": {"club": {"value": "ACTIVE", "share": 0.5}}},
                           min_holders=2).profile == {"customers": 4, "club": "ACTIVE (50%)"}


def test_the_segment_writer_records_every_prompt_and_returns_checked_messages():
    writer = SegmentWriter(CATALOG, Vocabulary.from_rows(CATALOG), {"backend": "rules"}, {}, "kakao", "",
                           embedder="hashing")
    row = {"kind": "persona", "key": "p", "name": "미니멀 20대", "profile": json.dumps({"customers": 5}),
           "product_ids": ["P1", "P3"]}
    out = writer(row)
    result, prompts = json.loads(out["result"]), json.loads(out["prompts"])
    assert [m["tone"] for m in result["messages"]] == ["friendly", "professional", "trendy"]
    assert len(prompts) == 3 and all("미니멀 20대" in p[-1]["content"] for p in prompts)
    assert "화이트 레이스 블라우스" not in json.dumps(prompts, ensure_ascii=False)   # P2 was not picked
    assert set(facts_of(result)) == {"P1", "P3"} and facts_of(result)["P1"][0].field == "title"
    client = recording(TemplateWriter())
    client.complete([{"role": "user", "content": "tone: trendy\n<facts>\n</facts>"}])
    assert client.prompts == [[{"role": "user", "content": "tone: trendy\n<facts>\n</facts>"}]]


def test_run_config_errors_name_the_setting():
    with pytest.raises(ConfigError, match="embedder"):
        CrmRunConfig(embedder="bert")
    with pytest.raises(ConfigError, match="unknown channel 'fax'"):
        CrmRunConfig(channel="fax")
    with pytest.raises(ConfigError, match="canary_share"):
        CrmRunConfig(evaluation=CrmEvalConfig(canary_share=1.0))
