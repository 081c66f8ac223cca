import pytest

from recsys.crm.messages import (TEMPLATE_STAND_IN, CrmConfig, Segment, TemplateWriter, make_writer,
                                 write_messages)
from recsys.llm.config import LLMConfig

CANARY = "CANARY-7731"
SEGMENT = Segment("미니멀 20대", {"age_band": "20s", "preferred_style": "페미닌"})


class Recording:
    """Wraps a client and keeps every prompt it was sent."""
    def __init__(self, inner):
        self.inner, self.prompts = inner, []
        self.backend_label = inner.backend_label

    def complete(self, messages, json_schema=None):
        self.prompts.append("\n".join(m["content"] for m in messages))
        return self.inner.complete(messages, json_schema)


class Scripted:
    backend_label = "scripted"

    def __init__(self, *answers):
        self.answers = list(answers)

    def complete(self, messages, json_schema=None):
        return self.answers.pop(0)


def test_three_tones_grounded_with_the_offline_writer(facts):
    result = write_messages(SEGMENT, ["P1", "P2"], facts, make_writer(LLMConfig(backend="rules")), CrmConfig(),
                            "kakao", goal="가을 신상")
    assert [m.tone for m in result.messages] == ["friendly", "professional", "trendy"]
    assert result.rejected == [] and result.dropped_tones == []
    assert result.backend == TEMPLATE_STAND_IN and "stand-in" in result.backend
    given = {s.snippet_id: s for v in result.facts.values() for s in v}
    for m in result.messages:
        assert m.product_ids == ["P1", "P2"] and m.source_ids and set(m.source_ids) <= set(given)
        assert "블랙 플리츠 스커트" in m.text and "화이트 레이스 블라우스" in m.text
        assert all(given[s].text in m.text for s in m.source_ids)      # every cited fact is in the text
    assert len({m.text for m in result.messages}) == 3


def test_prompts_hold_only_the_segment_and_the_chosen_products(facts):
    customers = {"A": {"age_band": "20s", "preferred_style": "페미닌"}, "B": {"age_band": "40s", "memo": CANARY}}
    client = Recording(TemplateWriter())
    write_messages(Segment("미니멀 20대", customers["A"]), ["P1"], facts, client, CrmConfig(), "kakao")
    assert len(client.prompts) == 3
    for prompt in client.prompts:
        assert CANARY not in prompt and "40s" not in prompt
        assert "persona: 미니멀 20대" in prompt and "preferred_style: 페미닌" in prompt
        assert "P2#" not in prompt and "Navy Denim Jacket" not in prompt


def test_length_limit_rejects_and_drops_with_a_reason(facts):
    config = CrmConfig(channel_limits={"sms": 15}, tones=["friendly"])
    result = write_messages(SEGMENT, ["P1"], facts, TemplateWriter(), config, "sms")
    assert result.messages == [] and result.dropped_tones == ["friendly"]
    assert len(result.rejected) == 2 and all(r.violations[-1].kind == "too_long" for r in result.rejected)
    assert "over the channel limit of 15" in result.rejected[0].reason
    # the template writer fits the 90-character SMS limit by leaving facts out
    sms = write_messages(SEGMENT, ["P1", "P2"], facts, TemplateWriter(), CrmConfig(), "sms")
    assert len(sms.messages) == 3 and all(len(m.text) <= 90 for m in sms.messages)


def test_regenerates_once_then_keeps_the_faithful_draft(facts):
    bad = {"tone": "friendly", "text": "블랙 플리츠 스커트, 데님 소재!", "product_ids": ["P1"], "source_ids": ["P1#0"]}
    good = {**bad, "text": "블랙 플리츠 스커트, 미디 기장!"}
    facts_cfg = CrmConfig(tones=["friendly"], snippets_per_product=8)
    result = write_messages(SEGMENT, ["P1"], facts, Scripted(bad, good), facts_cfg, "kakao")
    assert [m.text for m in result.messages] == [good["text"]] and result.messages[0].attempt == 2
    assert [(v.kind, v.value) for v in result.rejected[0].violations] == [("unsupported_value", "데님")]


def test_declared_ids_and_tone_are_checked(facts):
    answer = {"tone": "trendy", "text": "블랙 플리츠 스커트", "product_ids": ["P1", "P3"], "source_ids": ["P3#0"]}
    result = write_messages(SEGMENT, ["P1"], facts, Scripted(answer, answer), CrmConfig(tones=["friendly"]), "kakao")
    assert result.dropped_tones == ["friendly"]
    assert sorted(v.kind for v in result.rejected[0].violations) == ["foreign_product", "unknown_source",
                                                                      "wrong_tone"]


def test_config_validation():
    with pytest.raises(ValueError, match="tones"):
        CrmConfig(tones=["sarcastic"])
    with pytest.raises(ValueError, match="unknown channel"):
        CrmConfig().limit("email")


def test_end_to_end_against_the_fake_openai_server(facts, fake_server):
    hallucinated = {"tone": "friendly", "text": "블랙 플리츠 스커트는 데님 소재의 오프화이트 포인트!",
                    "product_ids": ["P1"], "source_ids": ["P1#0"]}
    faithful = {"tone": "friendly", "text": "블랙 플리츠 스커트, 미디 기장으로 가을에 딱!",
                "product_ids": ["P1"], "source_ids": ["P1#0"]}
    fake_server.script({"json": hallucinated}, {"json": faithful})
    client = make_writer(LLMConfig(backend="openai", base_url=fake_server.base_url, max_retries=0, timeout_s=10))
    config = CrmConfig(tones=["friendly"], snippets_per_product=8)
    customer_b = {"memo": CANARY}   # another customer's data exists but is never given
    result = write_messages(SEGMENT, ["P1"], facts, client, config, "kakao")
    assert [m.text for m in result.messages] == [faithful["text"]]
    assert result.backend.startswith("openai-compatible") and result.messages[0].backend == result.backend
    [rejection] = result.rejected
    assert sorted((v.kind, v.value) for v in rejection.violations) == [("unsupported_value", "데님"),
                                                                         ("unsupported_value", "오프화이트")]
    assert "데님" in rejection.reason
    bodies = [str(r["body"]) for r in fake_server.requests]
    assert len(bodies) == 2 and "rejected" in bodies[1] and "데님" in bodies[1]
    assert all(customer_b["memo"] not in b and "Navy Denim Jacket" not in b for b in bodies)
    assert fake_server.requests[0]["body"]["response_format"]["type"] == "json_schema"
