"""Ray Data's HTTP request processor (ray.data.llm, Ray 2.60) against the fault-injecting server.

One bad row must not kill the job: every row comes back, either with a validated answer or with a
quarantine reason naming what went wrong.
"""
from __future__ import annotations

import json
import threading

import pytest

from recsys.llm import LLMConfig
from recsys.llm.protocol import BACKEND_KEY
from recsys.llm.ray_batch import build_http_processor, vllm_engine_config
from tests.llm.fake_openai_server import last_user_content

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["colour", "detail"],
          "properties": {"colour": {"type": ["string", "null"], "enum": ["Blue", "Navy Blue", None]},
                         "detail": {"type": "string"}}}
ROWS = [{"item_id": 1, "text": "Navy Blue shirt"}, {"item_id": 2, "text": "Blue jeans"},
        {"item_id": 3, "text": "FAULT500 scarf"}, {"item_id": 4, "text": "BADJSON belt"},
        {"item_id": 5, "text": "TEAL socks"}, {"item_id": 6, "text": "SLOW cap"},
        {"item_id": 7, "text": "FLAKY Blue tee"}]


def scripted_responder():
    """The server's answer as a function of the prompt (rows reach it in any order)."""
    flaky_seen, lock = set(), threading.Lock()

    def respond(body: dict) -> dict:
        prompt = last_user_content(body)
        if "FAULT500" in prompt:
            return {"status": 500}
        if "BADJSON" in prompt:
            return {"content": "The colour is blue, I think."}
        if "TEAL" in prompt:
            return {"json": {"colour": "Teal", "detail": "ribbed"}}
        if "SLOW" in prompt:
            return {"delay_s": 3.0, "json": {"colour": None, "detail": "late"}}
        if "FLAKY" in prompt:
            with lock:
                first = not flaky_seen
                flaky_seen.add(prompt)
            if first:
                return {"status": 429, "retry_after": "0"}
        colour = "Navy Blue" if "Navy Blue" in prompt else "Blue"
        return {"json": {"colour": colour, "detail": prompt.split(">")[-1][:20]}}

    return respond


def to_messages(row: dict) -> list[dict]:
    return [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": f"item: {row['text']}"}]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_http_processor_quarantines_faulty_rows_and_keeps_the_rest(ray_session, fake_server, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-ray-test")
    fake_server.responder = scripted_responder()
    config = LLMConfig(backend="openai", base_url=fake_server.base_url, model="fake-model", api_key_env="FAKE_LLM_KEY",
                       timeout_s=1.0, max_retries=1, backoff_s=0.05, max_concurrency=2)
    processor = build_http_processor(config, to_messages, json_schema=SCHEMA, keep_columns=("item_id",),
                                     batch_size=8, concurrency=1)
    rows = {r["item_id"]: r for r in processor(ray_session.data.from_items(ROWS)).take_all()}

    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7]   # nothing lost, the job finished
    ok = {i: json.loads(r["answer"]) for i, r in rows.items() if r["error"] is None}
    assert sorted(ok) == [1, 2, 7]
    assert ok[1]["colour"] == "Navy Blue" and ok[2]["colour"] == "Blue" and ok[7]["colour"] == "Blue"
    assert ok[1][BACKEND_KEY] == f"openai-compatible (fake-model at {fake_server.base_url})"
    assert rows[7]["attempts"] == 2   # 429, then success
    reasons = {i: r["error"] for i, r in rows.items() if r["error"] is not None}
    assert reasons[3].startswith("http_error:") and "HTTP 500 after 2 attempt(s)" in reasons[3]
    assert reasons[4].startswith("invalid_json: expected a JSON object")
    assert reasons[5].startswith("schema_violation: field 'colour'") and "'Teal' is not one of" in reasons[5]
    assert reasons[6].startswith("timeout:") and "timeout_s=1.0" in reasons[6]
    assert all(r["answer"] is None for i, r in rows.items() if i in reasons)

    logged = fake_server.requests
    assert all(r["headers"]["Authorization"] == "Bearer sk-ray-test" for r in logged)
    assert all(r["body"]["response_format"]["json_schema"]["schema"] == SCHEMA for r in logged)
    assert all(r["body"]["model"] == "fake-model" for r in logged)
    assert fake_server.max_in_flight <= 2   # the per-actor concurrency limit


@pytest.mark.timeout(60)
def test_vllm_engine_config_is_validated_without_vllm():
    """Only the config object: running it needs vLLM and a GPU, which this machine lacks."""
    pydantic = pytest.importorskip("pydantic")
    config, params = vllm_engine_config("Qwen/Qwen2.5-7B-Instruct", json_schema=SCHEMA, accelerator_type="A100")
    assert config.model_source == "Qwen/Qwen2.5-7B-Instruct" and config.should_continue_on_error
    assert params["structured_outputs"] == {"json": SCHEMA} and params["temperature"] == 0.0
    with pytest.raises(pydantic.ValidationError, match="concurrency"):
        vllm_engine_config("m", concurrency=0)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        from ray.data.llm import vLLMEngineProcessorConfig
        vLLMEngineProcessorConfig(model_source="m", not_a_field=1)


@pytest.mark.timeout(30)
def test_http_processor_refuses_the_rules_backend():
    with pytest.raises(ValueError, match="needs llm.backend 'openai'"):
        build_http_processor(LLMConfig(), to_messages)
