"""POST /api/crm/messages on the package's Serve application: three grounded messages for a
persona, a stored customer, a profile or given products; bad input refused; and, with the writer
pointed at the loopback OpenAI-compatible server of the LLM tests (a real HTTP server that answers
scripted drafts: here hallucinated product names), every ungrounded draft rejected end to end."""
from __future__ import annotations

from dataclasses import asdict

import pandas as pd
import pytest
import requests

from recsys.crm.messages import TONES
from recsys.llm.config import LLMConfig
from recsys.models.persona import PersonaRecommender
from serve_app.config import CrmSettings
from tests.llm.fake_openai_server import FakeOpenAIServer, last_user_content
from bench.serve_load import replica_actor_names, wait_replicas
from tests.serve_app.running import APP, deploy, serve_config

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
STAND_IN = "crm templates (stand-in, no LLM)"


def _post(url, body, status=200):
    response = requests.post(f"{url}/api/crm/messages", json=body, timeout=60)
    assert response.status_code == status, response.text
    return response.json()


def _grounded(body: dict) -> None:
    assert [m["tone"] for m in body["messages"]] == list(TONES) and not body["dropped_tones"]
    chosen = set(body["product_ids"])
    assert [p["item_id"] for p in body["products"]] == body["product_ids"]
    for message in body["messages"]:
        assert message["product_ids"] and set(message["product_ids"]) <= chosen
        cited = {s["snippet_id"]: s for item in message["product_ids"] for s in body["sources"][item]}
        assert set(message["source_ids"]) <= set(cited)
        for source in message["source_ids"]:   # the template writer states its sources verbatim
            assert cited[source]["text"] in message["text"] or message["backend"] != STAND_IN


def test_a_persona_gets_three_grounded_messages_about_its_products(url, built):
    body = _post(url, {"persona": "persona A", "goal": "봄 신상"})
    _grounded(body)
    offline = [a for a, _ in PersonaRecommender.load(built["persona"]).recommend_persona("persona A", 200)]
    live = [i for i in offline if requests.get(f"{url}/api/items/{i}", timeout=10).ok]
    assert body["product_ids"] == live[:3]
    assert body["segment"] == {"name": "persona A", "profile": {"customers": 20, "style": "로맨틱 (60%)"}}
    assert body["backend"] == STAND_IN and all(m["backend"] == STAND_IN for m in body["messages"])
    assert body["retrieval"].startswith("MiniLM") and body["model"]["persona_run"] == built["persona"].name
    sms = _post(url, {"persona": "persona B", "channel": "sms"})
    assert sms["messages"] and all(len(m["text"]) <= 90 for m in sms["messages"])


def test_a_customer_a_profile_or_given_products(url, built):
    user = pd.read_parquet(built["users"] / "users.parquet").iloc[0].user_id
    recommended = requests.get(f"{url}/api/recommend/user/{user}?k=3", timeout=30).json()
    body = _post(url, {"user_id": user})
    _grounded(body)
    assert body["product_ids"] == [h["item"]["item_id"] for h in recommended["results"]]
    assert body["segment"] == {"name": "one customer", "profile": recommended["user"]["profile"]}   # no id
    profiled = _post(url, {"profile": {"age": 31}})
    _grounded(profiled)
    assert profiled["segment"]["name"].startswith("profile (persona persona ")
    given = built["item_ids"][:2]
    chosen = _post(url, {"persona": "persona B", "product_ids": given})
    assert chosen["product_ids"] == given and chosen["segment"]["name"] == "persona B"


@pytest.mark.parametrize("body, status, names", [
    ({}, 422, ["persona", "user_id", "profile"]),
    ({"persona": "persona A", "user_id": "x"}, 422, ["exactly one segment"]),
    ({"persona": "nobody"}, 404, ["unknown persona 'nobody'", "persona A"]),
    ({"user_id": "no-such-user"}, 404, ["no-such-user"]),
    ({"persona": "persona A", "product_ids": ["no-such-item"]}, 404, ["no-such-item", "product_ids"]),
    ({"persona": "persona A", "product_ids": ["a", "b", "c", "d"]}, 422, ["product_ids", "at most 3"]),
    ({"profile": {}}, 422, ["profile", "at least one profile field"]),
    ({"persona": "persona A", "channel": "fax"}, 422, ["channel", "kakao", "sms"]),
    ({"persona": "persona A", "tone": "angry"}, 422, ["tone"]),
])
def test_bad_crm_requests_are_4xx_naming_the_problem(url, body, status, names):
    error = _post(url, body, status)
    assert all(name in str(error) for name in names), error


@pytest.fixture
def fake_llm():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


def test_scripted_hallucinations_are_rejected_end_to_end(url, config, built, fake_llm):
    grounded = _post(url, {"persona": "persona A"})
    chosen = grounded["product_ids"]
    foreign = next(i for i in built["item_ids"] if i not in chosen
                   and requests.get(f"{url}/api/items/{i}", timeout=10).ok)
    foreign_title = requests.get(f"{url}/api/items/{foreign}", timeout=10).json()["title"] or foreign

    def tone_of(body: dict) -> str:
        return next(line.split(":", 1)[1].strip() for line in last_user_content(body).splitlines()
                    if line.startswith("tone:"))

    def hallucinating(body: dict) -> dict:   # names a product that was not retrieved
        return {"json": {"tone": tone_of(body), "text": f"{foreign_title} 강력 추천!", "product_ids": [chosen[0]],
                         "source_ids": []}}

    # The writer moves to the scripted server through the Recommender's user_config: in place, no restart.
    llm = LLMConfig(backend="openai", base_url=fake_llm.base_url, model="scripted", max_retries=0, timeout_s=10)
    replicas = replica_actor_names(APP, "Recommender")
    deploy(_with_crm(config, CrmSettings(llm=llm)))
    try:
        fake_llm.responder = hallucinating
        error = _post(url, {"persona": "persona A"}, 502)
        assert error["error"] == "ungrounded_messages" and foreign in str(error), error
        assert len(fake_llm.requests) == 2 * len(TONES)   # each tone: a draft and one regeneration, both rejected
        # A draft rejected once, then a grounded one: the message is sent, the rejection is reported.
        first = {"tone": "friendly", "text": f"{foreign_title}도 있어요", "product_ids": [chosen[0]], "source_ids": []}
        fake_llm.script({"json": first})
        fake_llm.responder = lambda body: {"json": {"tone": tone_of(body), "text": "새로 나온 상품을 만나보세요!",
                                                    "product_ids": [chosen[0]], "source_ids": [f"{chosen[0]}#0"]}}
        body = _post(url, {"persona": "persona A"})
        assert [m["tone"] for m in body["messages"]] == list(TONES)
        assert all(m["backend"].startswith("openai-compatible (scripted at ") for m in body["messages"])
        assert [(r["tone"], r["attempt"]) for r in body["rejected"]] == [("friendly", 1)]
        assert foreign in " ".join(body["rejected"][0]["reasons"])
        # The prompts held the segment's aggregates and the chosen products' facts only.
        prompts = [last_user_content(r["body"]) for r in fake_llm.requests]
        assert all("persona A" in p and f"[{foreign}#" not in p for p in prompts)
        assert replica_actor_names(APP, "Recommender") == replicas   # the same replica: no restart
    finally:
        deploy(_with_crm(config, config.crm))
        wait_replicas(APP, "Recommender", 1, 120)
    assert _post(url, {"persona": "persona A"})["backend"] == STAND_IN


def _with_crm(config, crm: CrmSettings) -> dict:
    """The test app's Serve config with ``user_config.crm`` on the Recommender (Serve's in-place update)."""
    out = serve_config(config)
    recommender = next(d for d in out["applications"][0]["deployments"] if d["name"] == "Recommender")
    recommender["user_config"] = {"crm": asdict(crm)}
    return out
