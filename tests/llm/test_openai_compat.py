"""The OpenAI-compatible client against the local fault-injecting server (real HTTP on loopback)."""
from __future__ import annotations

import threading
import time

import pytest

from recsys.llm import (LLMConfig, LLMConnectionError, LLMHTTPError, LLMInvalidJSON, LLMSchemaViolation,
                        LLMTimeout, make_client)
from recsys.llm.openai_compat import OpenAICompatClient
from recsys.llm.protocol import BACKEND_KEY, retry_delay

pytestmark = pytest.mark.timeout(60)

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["colour", "detail"],
          "properties": {"colour": {"type": ["string", "null"], "enum": ["Blue", "Navy Blue", None]},
                         "detail": {"type": "string"}}}
MESSAGES = [{"role": "user", "content": "<item>Navy Blue shirt</item>"}]
GOOD = {"colour": "Navy Blue", "detail": "spread collar"}


def client(server, sleeps=None, **overrides) -> OpenAICompatClient:
    settings = dict(backend="openai", base_url=server.base_url, model="fake-model", timeout_s=5.0,
                    max_retries=2, backoff_s=0.01)
    settings.update(overrides)
    return OpenAICompatClient(LLMConfig(**settings), sleep=sleeps.append if sleeps is not None else time.sleep)


def test_make_client_picks_the_configured_backend(fake_server):
    assert isinstance(make_client(LLMConfig(backend="openai", base_url=fake_server.base_url)), OpenAICompatClient)
    assert make_client().backend_label == "rules (stand-in, no LLM)"


def test_text_answer_and_request_shape(fake_server):
    fake_server.script({"content": "hello"})
    assert client(fake_server).complete([{"role": "user", "content": "hi"}]) == "hello"
    request = fake_server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["body"]["model"] == "fake-model"
    assert request["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert "response_format" not in request["body"]   # no schema asked, none sent


@pytest.mark.parametrize("mode, expected", [
    ("json_schema", {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}),
    ("json_object", {"type": "json_object"}),
    ("none", None)])
def test_response_format_sent_as_configured(fake_server, mode, expected):
    fake_server.script({"json": GOOD})
    answer = client(fake_server, structured_output=mode).complete(MESSAGES, SCHEMA)
    assert answer == {**GOOD, BACKEND_KEY: f"openai-compatible (fake-model at {fake_server.base_url})"}
    assert fake_server.requests[0]["body"].get("response_format") == expected


def test_api_key_header_read_from_named_env_var(fake_server, monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", "sk-test-123")
    fake_server.script({"content": "ok"})
    client(fake_server, api_key_env="FAKE_LLM_KEY").complete(MESSAGES)
    assert fake_server.requests[0]["headers"]["Authorization"] == "Bearer sk-test-123"


def test_missing_api_key_env_var_is_named(fake_server, monkeypatch):
    monkeypatch.delenv("FAKE_LLM_KEY_ABSENT", raising=False)
    with pytest.raises(ValueError, match="FAKE_LLM_KEY_ABSENT"):
        client(fake_server, api_key_env="FAKE_LLM_KEY_ABSENT").complete(MESSAGES)
    assert fake_server.requests == []


def test_retries_429_then_succeeds_honouring_retry_after(fake_server):
    sleeps = []
    fake_server.script({"status": 429, "retry_after": "2"}, {"json": GOOD})
    answer = client(fake_server, sleeps=sleeps).complete(MESSAGES, SCHEMA)
    assert answer["colour"] == "Navy Blue"
    assert len(fake_server.requests) == 2
    assert sleeps == [2.0]   # the server's Retry-After, longer than the 0.01 s backoff


def test_retries_500_with_exponential_backoff_then_succeeds(fake_server):
    sleeps = []
    fake_server.script({"status": 500}, {"status": 503}, {"json": GOOD})
    assert client(fake_server, sleeps=sleeps, backoff_s=0.5).complete(MESSAGES, SCHEMA)["detail"] == "spread collar"
    assert sleeps == [0.5, 1.0]


def test_gives_up_after_max_retries_with_clear_error(fake_server):
    fake_server.script(*[{"status": 500}] * 3)
    with pytest.raises(LLMHTTPError, match=r"HTTP 500 after 3 attempt\(s\)") as caught:
        client(fake_server, max_retries=2).complete(MESSAGES, SCHEMA)
    assert caught.value.status == 500 and caught.value.attempts == 3
    assert len(fake_server.requests) == 3


def test_never_retries_other_4xx(fake_server):
    fake_server.script({"status": 400, "body": {"error": {"message": "bad model"}}}, {"json": GOOD})
    with pytest.raises(LLMHTTPError, match="HTTP 400.*bad model") as caught:
        client(fake_server).complete(MESSAGES, SCHEMA)
    assert caught.value.status == 400 and len(fake_server.requests) == 1


def test_timeout_on_slow_answer(fake_server):
    fake_server.script({"delay_s": 2.0, "json": GOOD}, {"delay_s": 2.0, "json": GOOD})
    with pytest.raises(LLMTimeout, match=r"timeout_s=0.3 after 2 attempt\(s\)"):
        client(fake_server, timeout_s=0.3, max_retries=1).complete(MESSAGES, SCHEMA)


def test_connection_refused_is_retried_then_named():
    sleeps = []
    cfg = LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(LLMConnectionError, match=r"connection failed after 2 attempt\(s\)"):
        OpenAICompatClient(cfg, sleep=sleeps.append).complete(MESSAGES)
    assert sleeps == [0.01]


@pytest.mark.parametrize("action, expected", [
    ({"content": "Sure! The colour is navy."}, "expected a JSON object, got unparseable text"),
    ({"content": "[1, 2]"}, "expected a JSON object, got JSON list"),
    ({"raw": "<html>gateway</html>"}, "expected a chat-completions response with choices"),
])
def test_invalid_json_answer(fake_server, action, expected):
    fake_server.script(action)
    with pytest.raises(LLMInvalidJSON, match=expected):
        client(fake_server).complete(MESSAGES, SCHEMA)
    assert len(fake_server.requests) == 1   # a bad answer is not retried


def test_fenced_json_is_accepted(fake_server):
    fake_server.script({"content": '```json\n{"colour": "Blue", "detail": "x"}\n```'})
    assert client(fake_server).complete(MESSAGES, SCHEMA)["colour"] == "Blue"


@pytest.mark.parametrize("answer, field, rule", [
    ({"colour": "Teal", "detail": "x"}, "colour", "is not one of"),        # invented STD value
    ({"colour": "Blue"}, "<root>", "'detail' is a required property"),
    ({"colour": "Blue", "detail": 3}, "detail", "is not of type 'string'"),
    ({"colour": "Blue", "detail": "x", "fabric": "silk"}, "<root>", "Additional properties"),
])
def test_schema_violation_names_the_field(fake_server, answer, field, rule):
    fake_server.script({"json": answer})
    with pytest.raises(LLMSchemaViolation, match=rule) as caught:
        client(fake_server).complete(MESSAGES, SCHEMA)
    assert f"field {field!r}" in str(caught.value)


def test_model_cannot_claim_another_backend(fake_server):
    fake_server.script({"json": {**GOOD, BACKEND_KEY: "rules (stand-in, no LLM)"}})
    assert client(fake_server).complete(MESSAGES, SCHEMA)[BACKEND_KEY].startswith("openai-compatible")


def test_concurrency_limit_shared_by_threads(fake_server):
    fake_server.responder = lambda body: {"delay_s": 0.2, "json": GOOD}
    shared = client(fake_server, max_concurrency=2)
    results, errors = [], []

    def call():
        try:
            results.append(shared.complete(MESSAGES, SCHEMA))
        except Exception as exc:   # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 8
    assert fake_server.max_in_flight == 2   # never more than the limit, and the limit was reached


def test_retry_delay_is_capped():
    cfg = LLMConfig(backoff_s=1.0, max_backoff_s=5.0)
    assert [retry_delay(cfg, a) for a in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert retry_delay(cfg, 0, "120") == 5.0
    assert retry_delay(cfg, 0, "not-a-date") == 1.0


@pytest.mark.parametrize("bad, match", [({"backend": "gpt"}, "backend"), ({"structured_output": "xml"}, "structured"),
                                        ({"max_concurrency": 0}, "max_concurrency"), ({"max_retries": -1}, "max_retries")])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        LLMConfig(**bad)
