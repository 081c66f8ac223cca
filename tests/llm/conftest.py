"""Fixtures of the LLM tests: the fault-injecting OpenAI-compatible server on a free loopback port."""
from __future__ import annotations

import pytest

from tests.llm.fake_openai_server import FakeOpenAIServer


@pytest.fixture
def fake_server():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()
