"""Fixtures of the CRM tests: a tiny K-Fashion-like catalog, its fact index (hashing embedder, no
model) and the loopback OpenAI-compatible server of the LLM tests."""
from __future__ import annotations

import pytest

from recsys.crm.facts import FactIndex, HashingEmbedder
from tests.llm.fake_openai_server import FakeOpenAIServer

CATALOG = [
    {"item_id": "P1", "title": "블랙 플리츠 스커트", "category_path": ["하의", "스커트"], "category": "스커트",
     "std_attributes": [{"field": "색상", "values": ["블랙"]}, {"field": "기장", "values": ["미디"]}],
     "re_attributes": [{"field": "소재", "values": ["울"]}], "styles": ["페미닌"],
     "description": "허리 밴딩으로 편안해요. 가을에 입기 좋아요."},
    {"item_id": "P2", "title": "화이트 레이스 블라우스", "category_path": ["상의", "블라우스"], "category": "블라우스",
     "std_attributes": [{"field": "색상", "values": ["화이트"]}], "re_attributes": [{"field": "소재", "values": ["레이스"]}],
     "styles": ["로맨틱"], "description": ""},
    {"item_id": "P3", "title": "Navy Denim Jacket", "category_path": ["아우터", "재킷"], "category": "재킷",
     "std_attributes": [{"field": "색상", "values": ["네이비", "오프화이트"]}],
     "re_attributes": [{"field": "소재", "values": ["데님"]}, {"field": "detail", "values": ["red"]}],
     "styles": ["캐주얼"], "description": "Classic fit."},
]


@pytest.fixture
def catalog():
    return [dict(row) for row in CATALOG]


@pytest.fixture
def facts(catalog):
    return FactIndex.from_rows(catalog, HashingEmbedder(dim=128))


@pytest.fixture
def fake_server():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()
